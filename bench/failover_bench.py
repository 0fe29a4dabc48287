"""Bench: failover gap when the node holding the devices is killed (kill -9, tocsin + nats).

    python bench/failover_bench.py [--devices 10000] [--scenarios follower,leader]

Per scenario, a fresh 3-node LocalCluster (R3, `sync_interval: always`). The devices are
registered and connected over SSE to one node, with `bench/fleet.py --reconnect` pointing
at the two others (full-jitter reconnect, base 0.5 s, resuming by Last-Event-ID, as tocsin's
client does). An issuer sends one alert over the devices' area every `--interval` seconds to
the surviving nodes (one request per alert, each on its own, so a slow answer never holds up
the next). Two seconds in, that node's tocsin and nats-server get SIGKILL by pid.

- `follower`: the devices' node does not lead the alerts stream;
- `leader`: it does, so new alerts also wait for the stream's leader election.

Reported: per device, the time from the kill until it is synced on another node and holds
every alert issued up to then (the gap: max and p50 over the devices), reconnect times, and
for the issuer every answer to an alert sent after the kill (status, latency, and when the
first acknowledged write came). Every process is stopped by pid at the end and on error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import nats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fleet import percentile, raise_nofile, register  # noqa: E402
from bench.serve_bench import DISPLAY_POLYGON, FLEET_ENV, XML, Fleet, machine, proc_cpu_s, profiled, run_in_workdir  # noqa: E402
from tests.samples import alert_xml  # noqa: E402

BEFORE_KILL_S = 2.0
AFTER_KILL_S = 12.0
MAX_IN_FLIGHT = 200


async def stream_leader(nats_url: str, stream: str = "TOCSIN_ALERTS") -> str | None:
    nc = await nats.connect(nats_url, connect_timeout=5)
    try:
        info = await nc.jetstream(timeout=5).stream_info(stream)
        return info.cluster.leader if info.cluster else None
    finally:
        await nc.close()


class Issuer:
    """One alert every `interval_s` to the surviving nodes; records every answer."""

    def __init__(self, urls: list[str], token: str, interval_s: float) -> None:
        self.urls, self.interval_s = urls, interval_s
        headers = {"Authorization": f"Bearer {token}", "Content-Type": XML}
        limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=MAX_IN_FLIGHT)
        self.http = httpx.AsyncClient(headers=headers, timeout=60, limits=limits)
        self.sent: list[dict[str, Any]] = []

    async def _one(self, n: int) -> None:
        record: dict[str, Any] = {"n": n, "url": self.urls[n % len(self.urls)]}
        self.sent.append(record)
        document = alert_xml(polygon=DISPLAY_POLYGON, headline=f"bench failover {n}", expires_in_s=600)
        record["sent_at"] = time.time()
        try:
            response = await self.http.post(f"{record['url']}/api/v1/alerts", content=document)
            record["status"] = response.status_code
            if response.status_code == 201:
                record["seq"] = int(response.json()["seq"])
                record["id"] = str(response.json()["id"])
            else:
                record["problem"] = response.text[:200]
        except httpx.HTTPError as exc:
            record["status"] = 0
            record["problem"] = repr(exc)[:200]
        record["answered_at"] = time.time()

    async def run(self, duration_s: float) -> None:
        async with asyncio.TaskGroup() as tasks:
            started = time.monotonic()
            n = 0
            while time.monotonic() - started < duration_s:
                tasks.create_task(self._one(n))
                n += 1
                await asyncio.sleep(self.interval_s)

    async def close(self) -> None:
        await self.http.aclose()


def issuer_view(sent: list[dict[str, Any]], killed_at: float) -> dict[str, Any]:
    after = [r for r in sent if r["sent_at"] >= killed_at]
    ok = [r for r in after if r.get("status") == 201]
    waits = sorted(r["answered_at"] - r["sent_at"] for r in after)
    statuses: dict[str, int] = {}
    for r in after:
        statuses[str(r.get("status"))] = statuses.get(str(r.get("status")), 0) + 1
    first_ack = min((r["answered_at"] for r in ok), default=float("nan"))
    return {
        "sent_after_kill": len(after), "statuses": statuses,
        "answer_p50_s": percentile(waits, 50), "answer_max_s": waits[-1] if waits else float("nan"),
        "first_ack_after_kill_s": first_ack - killed_at,
        "problems": sorted({r.get("problem", "")[:120] for r in after if r.get("status") != 201})[:3],
        "unanswered": sum(1 for r in after if "answered_at" not in r),
    }


async def scenario(name: str, workdir: Path, devices: int, interval_s: float, profile: Path | None) -> dict[str, Any]:
    from tocsin.cluster.local import LocalCluster

    # Each surviving node takes about half the fleet, but the first may take more: room for all.
    local = LocalCluster(workdir / name, nodes=3,
                         extra_env={**FLEET_ENV, "TOCSIN_MAX_CONNECTIONS": str(devices + 2000)})
    fleet: Fleet | None = None
    try:
        await local.start()
        leader = None
        for _ in range(30):
            leader = await stream_leader(local.specs[0].nats_url)
            if leader:
                break
            await asyncio.sleep(1)
        names = [s.name for s in local.specs]
        target = leader if name == "leader" else next(n for n in names if n != leader)
        spec = local.spec(target)
        others = [s for s in local.specs if s.name != target]
        tokens = workdir / f"{name}-devices.json"
        started = time.monotonic()
        registered = await register(spec.url, devices, 0.0, 1)
        tokens.write_text(json.dumps([{"id": d.device_id, "token": d.token, "inside": True} for d in registered]))
        print(f"{name}: {devices} devices registered in {time.monotonic() - started:.1f} s on {target} "
              f"(stream leader {leader})", file=sys.stderr, flush=True)
        fleet = Fleet(url=spec.url, devices=devices, outside=0.0, log_path=workdir / f"fleet-{name}.log",
                      extra=("--tokens", str(tokens), "--reconnect", ",".join(s.url for s in others),
                             "--round-timeout", "60"))
        fleet.start()
        ready = await asyncio.to_thread(fleet.expect, "ready", 600)
        issuer = Issuer([s.url for s in others], local.issuer_token, interval_s)
        issuing = asyncio.create_task(issuer.run(BEFORE_KILL_S + AFTER_KILL_S))
        await asyncio.sleep(BEFORE_KILL_S)
        # CPU of each survivor's processes and of the fleet, from the kill to the end of issuing.
        watched: dict[str, int | None] = {f"{s.name} {kind}": pid for s in others for kind, pid in local.pids(s.name).items()}
        watched["fleet"] = fleet.process.pid if fleet.process else None
        before = {key: proc_cpu_s(pid) for key, pid in watched.items()}
        killed_at = time.time()
        local.signal(target, signal.SIGKILL)
        with profiled(local.pids(others[0].name)["tocsin"], profile and profile / f"{name}-{others[0].name}.txt"):
            await local.kill(target)  # reap
            await issuing
        cpu = {key: round(proc_cpu_s(pid) - before[key], 2) for key, pid in watched.items()}
        await issuer.close()
        issued = {str(r["seq"]): r["sent_at"] for r in issuer.sent if r.get("status") == 201}
        ids = {str(r["seq"]): r["id"] for r in issuer.sent if r.get("status") == 201}
        fleet.send(cmd="failover", killed_at=killed_at, issued=issued, ids=ids, timeout_s=60)
        result = await asyncio.to_thread(fleet.expect, "failover", 120)
        fleet.send(cmd="stop")
        summary = await asyncio.to_thread(fleet.expect, "summary", 120)
        new_leader = await stream_leader(others[0].nats_url)
        return {"scenario": name, "killed": target, "stream_leader_before": leader, "stream_leader_after": new_leader,
                "connect_s": ready["connect_s"], "fleet": result, "issuer": issuer_view(issuer.sent, killed_at),
                "reconnect_failures": summary.get("reconnect_failures", [])[:3], "fleet_cpu_s": summary["cpu_s"],
                "cpu_after_kill_s": cpu, "cpu_window_s": AFTER_KILL_S}
    finally:
        if fleet is not None:
            await asyncio.to_thread(fleet.stop)
        await local.stop()


def table(report: dict[str, Any]) -> str:
    lines = [f"failover: {report['devices']} SSE devices on one node of 3; kill -9 of its tocsin and nats-server;"
             f" an alert every {report['interval_s']} s to the other nodes", ""]
    for r in report["results"]:
        f, i = r["fleet"], r["issuer"]
        lines += [
            f"{r['scenario']}: killed {r['killed']} (stream leader before {r['stream_leader_before']}, after "
            f"{r['stream_leader_after']})",
            f"  devices cut off {f['cut_off']}, reconnected {f['reconnected']}, caught up {f['caught_up']}, "
            f"not caught up {f['not_caught_up']}; alerts issued {f['alerts_issued']}, deliveries missing "
            f"{f['deliveries_missing']}, duplicates {f['duplicates']}",
            f"  reconnected elsewhere: p50 {f['reconnect_p50_s']:.2f} s, max {f['reconnect_max_s']:.2f} s after the kill",
            f"  GAP (kill -> every device back and caught up): p50 {f['gap_p50_s']:.2f} s, max {f['gap_max_s']:.2f} s"
            f"  target < 2 s: {'met' if f['gap_max_s'] < 2 and not f['not_caught_up'] else 'NOT met'}",
            f"  NEW ALERTS ({f['alerts_after_kill']} issued after the kill; from the issue, or the device's return"
            f" if later, until the device has it): p50 {f['new_alert_p50_s']:.2f} s, max {f['new_alert_max_s']:.2f} s"
            f"  target < 2 s: {'met' if f['new_alert_max_s'] < 2 else 'NOT met'}; early copies received"
            f" {f['early_copies']}",
            f"  issuer, alerts sent after the kill: {i['sent_after_kill']}, answers {i['statuses']}, answer p50 "
            f"{i['answer_p50_s']:.2f} s max {i['answer_max_s']:.2f} s; first acknowledged write "
            f"{i['first_ack_after_kill_s']:.2f} s after the kill; unanswered {i['unanswered']}",
        ]
        if i["problems"]:
            lines.append(f"  refusals: {i['problems']}")
        lines.append(f"  CPU s in the {r['cpu_window_s']:.0f} s after the kill: "
                     + ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_after_kill_s"].items()))
        lines.append("")
    return "\n".join(lines)


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    results = []
    for name in args.scenarios:
        results.append(await scenario(name, workdir, args.devices, args.interval,
                                      Path(args.profile) if args.profile else None))
        print(table({"devices": args.devices, "interval_s": args.interval, "results": results[-1:]}),
              file=sys.stderr, flush=True)
    return {"machine": machine(), "devices": args.devices, "interval_s": args.interval, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10000)
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between alerts")
    parser.add_argument("--scenarios", default="follower,leader")
    parser.add_argument("--tmp", default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--save", default="")
    parser.add_argument("--profile", default="", help="py-spy the first survivor after the kill; raw stacks in this directory")
    args = parser.parse_args()
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    raise_nofile(2 * args.devices + 4096)
    run_in_workdir("tocsin-failover-", args, lambda workdir: run(args, workdir), table)

if __name__ == "__main__":
    main()

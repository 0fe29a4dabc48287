"""Bench: Web Push deliveries from one node to the fake push service in its own process.

    python bench/push_bench.py throughput [--devices 5000] [--concurrency 64,256]
    python bench/push_bench.py reach [--devices 100000] [--concurrency 64]
    python bench/push_bench.py cluster [--devices 5000] [--concurrency 64]

Both start a nats-server (file store, `sync_interval: always`), the tests' Web Push fake as
a separate process (`python -m tests.fakes.webpush`: HTTP/2 over TLS on loopback; it checks
each VAPID JWT and decrypts each payload with the subscription's keys, as a browser would),
and one tocsin node in this process with its real Web Push sender (VAPID ES256, RFC 8291
aes128gcm). N subscriptions are made through the fake's control API; N device records,
channel webpush, are written straight into the device bucket (concurrent puts of 500).
Then one alert over them per run:

- `throughput`: one run per dispatch_concurrency (a node started afresh for each, same
  devices): the time from the issue's 201 until the planner has enqueued all N (the plan)
  and until the fake has accepted all N (the sends), and the deliveries/s;
- `reach`: the time from the 201 until the last device's message is accepted, and the
  per-device latency (201 -> the fake's "message" event time) at p50, p99 and max;
- `cluster`: the same over a LocalCluster of three tocsin processes, each beside its
  nats-server (R3), with each node's share of the sends (its /metrics).

On this machine the fake and the node share the cores: the fake's CPU (ES256 verify, ECDH
and AES-GCM decrypt, hypercorn's HTTP/2) is taken from the node. The load average is
printed before and after each run. Every process is stopped by pid, at the end, on error
and on Ctrl-C; each run is bounded in time (`--timeout`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.serve_bench import rss_bytes  # noqa: E402
from tocsin.api.device_records import record_json  # noqa: E402
from tocsin.app import Node, open_node, run_node  # noqa: E402
from tocsin.approval.automated import write_automated_source  # noqa: E402
from tocsin.channels.webpush import load_or_create_vapid_key  # noqa: E402
from tocsin.cli.main import run_loop  # noqa: E402
from tocsin.cluster.nats_server import NatsServer  # noqa: E402
from tocsin.delivery.model import WEBPUSH  # noqa: E402
from tocsin.geo.cells import cell_for_point  # noqa: E402
from tocsin.settings import Settings  # noqa: E402
from tocsin.errors import StoreUnavailable  # noqa: E402
from tocsin.store.base import Records  # noqa: E402
from tocsin.store.jetstream import KvRecords  # noqa: E402
from tocsin.cluster.local import LocalCluster  # noqa: E402

from tests.samples import IN_PARIS, alert_xml  # noqa: E402

ISSUER = "tci_bench-automated-source"
SUBSCRIBE_CONCURRENCY = 32
# `python -m tests.fakes.webpush`, with one change: hypercorn closes an HTTP/2 connection
# after 1000 requests (its keep_alive_max_requests) and cuts the streams still in flight
# (the client sees write errors); a push service keeps a connection for far longer.
FAKE_MAIN = ("import sys; from hypercorn.config import Config; Config.keep_alive_max_requests = 10**9; "
             "from tests.fakes.webpush import main; sys.argv[0] = 'tests.fakes.webpush'; main()")
PUT_BATCH = 500


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_s(pid: int | None) -> float:
    """A process's CPU time so far (user + system), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Fake:
    """The fake push service's process, and its state file read as it grows."""

    process: subprocess.Popen[bytes]
    url: str
    ca_file: str
    state: Path
    _offset: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(cls, folder: Path) -> Fake:
        state = folder / "webpush-state.jsonl"
        process = subprocess.Popen(
            [sys.executable, "-c", FAKE_MAIN, "--port", "0", "--state", str(state), "--ca-dir", str(folder / "ca")],
            cwd=ROOT, stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'src'}"})
        try:
            assert process.stdout is not None
            line = process.stdout.readline()  # the fake prints one line once it listens
            ready = json.loads(line)
        except Exception:
            process.kill()
            process.wait(10)
            raise
        return cls(process, ready["url"], ready["ca_file"], state)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def read(self) -> list[dict[str, Any]]:
        """The events written since the last read (whole lines only)."""
        with self.state.open("rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1
        self._offset += end
        fresh = [json.loads(line) for line in chunk[:end].splitlines() if line]
        self.events.extend(fresh)
        return fresh

    async def subscribe(self, n: int, server_key: str) -> list[dict[str, Any]]:
        """N subscriptions made through the control API, as a browser's pushManager would."""
        made: list[dict[str, Any]] = []
        async with httpx.AsyncClient(base_url=self.url, verify=self.ca_file, http2=True, timeout=30) as http:
            async def one() -> dict[str, Any]:
                response = await http.post("/control/subscribe", json={"server_key": server_key})
                response.raise_for_status()
                found: dict[str, Any] = response.json()
                return found

            for start in range(0, n, SUBSCRIBE_CONCURRENCY * 8):
                made += await asyncio.gather(*(one() for _ in range(start, min(n, start + SUBSCRIBE_CONCURRENCY * 8))))
        return made

    def cpu_s(self) -> float:
        return cpu_s(self.process.pid)

    def rss_mb(self) -> float:
        return rss_bytes(self.process.pid) / 2**20


@dataclass
class Run:
    devices: int
    concurrency: int
    plan_s: float
    sends_s: float
    latencies_s: list[float]
    outcomes: dict[tuple[str, ...], int]
    reasons: dict[str, int]
    node_cpu_s: float
    fake_cpu_s: float
    nats_cpu_s: float
    load_before: str
    load_after: str


def device_id(i: int) -> str:
    """A distinct id per device, its bits spread as the API's random ids are (the device
    index looks ids up by their first 64 bits: `dev_{i:024x}` would give all the same)."""
    return f"dev_{(i * 0x9E3779B97F4A7C15) % 2**96:024x}"


async def put_devices(bucket: Records, now: datetime, subscriptions: list[dict[str, Any]]) -> None:
    """One webpush device record per subscription, written straight into the bucket."""
    record = record_json(cells=[cell_for_point(*IN_PARIS)], languages=["fr"], tests=False, canary=False,
                         secret_sha256="0" * 64, created=now, renewed=now)

    async def one(i: int) -> None:
        sub = subscriptions[i]
        push = {"endpoint": sub["endpoint"], "p256dh": sub["keys"]["p256dh"], "auth": sub["keys"]["auth"]}
        for attempt in range(5):  # a put not confirmed in time on a loaded machine: again
            try:
                await bucket.put(device_id(i), {**record, "channel": WEBPUSH, "push": push})
                return
            except StoreUnavailable:
                if attempt == 4:
                    raise

    for start in range(0, len(subscriptions), PUT_BATCH):
        await asyncio.gather(*(one(i) for i in range(start, min(len(subscriptions), start + PUT_BATCH))))


async def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise SystemExit(f"bench: {what} not within {timeout_s:.0f} s") from None


async def one_alert(node: Node, fake: Fake, server: NatsServer, devices: int, timeout_s: float) -> Run:
    """Issue one alert; time its plan and its sends until the fake accepted `devices` of it."""
    assert node.planner is not None
    planned_at: list[float] = []
    plan = node.planner.plan

    async def timed_plan(*args: Any, **kwargs: Any) -> int:
        n = await plan(*args, **kwargs)
        planned_at.append(time.time())
        return n

    node.planner.plan = timed_plan  # type: ignore[method-assign]
    reasons = count_reasons(node)
    nats_pid = server.process.pid if server.process else None
    node_cpu, fake_cpu, nats_cpu = time.process_time(), fake.cpu_s(), cpu_s(nats_pid)
    fake.read()  # skip what earlier runs left
    before = load()
    async with httpx.AsyncClient(base_url=node.url, timeout=30) as http:
        response = await http.post("/api/v1/alerts", content=alert_xml(), headers={
            "Authorization": f"Bearer {ISSUER}", "Content-Type": "application/cap+xml"})
        issued = time.time()
        if response.status_code != 201:
            raise SystemExit(f"bench: the alert was refused: {response.status_code} {response.text[:300]}")
    alert_id = str(response.json()["id"])
    accepted: list[float] = []

    reached: set[str] = set()

    def done() -> bool:
        for e in fake.read():
            if e.get("event") == "message" and e.get("alert_id") == alert_id:
                accepted.append(e["at"])
                reached.add(e["subscription"])
        return len(reached) >= devices

    await wait_for(done, timeout_s, f"{devices} devices' messages accepted by the fake")
    if len(accepted) > len(reached):
        print(f"  DUPLICATES: {len(accepted) - len(reached)} messages to a device that had the alert already")
    undecryptable = sum(1 for e in fake.events if e.get("event") == "undecryptable")
    if undecryptable:
        raise SystemExit(f"bench: the fake could not decrypt {undecryptable} messages")
    outcomes = {tuple(sample.labels.values()): int(sample.value)
                for metric in node.services.metrics.push_attempts.collect() for sample in metric.samples
                if sample.name.endswith("_total")}
    latencies = sorted(at - issued for at in accepted)
    plan_s = (planned_at[0] - issued) if planned_at else float("nan")
    return Run(devices, node.services.settings.dispatch_concurrency, plan_s, latencies[-1], latencies,
               outcomes, reasons, time.process_time() - node_cpu, fake.cpu_s() - fake_cpu, cpu_s(nats_pid) - nats_cpu,
               before, load())


class FirstErrors(logging.Handler):
    """The first few errors the sender logs (why a send was retried)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        error = getattr(record, "error", None)
        if error and len(self.seen) < 3 and error not in self.seen:
            self.seen.append(str(error))


ERRORS = FirstErrors()


def count_reasons(node: Node) -> dict[str, int]:
    """The reasons of the sender's results other than sent, counted (wrapping its send)."""
    sender = node.services.senders[WEBPUSH]
    send = sender.send
    reasons: dict[str, int] = {}

    async def counted(push: Any) -> Any:
        result = await send(push)
        if result.reason:
            reasons[result.reason] = reasons.get(result.reason, 0) + 1
        return result

    sender.send = counted  # type: ignore[method-assign]
    return reasons


async def with_node(settings: Settings, devices: int, body: Callable[[Node], Any]) -> Any:
    async with open_node(settings) as node:
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(run_node(node, lambda _: started.set_result(None)))
        try:
            await asyncio.wait_for(started, 60)
            return await body(node)
        finally:
            node.server.should_exit = True
            await asyncio.wait_for(task, 60)


def node_settings(root: Path, server: NatsServer, fake: Fake, concurrency: int) -> Settings:
    return Settings(
        data_dir=root / "node", listen="127.0.0.1:0", nats_url=server.client_url,
        nats_monitor_url=server.monitor_url, probe_interval_s=0.0, dispatch_concurrency=concurrency,
        accounts_file=str(write_automated_source(root / "accounts.toml", ISSUER)),
        push_ca_file=fake.ca_file, webpush_hosts="127.0.0.1", webpush_vapid_key_file=str(root / "vapid.pem"),
        reconcile_interval_s=3600.0, deliveries_max_bytes=1024**3,
    )


def percentile(sorted_values: list[float], p: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))]


def report(run: Run) -> None:
    print(f"- dispatch_concurrency {run.concurrency}, {run.devices:,} devices ({run.load_before} before, "
          f"{run.load_after} after)")
    print(f"  plan: all {run.devices:,} enqueued {run.plan_s:.2f} s after the 201")
    print(f"  sends: all accepted by the fake {run.sends_s:.2f} s after the 201: "
          f"{run.devices / run.sends_s:,.0f} deliveries/s (201 to last accepted); "
          f"{run.sends_s - run.plan_s:.2f} s after the plan ended (sends overlap the plan)")
    lat = run.latencies_s
    print(f"  per-device latency (201 -> accepted): p50 {percentile(lat, 50):.2f} s, p99 {percentile(lat, 99):.2f} s, "
          f"max {lat[-1]:.2f} s, mean {statistics.fmean(lat):.2f} s")
    print(f"  attempts by (channel, outcome): {run.outcomes}; reasons other than sent: {run.reasons or 'none'}")
    if ERRORS.seen:
        print(f"  first errors the sender logged: {ERRORS.seen}")
        ERRORS.seen.clear()
    print(f"  CPU during the run: node (this process, with its nats client) {run.node_cpu_s:.1f} s, "
          f"fake push service {run.fake_cpu_s:.1f} s, nats-server {run.nats_cpu_s:.1f} s, of {run.sends_s * (os.cpu_count() or 1):.1f} core-s")


async def main(mode: str, devices: int, concurrencies: list[int], timeout_s: float) -> None:
    sender_log = logging.getLogger("tocsin.channels.webpush")
    sender_log.setLevel(logging.DEBUG)
    sender_log.addHandler(ERRORS)
    sender_log.propagate = False
    print(f"push_bench {mode}: {os.cpu_count()} cores; the fake push service runs in its own process, "
          f"sharing the cores with the node and the nats-server; {load()}")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        server = NatsServer(store_dir=root / "nats", name="bench")
        await server.start()
        fake: Fake | None = None
        try:
            fake = Fake.start(root)
            key = load_or_create_vapid_key(root / "vapid.pem")
            began = time.perf_counter()
            subscriptions = await fake.subscribe(devices, key.public_b64)
            print(f"{devices:,} subscriptions made through the fake's control API in "
                  f"{time.perf_counter() - began:.1f} s")
            runs: list[Run] = []
            for i, concurrency in enumerate(concurrencies):
                settings = node_settings(root, server, fake, concurrency)

                async def body(node: Node, first: bool = i == 0) -> Run:
                    if first:
                        began = time.perf_counter()
                        await put_devices(node.services.store.devices, node.services.clock(), subscriptions)
                        print(f"{devices:,} device records written in {time.perf_counter() - began:.1f} s")
                    await wait_for(lambda: len(node.services.device_cache) >= devices, 300, "the device index")
                    return await one_alert(node, fake, server, devices, timeout_s)

                run = await with_node(settings, devices, body)
                runs.append(run)
                report(run)
            print(f"fake push service RSS {fake.rss_mb():,.0f} MB; this process (node) max RSS "
                  f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")
        finally:
            if fake is not None:
                fake.stop()
            await server.stop()


def sent_by_node(metrics_text: str) -> int:
    """tocsin_push_attempts_total{channel="webpush",outcome="sent"} of one node's /metrics."""
    for line in metrics_text.splitlines():
        if line.startswith("tocsin_push_attempts_total{") and 'channel="webpush"' in line and 'outcome="sent"' in line:
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


async def cluster_main(devices: int, concurrency: int, timeout_s: float) -> None:
    """Three tocsin processes, each beside its nats-server (LocalCluster, R3, sync always)."""
    print(f"push_bench cluster: {os.cpu_count()} cores shared by 3 nats-servers, 3 tocsin processes and the fake "
          f"push service (its own process); dispatch_concurrency {concurrency} per node; {load()}")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        fake = Fake.start(root)
        key = load_or_create_vapid_key(root / "vapid.pem")
        cluster = LocalCluster(root / "cluster", nodes=3, extra_env={
            "TOCSIN_PUSH_CA_FILE": fake.ca_file, "TOCSIN_WEBPUSH_HOSTS": "127.0.0.1",
            "TOCSIN_WEBPUSH_VAPID_KEY_FILE": str(root / "vapid.pem"),
            "TOCSIN_DISPATCH_CONCURRENCY": str(concurrency), "TOCSIN_PROBE_INTERVAL_S": "0",
            "TOCSIN_RECONCILE_INTERVAL_S": "3600", "TOCSIN_DELIVERIES_MAX_BYTES": str(1024**3)})
        try:
            await cluster.start()
            began = time.perf_counter()
            subscriptions = await fake.subscribe(devices, key.public_b64)
            print(f"{devices:,} subscriptions made in {time.perf_counter() - began:.1f} s")
            nc = await nats.connect(cluster.specs[0].nats_url)
            try:
                bucket = KvRecords(await nc.jetstream().key_value(Settings().device_bucket), 5.0)
                await put_devices(bucket, datetime.now(UTC), subscriptions)
            finally:
                await nc.close()
            await cluster_alert(cluster, fake, devices, timeout_s)
        finally:
            await cluster.stop()
            fake.stop()


async def cluster_alert(cluster: LocalCluster, fake: Fake, devices: int, timeout_s: float) -> None:
    headers = {"Authorization": f"Bearer {cluster.issuer_token}", "Content-Type": "application/cap+xml"}
    async with httpx.AsyncClient(timeout=30) as http:
        async def indexed(url: str) -> int:
            response = await http.post(f"{url}/api/v1/alerts/preview", content=alert_xml(), headers=headers)
            return int(response.json()["reach"]["byChannel"].get(WEBPUSH, 0)) if response.status_code == 200 else 0

        deadline = time.monotonic() + 300
        while min([await indexed(s.url) for s in cluster.specs]) < devices:
            if time.monotonic() > deadline:
                raise SystemExit("bench: the nodes' device indexes did not reach every device in 300 s")
            await asyncio.sleep(0.5)
        fake.read()
        before, pids = load(), [p.pid for p in cluster.tocsin.values()]
        cpu = [cpu_s(pid) for pid in pids]
        fake_cpu = fake.cpu_s()
        response = await http.post(f"{cluster.specs[0].url}/api/v1/alerts", content=alert_xml(), headers=headers)
        issued = time.time()
        if response.status_code != 201:
            raise SystemExit(f"bench: the alert was refused: {response.status_code} {response.text[:300]}")
        alert_id = str(response.json()["id"])
        accepted: list[float] = []

        reached: set[str] = set()

        def done() -> bool:
            for e in fake.read():
                if e.get("event") == "message" and e.get("alert_id") == alert_id:
                    accepted.append(e["at"])
                    reached.add(e["subscription"])
            return len(reached) >= devices

        await wait_for(done, timeout_s, f"{devices} devices' messages accepted by the fake")
        if len(accepted) > len(reached):
            print(f"  DUPLICATES: {len(accepted) - len(reached)} messages to a device that had the alert already")
        took = max(accepted) - issued
        cpu = [cpu_s(pid) - c for pid, c in zip(pids, cpu, strict=True)]
        sent: list[int] = []
        deadline = time.monotonic() + 10  # the counters move once each node has the answer
        while sum(sent) < devices and time.monotonic() < deadline:
            sent = [sent_by_node((await http.get(f"{s.url}/metrics")).text) for s in cluster.specs]
            await asyncio.sleep(0.1)
    latencies = sorted(at - issued for at in accepted)
    print(f"- 3 nodes, {devices:,} devices ({before} before, {load()} after)")
    print(f"  all accepted by the fake {took:.2f} s after the 201: {devices / took:,.0f} deliveries/s in all")
    print("  per node: " + "; ".join(f"{s.name} sent {n:,} ({n / took:,.0f}/s, CPU {c:.1f} s)"
                                     for s, n, c in zip(cluster.specs, sent, cpu, strict=True)))
    print(f"  per-device latency (201 -> accepted): p50 {percentile(latencies, 50):.2f} s, "
          f"p99 {percentile(latencies, 99):.2f} s, max {latencies[-1]:.2f} s")
    print(f"  CPU of the fake push service {fake.cpu_s() - fake_cpu:.1f} s, of {took * (os.cpu_count() or 1):.1f} core-s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=("throughput", "reach", "cluster"))
    parser.add_argument("--devices", type=int, default=None)
    parser.add_argument("--concurrency", default=None, help="comma-separated dispatch_concurrency values")
    parser.add_argument("--timeout", type=float, default=900.0, help="bound on each alert's sends (s)")
    args = parser.parse_args()
    n = args.devices or (100_000 if args.mode == "reach" else 5000)
    levels = [int(x) for x in (args.concurrency or ("64,256" if args.mode == "throughput" else "64")).split(",")]
    if args.mode == "cluster":
        run_loop(cluster_main(n, levels[0], args.timeout))
    else:  # on uvloop, as `tocsin serve` runs
        run_loop(main(args.mode, n, levels, args.timeout))

"""Bench: accept latency, tocsin against a bare JetStream publish with the same settings.

    python bench/accept_bench.py [--alerts 1000] [--setups embedded,cluster] [--blocks 4] [--profile DIR]

Two setups, each measured in this one run:

- `embedded`: `tocsin serve` (one node, its own nats-server child, R1, file store,
  `sync_interval: always`), and beside it a nats-server started here with the same
  configuration (tocsin.cluster.nats_server.NatsServer) for the bare publishes;
- `cluster`: a 3-node LocalCluster (R3, `sync_interval: always` on every server); the bare
  publishes go to a stream with the same settings (R3, file, discard new, one message per
  subject, dedupe window) on the same three servers, through the same node's server.

tocsin's figure is `POST /api/v1/alerts` (CAP XML, one keep-alive connection, one request at
a time, a minimal HTTP/1.1 client) from send to the 201: parse, validate, policy, sign,
JetStream publish (quorum + fsync) beside the ledger write (SQLite, fsync), answer. Each
alert has its own area (see `accept_polygon`). The bare figure is nats-py's `js.publish()` of the
same number of bytes with tocsin's headers (`Nats-Msg-Id`, expected last subject sequence 0),
to its PubAck. Both clients run in this process, on uvloop, one request at a time, in
alternating blocks (tocsin, bare, tocsin, bare...) so that drift hits both alike. Every
process is stopped by pid at the end, on error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import socket
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import nats
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fleet import percentile, raise_nofile  # noqa: E402
from bench.serve_bench import (  # noqa: E402
    Server, alerts_request_head, answer_head, free_port, machine, proc_cpu_s, profiled, run_in_workdir,
)
from tests.samples import alert_xml  # noqa: E402

# Marseille (`accept_polygon`): no device is there, so accept is measured alone (no fan-out).
BARE_STREAM = "BENCH_BARE"


def stats(values_s: list[float]) -> dict[str, float]:
    v = sorted(values_s)
    ms = 1000.0
    return {"n": len(v), "p50_ms": percentile(v, 50) * ms, "p99_ms": percentile(v, 99) * ms,
            "max_ms": (v[-1] if v else float("nan")) * ms, "mean_ms": (sum(v) / len(v) if v else float("nan")) * ms}


def accept_polygon(n: int) -> str:
    """Marseille, shifted a little per alert: no two alerts share an area, so no node's
    cover cache answers for the bench (real alerts seldom repeat an area exactly)."""
    shift = (n % 997) * 1e-4
    south, north, west, east = 43.25 + shift, 43.35 + shift, 5.30, 5.45
    return f"{south:.4f},{west} {south:.4f},{east} {north:.4f},{east} {north:.4f},{west} {south:.4f},{west}"


class TocsinIssuer:
    """Sequential `POST /api/v1/alerts` on one keep-alive connection.

    A minimal HTTP/1.1 client (one write per request, the answer read by Content-Length),
    so that what is timed is the node, not an HTTP library's per-request Python: the bare
    publish beside it uses nats-py, which is lean too.
    """

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.head = alerts_request_head(url, token)
        self.errors: list[str] = []
        self.size = len(alert_xml(polygon=accept_polygon(0)))
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _exchange(self, document: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            sock = self.writer.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert self.reader is not None
        self.writer.write(self.head + b"Content-Length: %d\r\n\r\n" % len(document) + document)
        status, length = answer_head(await self.reader.readuntil(b"\r\n\r\n"))
        return status, await self.reader.readexactly(length)

    async def one(self, n: int) -> float | None:
        document = alert_xml(polygon=accept_polygon(n), headline=f"bench accept {n}")
        sent = time.perf_counter()
        status, body = await self._exchange(document)
        elapsed = time.perf_counter() - sent
        if status != 201:
            self.errors.append(f"{status} {body[:200].decode(errors='replace')}")
            return None
        return elapsed

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class BarePublisher:
    """nats-py `js.publish()` to a stream configured like tocsin's, one at a time."""

    def __init__(self, nats_url: str, replicas: int, size: int) -> None:
        self.nats_url, self.replicas, self.size = nats_url, replicas, size
        self.errors: list[str] = []
        self.tag = secrets.token_hex(4)

    async def open(self) -> None:
        self.nc = await nats.connect(self.nats_url, connect_timeout=5)
        self.js = self.nc.jetstream(timeout=10)
        config = StreamConfig(
            name=BARE_STREAM, subjects=[f"{BARE_STREAM}.>"], storage=StorageType.FILE, num_replicas=self.replicas,
            discard=DiscardPolicy.NEW, max_msgs_per_subject=1, discard_new_per_subject=True,
            duplicate_window=120, allow_direct=True, max_bytes=1 << 30,
        )
        for _ in range(30):  # a new cluster may still be electing its meta leader
            try:
                await self.js.add_stream(config)
                return
            except Exception:  # noqa: BLE001 - retried, then raised below
                await asyncio.sleep(1)
        await self.js.add_stream(config)

    async def one(self, n: int) -> float | None:
        msg_id = f"{self.tag}-{n}"
        headers = {"Nats-Msg-Id": msg_id, "Nats-Expected-Last-Subject-Sequence": "0"}
        payload = b"x" * self.size
        sent = time.perf_counter()
        try:
            await self.js.publish(f"{BARE_STREAM}.{msg_id}", payload, headers=headers, stream=BARE_STREAM)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            self.errors.append(repr(exc)[:200])
            return None
        return time.perf_counter() - sent

    async def close(self) -> None:
        await self.nc.close()


async def alternate(tocsin: TocsinIssuer, bare: BarePublisher, count: int, blocks: int,
                    pids: dict[str, int | None]) -> dict[str, Any]:
    """`count` of each, in `blocks` alternating blocks, after a warm-up of 20 each; with the
    CPU each process spent per request during each kind's blocks."""
    for n in range(20):
        await tocsin.one(-n - 1)
        await bare.one(-n - 1)
    tocsin.errors.clear()
    bare.errors.clear()
    t_lat: list[float] = []
    b_lat: list[float] = []
    cpu = {"tocsin": dict.fromkeys(pids, 0.0), "bare": dict.fromkeys(pids, 0.0)}
    per_block = max(1, count // blocks)
    n = 0
    while len(t_lat) + len(tocsin.errors) < count:
        for kind, client, latencies in (("tocsin", tocsin, t_lat), ("bare", bare, b_lat)):
            before = {name: proc_cpu_s(pid) for name, pid in pids.items()}
            for _ in range(per_block):
                if (value := await client.one(n)) is not None:
                    latencies.append(value)
                n += 1
            for name, pid in pids.items():
                cpu[kind][name] += proc_cpu_s(pid) - before[name]
    cpu_ms = {kind: {name: 1000 * used / max(1, len(t_lat if kind == "tocsin" else b_lat))
                     for name, used in per.items()} for kind, per in cpu.items()}
    return {"tocsin": {**stats(t_lat), "errors": tocsin.errors[:3], "refused": len(tocsin.errors)},
            "bare": {**stats(b_lat), "errors": bare.errors[:3], "refused": len(bare.errors)},
            "payload_bytes": bare.size, "cpu_ms_per_request": cpu_ms}


async def embedded(workdir: Path, count: int, blocks: int, profile: Path | None) -> dict[str, Any]:
    from tocsin.cluster.nats_server import NatsServer

    token = f"tca_{secrets.token_urlsafe(24)}"
    server = Server(data_dir=workdir / "embedded", port=free_port(), admin_token=token)
    bare_server = NatsServer(store_dir=workdir / "bare-nats", name="bare")
    try:
        await asyncio.to_thread(server.start)
        await bare_server.start()
        issuer = TocsinIssuer(server.url, server.issuer_token)
        bare = BarePublisher(bare_server.client_url, 1, issuer.size)
        await bare.open()
        try:
            pids = {"tocsin": server.process.pid if server.process else None, "its nats": server.nats_pid,
                    "bare nats": bare_server.pid}
            with profiled(pids["tocsin"], profile and profile / "embedded.txt"):
                result = await alternate(issuer, bare, count, blocks, pids)
        finally:
            await issuer.close()
            await bare.close()
        return {"setup": "embedded (1 node, R1)", **result}
    finally:
        await asyncio.to_thread(server.stop)
        await bare_server.stop()


async def cluster(workdir: Path, count: int, blocks: int, profile: Path | None) -> dict[str, Any]:
    from tocsin.cluster.local import LocalCluster

    local = LocalCluster(workdir / "cluster", nodes=3)
    try:
        await local.start()
        node = local.specs[0]
        issuer = TocsinIssuer(node.url, local.issuer_token)
        bare = BarePublisher(node.nats_url, 3, issuer.size)
        await bare.open()
        try:
            await same_leader(bare, "TOCSIN_ALERTS", BARE_STREAM)
            pids = {f"{spec.name} {kind}": pid for spec in local.specs for kind, pid in local.pids(spec.name).items()}
            with profiled(local.pids(node.name)["tocsin"], profile and profile / "cluster-node1.txt"):
                result = await alternate(issuer, bare, count, blocks, pids)
            leaders = await stream_leaders(bare, ["TOCSIN_ALERTS", BARE_STREAM])
        finally:
            await issuer.close()
            await bare.close()
        return {"setup": "3-node cluster (R3)", "node": node.name, "leaders": leaders, **result}
    finally:
        await local.stop()


async def same_leader(bare: BarePublisher, model: str, stream: str) -> None:
    """Move `stream`'s leader to `model`'s server, so both publishes take the same path
    (a leader on the node's own server saves a hop)."""
    for _ in range(10):
        leaders = await stream_leaders(bare, [model, stream])
        if leaders[model] == leaders[stream]:
            return
        request = json.dumps({"placement": {"preferred": leaders[model]}}).encode()
        with contextlib.suppress(Exception):
            await bare.nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", request, timeout=5)
        await asyncio.sleep(1)
    raise RuntimeError(f"could not move {stream}'s leader to {model}'s: {leaders}")


async def stream_leaders(bare: BarePublisher, streams: list[str]) -> dict[str, str]:
    found = {}
    for name in streams:
        try:
            info = await bare.js.stream_info(name)
            found[name] = (info.cluster.leader if info.cluster else None) or "?"
        except Exception as exc:  # noqa: BLE001 - informative only
            found[name] = repr(exc)[:60]
    return found


def table(report: dict[str, Any]) -> str:
    lines = [
        f"accept latency: {report['alerts']} sequential requests each, one connection, alternating blocks of "
        f"{report['alerts'] // report['blocks']}; ms from send to answer",
        f"{'setup':<24} {'what':<26} {'n':>5} {'p50':>7} {'p99':>7} {'max':>7} {'mean':>7} refused",
    ]
    for r in report["results"]:
        for key, label in (("tocsin", "tocsin POST /api/v1/alerts"), ("bare", "bare JetStream publish")):
            s = r[key]
            lines.append(f"{r['setup']:<24} {label:<26} {s['n']:>5} {s['p50_ms']:>7.2f} {s['p99_ms']:>7.2f}"
                         f" {s['max_ms']:>7.2f} {s['mean_ms']:>7.2f} {s['refused']}")
        ratio = r["tocsin"]["p99_ms"] / r["bare"]["p99_ms"]
        extra = f" (issued to {r['node']}; stream leaders {r['leaders']})" if "node" in r else ""
        lines.append(f"{'':<24} p99 ratio tocsin/bare = {ratio:.2f}x, p50 ratio = "
                     f"{r['tocsin']['p50_ms'] / r['bare']['p50_ms']:.2f}x{extra}")
        if "cluster" in r["setup"]:
            lines.append(f"{'':<24} target: p99 <= 1.5x bare: {'met' if ratio <= 1.5 else 'NOT met'}")
        for kind in ("tocsin", "bare"):
            used = r["cpu_ms_per_request"][kind]
            lines.append(f"{'':<24} CPU ms per request, {kind}: total {sum(used.values()):.2f} ("
                         + ", ".join(f"{name} {ms:.2f}" for name, ms in used.items()) + ")")
    return "\n".join(lines)


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    results = []
    for setup in args.setups:
        runner = {"embedded": embedded, "cluster": cluster}[setup]
        results.append(await runner(workdir, args.alerts, args.blocks, Path(args.profile) if args.profile else None))
        print(f"{setup} done", file=sys.stderr, flush=True)
    return {"machine": machine(), "alerts": args.alerts, "blocks": args.blocks, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=1000)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--setups", default="embedded,cluster")
    parser.add_argument("--tmp", default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--save", default="")
    parser.add_argument("--profile", default="", help="py-spy the node taking the requests; raw stacks in this directory")
    args = parser.parse_args()
    args.setups = [s for s in args.setups.split(",") if s]
    raise_nofile()
    run_in_workdir("tocsin-accept-", args, lambda workdir: run(args, workdir), table)

if __name__ == "__main__":
    socket.setdefaulttimeout(None)
    main()

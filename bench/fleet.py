"""Bench: a fleet of simulated devices in one process, timing when each alert reaches each.

Run by `bench/serve_bench.py` (or by hand) as

    python bench/fleet.py --url http://127.0.0.1:8080 --devices 1000 [--outside 0.1]

It registers the devices (`POST /api/v1/devices`), opens one live connection per device
(one TCP connection each; SSE now, a WebSocket client can sit beside `SseClient`), waits
until every device has seen `synced`, then talks JSON lines:

    stdout  {"type": "ready", ...}                      every device is synced
    stdin   {"cmd": "round", "round": 1, "seq": 7, "issued_at": 1732870000.123}
    stdout  {"type": "round", "round": 1, "received": 1000, "p50_ms": ..., ...}
    stdin   {"cmd": "stop"}
    stdout  {"type": "summary", "missing": 0, "duplicates": 0, ...}

Receipt times are wall-clock (`time.time()`), taken when the event's bytes are handed to
the protocol, so the issuer (another process on the same machine) can subtract its own
`time.time()` taken when it sent the alert. The client is raw asyncio protocols on uvloop
(no httpx per device) so one process can hold 10,000-20,000 devices.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import httpx

# Points are drawn inside these boxes (lat_min, lon_min, lat_max, lon_max). The inside box
# sits well within the alert polygon the bench issues (serve_bench.DISPLAY_POLYGON: central
# Paris, 48.80-48.90 N, 2.25-2.42 E); the outside box is Lyon, far from it.
INSIDE_BOX = (48.82, 2.28, 48.88, 2.39)
OUTSIDE_BOX = (45.72, 4.78, 45.79, 4.88)

# Connections opened at once: enough to keep the server busy, few enough that its listen
# backlog (4096) never overflows.
CONNECT_PARALLEL = 256
REGISTER_PARALLEL = 32
# After the last expected device has the alert, wait this long for duplicates/strays.
SETTLE_S = 0.3


def cpu_s() -> float:
    """This process's CPU time (user + system), in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raise_nofile() -> int:
    """Raise the open-files soft limit to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


@dataclass(slots=True, kw_only=True)
class Device:
    """One simulated device: its token, whether the bench's alert area covers it, what it got."""

    index: int
    device_id: str
    token: str
    inside: bool
    received: dict[int, float] = field(default_factory=dict)  # seq -> wall-clock receipt time
    duplicates: list[int] = field(default_factory=list)
    synced: bool = False
    closed: str | None = None  # why the connection ended, if it did


class FleetEvents:
    """Where live clients report what they saw; counts arrivals per seq for round waits."""

    def __init__(self, devices: int) -> None:
        self.devices = devices
        self.synced = 0
        self.all_synced = asyncio.Event()
        self.arrivals: dict[int, int] = defaultdict(int)
        self._waiting: dict[int, tuple[int, asyncio.Event]] = {}
        self.lost: list[str] = []
        self.stopping = False

    def on_synced(self, device: Device) -> None:
        if not device.synced:
            device.synced = True
            self.synced += 1
            if self.synced >= self.devices:
                self.all_synced.set()

    def on_alert(self, device: Device, seq: int, at: float) -> None:
        if seq in device.received:
            device.duplicates.append(seq)
            return
        device.received[seq] = at
        if device.inside:
            self.arrivals[seq] += 1
            waiting = self._waiting.get(seq)
            if waiting and self.arrivals[seq] >= waiting[0]:
                waiting[1].set()

    def on_lost(self, device: Device, why: str) -> None:
        device.closed = why
        if not self.stopping:
            self.lost.append(f"{device.device_id}: {why}")

    def wait_for(self, seq: int, expected: int) -> asyncio.Event:
        """An event set once `expected` inside devices have `seq`."""
        done = asyncio.Event()
        self._waiting[seq] = (expected, done)
        if self.arrivals[seq] >= expected:
            done.set()
        return done


class SseClient(asyncio.Protocol):
    """One device's `GET /api/v1/stream`: HTTP/1.1, chunked decoding, just enough SSE.

    SSE framing (WHATWG HTML §9.2.6) as tocsin writes it: `\\n` line ends, one event per
    block ending in a blank line; `id:` carries the seq. Only `event:` and `id:` lines are
    read; the JSON in `data:` is never decoded.
    """

    def __init__(self, device: Device, host: str, path: str, events: FleetEvents) -> None:
        self.device = device
        self.events = events
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n"
            f"Authorization: Bearer {device.token}\r\nCache-Control: no-cache\r\n\r\n"
        ).encode()
        self.transport: asyncio.Transport | None = None
        self.status: int | None = None
        self.headers_seen = asyncio.get_running_loop().create_future()
        self._head = bytearray()
        self._chunked = False
        self._chunks = bytearray()
        self._data_left = 0  # bytes of the current chunk's data still to read
        self._crlf_left = 0  # bytes of the CRLF after the chunk's data still to skip
        self._sse = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.on_lost(self.device, repr(exc) if exc else "closed by server")
        if not self.headers_seen.done():
            self.headers_seen.set_exception(ConnectionError(f"closed before headers: {exc!r}"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if self.status is None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            data = bytes(self._head[end + 4 :])
            self._start(bytes(self._head[:end]))
            if self.status != 200:
                return
        if self._chunked:
            self._feed_sse(self._dechunk(data), now)
        else:
            self._feed_sse(data, now)

    def _start(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        self.status = int(lines[0].split(b" ", 2)[1])
        self._chunked = any(
            line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower() for line in lines[1:]
        )
        if not self.headers_seen.done():
            if self.status == 200:
                self.headers_seen.set_result(None)
            else:
                self.headers_seen.set_exception(ConnectionError(f"HTTP {self.status}: {head[:200]!r}"))
        if self.status != 200 and self.transport is not None:
            self.transport.close()

    def _dechunk(self, data: bytes) -> bytes:
        """HTTP/1.1 chunked transfer coding (RFC 9112 §7.1) -> the body bytes so far."""
        buf = self._chunks
        buf += data
        out = bytearray()
        while buf:
            if self._data_left:
                take = min(self._data_left, len(buf))
                out += buf[:take]
                del buf[:take]
                self._data_left -= take
                continue
            if self._crlf_left:
                take = min(self._crlf_left, len(buf))
                del buf[:take]
                self._crlf_left -= take
                continue
            nl = buf.find(b"\r\n")
            if nl < 0:
                break
            size = int(bytes(buf[:nl]).split(b";", 1)[0], 16)
            del buf[: nl + 2]
            if size == 0:  # last chunk: the server ended the stream
                break
            self._data_left, self._crlf_left = size, 2
        return bytes(out)

    def _feed_sse(self, body: bytes, now: float) -> None:
        sse = self._sse
        sse += body
        while (end := sse.find(b"\n\n")) >= 0:
            block = bytes(sse[:end])
            del sse[: end + 2]
            self._on_block(block, now)

    def _on_block(self, block: bytes, now: float) -> None:
        kind = b"message"
        seq: int | None = None
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                kind = line[6:].strip()
            elif line.startswith(b"id:"):
                seq = int(line[3:].strip())
            elif line.startswith(b"data:"):
                break  # tocsin writes id and event before data; data is never needed here
        if kind == b"alert" and seq is not None:
            self.events.on_alert(self.device, seq, now)
        elif kind == b"synced":
            self.events.on_synced(self.device)


ClientFactory = Callable[[Device, str, str, FleetEvents], SseClient]
PROTOCOLS: dict[str, tuple[str, ClientFactory]] = {"sse": ("/api/v1/stream", SseClient)}


def random_point(rng: random.Random, box: tuple[float, float, float, float]) -> dict[str, float]:
    lat_min, lon_min, lat_max, lon_max = box
    return {"lat": round(rng.uniform(lat_min, lat_max), 5), "lon": round(rng.uniform(lon_min, lon_max), 5)}


async def register(url: str, count: int, outside_share: float, seed: int) -> list[Device]:
    """Register `count` devices through the device API; a share of them outside the area."""
    rng = random.Random(seed)
    outside = set(rng.sample(range(count), round(count * outside_share)))
    devices: list[Device | None] = [None] * count
    next_index = iter(range(count))

    async def worker(http: httpx.AsyncClient) -> None:
        for i in next_index:
            box = OUTSIDE_BOX if i in outside else INSIDE_BOX
            response = await http.post("/api/v1/devices", json={"points": [random_point(rng, box)]})
            if response.status_code != 201:
                raise RuntimeError(f"registration {i} refused: {response.status_code} {response.text[:200]}")
            body = response.json()
            devices[i] = Device(index=i, device_id=body["id"], token=body["token"], inside=i not in outside)

    limits = httpx.Limits(max_connections=REGISTER_PARALLEL, max_keepalive_connections=REGISTER_PARALLEL)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        async with asyncio.TaskGroup() as tasks:
            for _ in range(min(REGISTER_PARALLEL, count)):
                tasks.create_task(worker(http))
    return [d for d in devices if d is not None]


async def connect_all(
    url: str, devices: list[Device], events: FleetEvents, protocol: str, timeout_s: float
) -> list[SseClient]:
    """Open one connection per device, at most CONNECT_PARALLEL at once, until all synced."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path, factory = PROTOCOLS[protocol]
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(CONNECT_PARALLEL)
    clients: list[SseClient] = []

    async def open_one(device: Device) -> None:
        async with gate:
            _, client = await loop.create_connection(
                lambda: factory(device, f"{host}:{port}", path, events), host, port
            )
            clients.append(client)
            await client.headers_seen

    async with asyncio.timeout(timeout_s):
        async with asyncio.TaskGroup() as tasks:
            for device in devices:
                tasks.create_task(open_one(device))
        await events.all_synced.wait()
    return clients


def round_stats(devices: list[Device], seq: int, issued_at: float) -> dict[str, Any]:
    """Latency of one alert over the devices it should reach, and what went wrong."""
    inside = [d for d in devices if d.inside]
    delays = sorted(d.received[seq] - issued_at for d in inside if seq in d.received)
    firsts = [d.received[seq] for d in inside if seq in d.received]
    ms = 1000.0
    return {
        "seq": seq,
        "expected": len(inside),
        "received": len(delays),
        "missing": len(inside) - len(delays),
        "duplicates": sum(d.duplicates.count(seq) for d in devices),
        "unexpected": sum(1 for d in devices if not d.inside and seq in d.received),
        "p50_ms": percentile(delays, 50) * ms,
        "p99_ms": percentile(delays, 99) * ms,
        "max_ms": (delays[-1] if delays else float("nan")) * ms,
        "min_ms": (delays[0] if delays else float("nan")) * ms,
        "mean_ms": (sum(delays) / len(delays) if delays else float("nan")) * ms,
        # From the first device that had it to the last: the fan-out's own spread.
        "spread_ms": ((max(firsts) - min(firsts)) if firsts else float("nan")) * ms,
    }


def emit(kind: str, **fields: Any) -> None:
    print(json.dumps({"type": kind, **fields}), flush=True)


async def stdin_lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def serve_rounds(devices: list[Device], events: FleetEvents, round_timeout_s: float) -> dict[str, Any]:
    """Answer `round` commands until `stop` (or stdin closes); returns the totals."""
    commands = await stdin_lines()
    seqs: list[int] = []
    expected = sum(1 for d in devices if d.inside)
    cpu_mark = cpu_s()
    while line := await commands.readline():
        command = json.loads(line)
        if command["cmd"] == "stop":
            break
        seq, issued_at = int(command["seq"]), float(command["issued_at"])
        seqs.append(seq)
        try:
            async with asyncio.timeout(round_timeout_s):
                await events.wait_for(seq, expected).wait()
        except TimeoutError:
            pass
        await asyncio.sleep(SETTLE_S)
        # The alert usually arrives before this command does, so CPU is counted from the
        # end of the previous round (or from ready): that interval holds the receipt work.
        now_cpu = cpu_s()
        emit("round", round=command.get("round"), cpu_s=now_cpu - cpu_mark, **round_stats(devices, seq, issued_at))
        cpu_mark = now_cpu
    wanted = set(seqs)
    return {
        "rounds": len(seqs),
        "missing": sum(1 for d in devices if d.inside for s in seqs if s not in d.received),
        "duplicates": sum(len(d.duplicates) for d in devices),
        "unexpected": sum(1 for d in devices if not d.inside for s in seqs if s in d.received),
        "foreign": sum(1 for d in devices for s in d.received if s not in wanted),
        "lost_connections": len(events.lost),
        "lost_examples": events.lost[:5],
    }


async def run(args: argparse.Namespace) -> None:
    nofile = raise_nofile()
    started = time.monotonic()
    devices = await register(args.url, args.devices, args.outside, args.seed)
    registered_s = time.monotonic() - started
    emit("registered", devices=len(devices), seconds=registered_s, cpu_s=cpu_s())
    events = FleetEvents(len(devices))
    started = time.monotonic()
    clients = await connect_all(args.url, devices, events, args.protocol, args.connect_timeout)
    emit(
        "ready", devices=len(devices), inside=sum(d.inside for d in devices), protocol=args.protocol,
        register_s=registered_s, connect_s=time.monotonic() - started, cpu_s=cpu_s(), nofile=nofile,
    )
    try:
        totals = await serve_rounds(devices, events, args.round_timeout)
    finally:
        events.stopping = True
        for client in clients:
            client.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    emit("summary", cpu_s=cpu_s(), user_s=usage.ru_utime, system_s=usage.ru_stime,
         max_rss_mb=usage.ru_maxrss / 1024, **totals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the node's base URL, http://HOST:PORT")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--outside", type=float, default=0.0, help="share of devices outside the area (0..1)")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="sse")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--connect-timeout", type=float, default=120.0)
    parser.add_argument("--round-timeout", type=float, default=30.0)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # the bench still runs, slower; serve_bench reports the loop
        asyncio.run(run(args))
    else:
        uvloop.run(run(args))


if __name__ == "__main__":
    main()

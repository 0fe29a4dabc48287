"""Bench: a fleet of simulated devices in one process, timing when each message reaches each.

Run by `bench/serve_bench.py`, `bench/fanout_bench.py` and `bench/failover_bench.py` (or by
hand) as

    python bench/fleet.py --url http://127.0.0.1:8080 --devices 1000 [--protocol sse|ws]
    python bench/fleet.py --url http://127.0.0.1:9000 --devices 10000 --protocol raw-sse
    python bench/fleet.py --url mqtt://127.0.0.1:1883 --devices 10000 --protocol mqtt
    python bench/fleet.py --url nats://127.0.0.1:4222 --devices 10000 --protocol nats

For `sse` and `ws` (tocsin) it registers the devices (`POST /api/v1/devices`; `--tokens FILE`
keeps them for the next run), opens one live connection per device (one TCP connection each),
waits until every device is synced, then talks JSON lines:

    stdout  {"type": "ready", ...}                      every device is synced
    stdin   {"cmd": "round", "round": 1, "seq": 7, "issued_at": 1732870000.123}
    stdout  {"type": "round", "round": 1, "received": 1000, "p50_ms": ..., ...}
    stdin   {"cmd": "burst", "seqs": [8, 9, ...], "issued_at": ...}
    stdout  {"type": "burst", "deliveries": ..., "per_s": ..., ...}
    stdin   {"cmd": "failover", "killed_at": ..., "issued": {"8": t8, ...}, "timeout_s": 30}
    stdout  {"type": "failover", "reconnected": ..., "gap_max_s": ..., ...}
    stdin   {"cmd": "stop"}
    stdout  {"type": "summary", "missing": 0, "duplicates": 0, ...}

The other protocols carry the same messages without tocsin: `raw-sse` is the baselines'
chunked SSE (bench/baselines), `mqtt` is MQTT 3.1.1 with a QoS 1 subscription (every message
acknowledged with PUBACK), `nats` is NATS core (SUB, answers PING). Their payload begins
`id: <seq>\\n`, which is how the seq is read; a device is synced once subscribed.

Receipt times are wall-clock (`time.time()`), taken when the bytes are handed to the
protocol, so the issuer (another process on the same machine) can subtract its own
`time.time()` taken when it sent the message. The clients are raw asyncio protocols on uvloop
with as little parsing per message as the protocol allows (a regex over the raw SSE stream,
no JSON decoding), so one process reads 10,000-20,000 sockets on one core; the bench pins it
to a core of its own with `taskset` and reports its CPU. With `--reconnect URL,...` a device
whose connection ends reconnects after a full-jitter delay (as tocsin's client does) to the
next URL, resuming from the last seq it saw.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
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
REGISTER_ATTEMPTS = 3
SOURCE_ADDRESSES = 200
# After the last expected device has the alert, wait this long for duplicates/strays.
SETTLE_S = 0.3


def cpu_s() -> float:
    """This process's CPU time (user + system), in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raise_nofile(wanted: int = 1 << 17) -> int:
    """Raise the open-files limit (the hard one too when root may); return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target_hard in (max(hard, wanted), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target_hard, target_hard))
            return target_hard
        except (ValueError, OSError):
            continue
    return soft


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


@dataclass(slots=True, kw_only=True)
class Device:
    """One simulated device: its token, whether the messages should reach it, what it got."""

    index: int
    device_id: str
    token: str
    inside: bool
    received: dict[int, float] = field(default_factory=dict)  # seq -> wall-clock receipt time
    duplicates: list[int] = field(default_factory=list)
    synced: bool = False
    closed: str | None = None  # why the connection ended, if it did
    last_seq: int = 0
    lost_at: float | None = None
    resynced_at: float | None = None
    reconnects: int = 0
    # Early copies (tocsin's pipeline/early.py: no seq yet): alert id -> first receipt time.
    early: dict[str, float] = field(default_factory=dict)


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
        # Set by run() when devices reconnect after losing their connection.
        self.on_disconnect: Callable[[Device], None] | None = None

    def on_synced(self, device: Device, now: float = 0.0) -> None:
        if not device.synced:
            device.synced = True
            self.synced += 1
            if self.synced >= self.devices:
                self.all_synced.set()
        elif device.lost_at is not None:
            device.resynced_at = now or time.time()

    def on_alert(self, device: Device, seq: int, at: float) -> None:
        received = device.received
        if seq in received:
            device.duplicates.append(seq)
            return
        received[seq] = at
        if seq > device.last_seq:
            device.last_seq = seq
        if device.inside:
            self.arrivals[seq] += 1
            waiting = self._waiting.get(seq)
            if waiting and self.arrivals[seq] >= waiting[0]:
                waiting[1].set()

    def on_early(self, device: Device, alert_id: str, at: float) -> None:
        """An early copy (no seq: sent before it was stored); matched to its seq by id later."""
        device.early.setdefault(alert_id, at)

    def on_lost(self, device: Device, why: str) -> None:
        device.closed = why
        if self.stopping:
            return
        self.lost.append(f"{device.device_id}: {why}")
        if self.on_disconnect is not None:
            device.lost_at = time.time()
            device.resynced_at = None
            self.on_disconnect(device)

    def wait_for(self, seq: int, expected: int) -> asyncio.Event:
        """An event set once `expected` inside devices have `seq`."""
        done = asyncio.Event()
        self._waiting[seq] = (expected, done)
        if self.arrivals[seq] >= expected:
            done.set()
        return done


class LiveClient(asyncio.Protocol):
    """What every protocol's client shares: its device, its connection, `ready` once accepted."""

    def __init__(self, device: Device, host: str, path: str, events: FleetEvents) -> None:
        self.device = device
        self.events = events
        self.host = host
        self.path = path
        self.transport: asyncio.Transport | None = None
        self.headers_seen = asyncio.get_running_loop().create_future()
        self._buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.hello())

    def hello(self) -> bytes:
        raise NotImplementedError

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.headers_seen.done():
            self.headers_seen.set_exception(ConnectionError(f"closed before ready: {exc!r}"))
        self.events.on_lost(self.device, repr(exc) if exc else "closed by server")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _ready(self, ok: bool, why: str = "") -> None:
        if not self.headers_seen.done():
            if ok:
                self.headers_seen.set_result(None)
            else:
                self.headers_seen.set_exception(ConnectionError(why))
        if not ok and self.transport is not None:
            self.transport.close()


# tocsin writes `id: <seq>\nevent: alert\ndata: ...` (WHATWG HTML §9.2.6), one event per HTTP
# chunk; `synced` has no id. Scanning the raw stream finds them without de-chunking: the JSON
# in `data:` holds no raw newline, so `event: ` is always a field. bytes.find, not a regex:
# a regex over a 1 KB event costs ~20 us in CPython, find ~1 us.
_TAIL = 128  # longer than any partial `id: ...\nevent: ...` line pair, or an early copy's head
_DATA_SEQ = b'data: {"seq":'
# An early copy (no seq yet), then its alert id (32 hex digits).
_DATA_EARLY = b'data: {"seq":null,"event_id":null,"id":"'
_EARLY_LEN = len(_DATA_EARLY) + 32


class SseClient(LiveClient):
    """One device's SSE stream over HTTP/1.1 (tocsin's `GET /api/v1/stream`, or a baseline)."""

    def __init__(self, device: Device, host: str, path: str, events: FleetEvents) -> None:
        super().__init__(device, host, path, events)
        self.status: int | None = None
        self._head = b""

    def hello(self) -> bytes:
        resume = f"Last-Event-ID: {self.device.last_seq}\r\n" if self.device.last_seq else ""
        return (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nAccept: text/event-stream\r\n"
            f"Authorization: Bearer {self.device.token}\r\nCache-Control: no-cache\r\n{resume}\r\n"
        ).encode()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if self.status is None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            data = self._head[end + 4 :]
            self.status = int(self._head.split(b" ", 2)[1])
            self._ready(self.status == 200, f"HTTP {self.status}: {self._head[:200]!r}")
            if self.status != 200:
                return
        buf = self._buf + data if self._buf else data
        last = 0
        at = buf.find(b"event: ")
        while at >= 0:
            end = buf.find(b"\n", at)
            if end < 0:
                break
            kind = buf[at + 7 : end]
            early = buf[end + 1 : end + 1 + _EARLY_LEN] if kind == b"alert" else b""
            if early and _DATA_EARLY.startswith(early[: len(_DATA_EARLY)]):
                # An early copy, or the start of any alert's data line (`data: {"seq":`).
                if len(early) < _EARLY_LEN:
                    break  # not all here yet: read on (the tail keeps this event)
                self.events.on_early(self.device, early[len(_DATA_EARLY) :].decode(), now)
                last = end
                at = buf.find(b"event: ", end)
                continue
            head = buf[end + 1 : end + 1 + len(_DATA_SEQ) + 21]  # 20 digits and a comma
            if kind == b"alert" and (_DATA_SEQ.startswith(head) or (head.startswith(_DATA_SEQ) and b"," not in head)):
                break  # its data line has not all arrived: read on (the tail keeps this event)
            if kind == b"alert":
                # tocsin's data starts `{"seq":N,`: the alert's own seq, also when its id is a
                # burst cursor (`floor.prefix~s1~s2`, fanned out ahead of lower seqs).
                if head.startswith(_DATA_SEQ):
                    self.events.on_alert(self.device, int(head[len(_DATA_SEQ) : head.index(b",")]), now)
                elif (start := buf.rfind(b"id: ", max(0, at - 32), at)) >= 0:
                    # `id: <seq>` (the baselines)
                    self.events.on_alert(self.device, int(buf[start + 4 : at - 1].split(b".")[0]), now)
            elif kind == b"synced":
                self.events.on_synced(self.device, now)
            last = end
            at = buf.find(b"event: ", end)
        self._buf = buf[max(last, len(buf) - _TAIL) :]


_ALERT_PREFIX = b'{"type":"alert","seq":'
_ALERT_EARLY = b'{"type":"alert","seq":null,"event_id":null,"id":"'
_SYNCED = b'"synced"'  # tocsin writes `{"type": "synced", ...}` (json.dumps' default separators)


class WsClient(LiveClient):
    """One device's tocsin WebSocket (RFC 6455): upgrade, unmasked server frames, masked pongs.

    No extension is offered, so frames are never compressed. tocsin's messages are JSON
    objects that start `{"type":"alert","seq":N,`; only that prefix is read.
    """

    def __init__(self, device: Device, host: str, path: str, events: FleetEvents) -> None:
        super().__init__(device, host, path, events)
        self.upgraded = False
        self._head = b""

    def hello(self) -> bytes:
        key = base64.b64encode(os.urandom(16)).decode()
        query = f"?token={self.device.token}"
        if self.device.last_seq:
            query += f"&last_event_id={self.device.last_seq}"
        return (
            f"GET {self.path}{query} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if not self.upgraded:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            data = self._head[end + 4 :]
            status = int(self._head.split(b" ", 2)[1])
            self.upgraded = status == 101
            self._ready(self.upgraded, f"HTTP {status}: {self._head[:200]!r}")
            if not self.upgraded:
                return
        buf = self._buf + data if self._buf else data
        i, n = 0, len(buf)
        while n - i >= 2:
            b0, b1 = buf[i], buf[i + 1]
            length, header = b1 & 0x7F, 2
            if length == 126:
                if n - i < 4:
                    break
                length, header = int.from_bytes(buf[i + 2 : i + 4], "big"), 4
            elif length == 127:
                if n - i < 10:
                    break
                length, header = int.from_bytes(buf[i + 2 : i + 10], "big"), 10
            if b1 & 0x80:
                header += 4  # a server must not mask (RFC 6455 §5.1); skip the key anyway
            if n - i < header + length:
                break
            payload = buf[i + header : i + header + length]
            i += header + length
            opcode = b0 & 0x0F
            if opcode == 1:
                if payload.startswith(_ALERT_EARLY):
                    start = len(_ALERT_EARLY)
                    self.events.on_early(self.device, payload[start : start + 32].decode(), now)
                elif payload.startswith(_ALERT_PREFIX):
                    end = payload.index(b",", len(_ALERT_PREFIX))
                    self.events.on_alert(self.device, int(payload[len(_ALERT_PREFIX) : end]), now)
                elif _SYNCED in payload[:24]:
                    self.events.on_synced(self.device, now)
            elif opcode == 9 and self.transport is not None:  # ping -> pong, masked (zero key)
                self.transport.write(bytes((0x8A, 0x80 | len(payload))) + b"\0\0\0\0" + payload)
            elif opcode == 8 and self.transport is not None:
                self.transport.close()
        self._buf = buf[i:]


def _mqtt_length(n: int) -> bytes:
    """MQTT 3.1.1 §2.2.3 remaining length: 7 bits a byte, high bit = more."""
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _mqtt_str(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


MQTT_TOPIC = "bench/alerts"


class MqttClient(LiveClient):
    """MQTT 3.1.1: CONNECT (clean session), SUBSCRIBE at QoS 1, PUBACK for every PUBLISH."""

    def hello(self) -> bytes:
        body = _mqtt_str("MQTT") + bytes((4, 0x02)) + (600).to_bytes(2, "big") + _mqtt_str(f"d{self.device.index}")
        connect = b"\x10" + _mqtt_length(len(body)) + body
        sub = (1).to_bytes(2, "big") + _mqtt_str(MQTT_TOPIC) + b"\x01"
        return connect + b"\x82" + _mqtt_length(len(sub)) + sub

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self._buf + data if self._buf else data
        i, n = 0, len(buf)
        acks = []
        while n - i >= 2:
            kind = buf[i]
            length, shift, j = 0, 0, i + 1
            while j < n:
                byte = buf[j]
                length |= (byte & 0x7F) << shift
                shift += 7
                j += 1
                if not byte & 0x80:
                    break
            else:
                break
            if n - j < length:
                break
            body = buf[j : j + length]
            i = j + length
            packet = kind >> 4
            if packet == 3:  # PUBLISH
                topic_len = int.from_bytes(body[:2], "big")
                at = 2 + topic_len
                if (kind >> 1) & 3:
                    acks.append(b"\x40\x02" + body[at : at + 2])
                    at += 2
                payload = body[at : at + 32]
                if payload.startswith(b"id: "):
                    self.events.on_alert(self.device, int(payload[4 : payload.index(b"\n")]), now)
            elif packet == 2:  # CONNACK
                if body[1:2] != b"\0":
                    self._ready(False, f"CONNACK refused: {body!r}")
            elif packet == 9:  # SUBACK
                self._ready(body[2:3] in (b"\x00", b"\x01"), f"SUBACK refused: {body!r}")
                self.events.on_synced(self.device, now)
        self._buf = buf[i:]
        if acks and self.transport is not None:
            self.transport.write(b"".join(acks))


NATS_SUBJECT = "bench.alerts"


class NatsClient(LiveClient):
    """NATS core: CONNECT, SUB, then PING; synced at the PONG (the SUB is in place)."""

    def __init__(self, device: Device, host: str, path: str, events: FleetEvents) -> None:
        super().__init__(device, host, path, events)
        self._need = 0  # bytes of a MSG payload (+ CRLF) still expected

    def hello(self) -> bytes:
        return (
            b'CONNECT {"verbose":false,"pedantic":false,"name":"fleet"}\r\n'
            b"SUB " + NATS_SUBJECT.encode() + b" 1\r\nPING\r\n"
        )

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self._buf + data if self._buf else data
        i, n = 0, len(buf)
        while i < n:
            if self._need:
                if n - i < self._need:
                    break
                payload = buf[i : i + 32]
                i += self._need
                self._need = 0
                if payload.startswith(b"id: "):
                    self.events.on_alert(self.device, int(payload[4 : payload.index(b"\n")]), now)
                continue
            end = buf.find(b"\r\n", i)
            if end < 0:
                break
            line = buf[i:end]
            i = end + 2
            if line.startswith(b"MSG "):
                self._need = int(line.rsplit(b" ", 1)[1]) + 2
            elif line == b"PING" and self.transport is not None:
                self.transport.write(b"PONG\r\n")
            elif line == b"PONG":
                self._ready(True)
                self.events.on_synced(self.device, now)
            elif line.startswith(b"-ERR"):
                self._ready(False, line.decode(errors="replace"))
        self._buf = buf[i:]


ClientFactory = Callable[[Device, str, str, FleetEvents], LiveClient]
# protocol -> (path, client, whether devices are registered with tocsin)
PROTOCOLS: dict[str, tuple[str, ClientFactory, bool]] = {
    "sse": ("/api/v1/stream", SseClient, True),
    "ws": ("/api/v1/ws", WsClient, True),
    "raw-sse": ("/events", SseClient, False),
    "mqtt": ("", MqttClient, False),
    "nats": ("", NatsClient, False),
}


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
            point = random_point(rng, box)
            for attempt in range(REGISTER_ATTEMPTS):  # a connection cut under load: a new one
                try:
                    response = await http.post("/api/v1/devices", json={"points": [point]})
                    break
                except httpx.TransportError:
                    if attempt == REGISTER_ATTEMPTS - 1:
                        raise
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


async def devices_for(args: argparse.Namespace) -> list[Device]:
    """Registered devices (reused from `--tokens` when it holds enough), or anonymous ones."""
    if not PROTOCOLS[args.protocol][2]:
        return [Device(index=i, device_id=f"d{i}", token="-", inside=True) for i in range(args.devices)]
    saved = Path(args.tokens) if args.tokens else None
    if saved is not None and saved.exists():
        rows = json.loads(saved.read_text())
        if len(rows) >= args.skip + args.devices:
            # Resume after `--after`: alerts of earlier runs are not replayed to this one. With
            # `--skip`, this fleet is one of several: its devices keep their indices (and so
            # their source addresses) in the whole file.
            return [Device(index=i, device_id=r["id"], token=r["token"], inside=r["inside"], last_seq=args.after)
                    for i, r in enumerate(rows[: args.skip + args.devices]) if i >= args.skip]
    devices = await register(args.url, args.devices, args.outside, args.seed)
    if saved is not None:
        saved.write_text(json.dumps([{"id": d.device_id, "token": d.token, "inside": d.inside} for d in devices]))
    return devices


def source_address(index: int) -> str:
    """Spread the fleet over 127.0.0.2-201 so that 20,000 connections (and the TIME_WAITs of
    a previous run) never exhaust one address's ephemeral ports."""
    return f"127.0.0.{2 + index % SOURCE_ADDRESSES}"


async def open_client(url: str, protocol: str, device: Device, events: FleetEvents) -> LiveClient:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path, factory, _ = PROTOCOLS[protocol]
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: factory(device, f"{host}:{port}", path, events), host, port,
        local_addr=(source_address(device.index), 0),
    )
    return client


async def connect_all(
    url: str, devices: list[Device], events: FleetEvents, protocol: str, timeout_s: float
) -> list[LiveClient]:
    """Open one connection per device, at most CONNECT_PARALLEL at once, until all synced."""
    gate = asyncio.Semaphore(CONNECT_PARALLEL)
    clients: list[LiveClient] = []

    async def open_one(device: Device) -> None:
        async with gate:
            client = await open_client(url, protocol, device, events)
            clients.append(client)
            await client.headers_seen

    async with asyncio.timeout(timeout_s):
        async with asyncio.TaskGroup() as tasks:
            for device in devices:
                tasks.create_task(open_one(device))
        await events.all_synced.wait()
    return clients


class Reconnector:
    """After a lost connection: wait a full-jitter delay, then the next URL, resuming by seq.

    Mirrors tocsin's client (client/backoff.py: base 0.5 s, doubling, full jitter).
    """

    def __init__(self, urls: list[str], protocol: str, events: FleetEvents, clients: list[LiveClient],
                 base_s: float, deadline_s: float) -> None:
        self.urls = urls
        self.protocol = protocol
        self.events = events
        self.clients = clients
        self.base_s = base_s
        self.deadline_s = deadline_s
        self.tasks: set[asyncio.Task[None]] = set()
        self.failures: list[str] = []

    def __call__(self, device: Device) -> None:
        task = asyncio.get_running_loop().create_task(self._again(device))
        self.tasks.add(task)  # owned here; cancelled in close()
        task.add_done_callback(self.tasks.discard)

    async def _again(self, device: Device) -> None:
        attempt = 0
        started = time.monotonic()
        while not self.events.stopping and time.monotonic() - started < self.deadline_s:
            await asyncio.sleep(random.uniform(0, min(30.0, self.base_s * 2**attempt)))
            device.reconnects += 1
            url = self.urls[(device.index + device.reconnects) % len(self.urls)]
            try:
                client = await open_client(url, self.protocol, device, self.events)
                self.clients.append(client)
                async with asyncio.timeout(10):
                    await client.headers_seen
                return
            except (OSError, ConnectionError, TimeoutError) as exc:
                attempt += 1
                if len(self.failures) < 20:
                    self.failures.append(f"{device.device_id} -> {url}: {exc!r}"[:200])
        # Gave up (stopping, or past the deadline): the failover report counts it as missing.

    def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()


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


def burst_stats(devices: list[Device], seqs: list[int], issued_at: float, first: list[int] | None = None) -> dict[str, Any]:
    """A burst of messages issued back to back: deliveries per second until the last one.

    With `first` (seqs that should go out first, e.g. a burst's Actual Extreme alerts): when
    each seq reached its last device, and on how many devices all of `first` came before
    every other seq of the burst (by order of arrival, not by clock: one read holds several).
    """
    inside = [d for d in devices if d.inside]
    times = [d.received[s] for d in inside for s in seqs if s in d.received]
    last = max(times) if times else float("nan")
    expected = len(inside) * len(seqs)
    ordered: dict[str, Any] = {}
    if first is not None:
        wanted, ahead = set(seqs), set(first)
        ordered["last_ms_by_seq"] = {
            str(s): (max(d.received[s] for d in inside if s in d.received) - issued_at) * 1000
            for s in seqs if any(s in d.received for d in inside)
        }
        arrivals = [[s for s in d.received if s in wanted] for d in inside]
        ordered["first_ahead_devices"] = sum(1 for got in arrivals if _all_first(got, ahead))
        # Where each of `first` arrived among the burst's seqs (0 = first), on the worst
        # device; and on how many devices the order of arrival was not the order of seqs.
        ordered["first_worst_positions"] = {
            str(s): max((got.index(s) for got in arrivals if s in got), default=-1) for s in first
        }
        ordered["out_of_seq_order_devices"] = sum(1 for got in arrivals if got != sorted(got))
    return {
        **ordered,
        "messages": len(seqs),
        "expected": expected,
        "deliveries": len(times),
        "missing": expected - len(times),
        "first_ms": (min(times) - issued_at) * 1000 if times else float("nan"),
        "last_ms": (last - issued_at) * 1000,
        "per_s": len(times) / (last - issued_at) if times else 0.0,
    }


def _all_first(arrivals: list[int], first: set[int]) -> bool:
    """Every seq of `first` is in `arrivals` and before every other one."""
    return set(arrivals[: len(first)]) == first


def failover_stats(devices: list[Device], killed_at: float, issued: dict[int, float],
                   ids: dict[int, str] | None = None) -> dict[str, Any]:
    """Per device: from the kill until it is back (synced elsewhere) and holds every alert
    issued up to then; the gap is the largest of these over the devices that were cut off.

    With `ids` (seq -> alert id), an early copy counts as the alert (tocsin sends one while the
    stream cannot store: an election), and each alert issued after the kill is timed from its
    issue, or from the device's return if that came later, until the device has it: the
    "new alert" figure (what an election costs a device that is connected)."""
    ids = ids or {}
    for d in devices:
        for seq, alert_id in ids.items():
            got = d.early.get(alert_id)
            if got is not None and got < d.received.get(seq, float("inf")):
                d.received[seq] = got
    cut = [d for d in devices if d.lost_at is not None and d.lost_at >= killed_at - 1]
    back, gaps, missing = [], [], 0
    for d in cut:
        if d.resynced_at is None:
            missing += 1
            continue
        back.append(d.resynced_at - killed_at)
        owed = [s for s, at in issued.items() if at <= d.resynced_at]
        if any(s not in d.received for s in owed):
            missing += 1
            continue
        gaps.append(max([d.resynced_at, *(d.received[s] for s in owed)]) - killed_at)
    back.sort()
    gaps.sort()
    after = [s for s, at in issued.items() if at > killed_at]
    waits = sorted(
        d.received[s] - max(issued[s], d.resynced_at or 0.0)
        for d in devices if d.inside for s in after if s in d.received
    )
    all_missing = sum(1 for d in devices if d.inside for s in issued if s not in d.received)
    return {
        "devices": len(devices),
        "cut_off": len(cut),
        "reconnected": len(back),
        "caught_up": len(gaps),
        "not_caught_up": missing,
        "reconnect_p50_s": percentile(back, 50),
        "reconnect_max_s": back[-1] if back else float("nan"),
        "gap_p50_s": percentile(gaps, 50),
        "gap_max_s": gaps[-1] if gaps else float("nan"),
        "alerts_issued": len(issued),
        "alerts_after_kill": len(after),
        "new_alert_p50_s": percentile(waits, 50),
        "new_alert_max_s": waits[-1] if waits else float("nan"),
        "early_copies": sum(len(d.early) for d in devices),
        "deliveries_missing": all_missing,
        "duplicates": sum(len(d.duplicates) for d in devices),
    }


def emit(kind: str, **fields: Any) -> None:
    print(json.dumps({"type": kind, **fields}), flush=True)


async def stdin_lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def wait_all(events: FleetEvents, seqs: list[int], expected: int, timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            for seq in seqs:
                await events.wait_for(seq, expected).wait()
    except TimeoutError:
        pass


async def serve_commands(devices: list[Device], events: FleetEvents, round_timeout_s: float) -> dict[str, Any]:
    """Answer commands until `stop` (or stdin closes); returns the totals."""
    commands = await stdin_lines()
    seqs: list[int] = []
    expected = sum(1 for d in devices if d.inside)
    cpu_mark = cpu_s()
    while line := await commands.readline():
        command = json.loads(line)
        kind = command["cmd"]
        if kind == "stop":
            break
        if kind == "mark":  # start counting CPU from here
            cpu_mark = cpu_s()
            emit("mark")
            continue
        if kind == "round":
            seq, issued_at = int(command["seq"]), float(command["issued_at"])
            seqs.append(seq)
            await wait_all(events, [seq], expected, round_timeout_s)
            await asyncio.sleep(SETTLE_S)
            stats = round_stats(devices, seq, issued_at)
        elif kind == "burst":
            burst = [int(s) for s in command["seqs"]]
            seqs += burst
            await wait_all(events, burst, expected, round_timeout_s)
            await asyncio.sleep(SETTLE_S)
            first = [int(s) for s in command["first"]] if "first" in command else None
            stats = burst_stats(devices, burst, float(command["issued_at"]), first)
        elif kind == "failover":
            issued = {int(s): float(t) for s, t in command["issued"].items()}
            seqs += list(issued)
            await wait_all(events, sorted(issued), expected, float(command.get("timeout_s", 30)))
            await asyncio.sleep(SETTLE_S)
            ids = {int(s): str(i) for s, i in command.get("ids", {}).items()}
            stats = failover_stats(devices, float(command["killed_at"]), issued, ids)
        else:
            raise ValueError(f"unknown command {kind!r}")
        # A message usually arrives before its command does, so CPU is counted from the end
        # of the previous command (or from `mark`): that interval holds the receipt work.
        now_cpu = cpu_s()
        emit(kind, round=command.get("round"), cpu_s=now_cpu - cpu_mark, **stats)
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
    devices = await devices_for(args)
    registered_s = time.monotonic() - started
    emit("registered", devices=len(devices), seconds=registered_s, cpu_s=cpu_s())
    events = FleetEvents(len(devices))
    started = time.monotonic()
    clients = await connect_all(args.url, devices, events, args.protocol, args.connect_timeout)
    reconnector = None
    if args.reconnect:
        urls = [u.strip() for u in args.reconnect.split(",") if u.strip()]
        reconnector = Reconnector(urls, args.protocol, events, clients, args.reconnect_base, args.round_timeout)
        events.on_disconnect = reconnector
    emit(
        "ready", devices=len(devices), inside=sum(d.inside for d in devices), protocol=args.protocol,
        register_s=registered_s, connect_s=time.monotonic() - started, cpu_s=cpu_s(), nofile=nofile,
    )
    try:
        totals = await serve_commands(devices, events, args.round_timeout)
    finally:
        events.stopping = True
        if reconnector is not None:
            reconnector.close()
            totals_failures = reconnector.failures
        else:
            totals_failures = []
        for client in clients:
            client.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    emit("summary", cpu_s=cpu_s(), user_s=usage.ru_utime, system_s=usage.ru_stime,
         max_rss_mb=usage.ru_maxrss / 1024, reconnect_failures=totals_failures, **totals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="http://HOST:PORT, mqtt://HOST:PORT or nats://HOST:PORT")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--outside", type=float, default=0.0, help="share of devices outside the area (0..1)")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="sse")
    parser.add_argument("--tokens", default="", help="a JSON file of registered devices, reused when it exists")
    parser.add_argument("--reconnect", default="", help="comma-separated URLs to reconnect to when a connection ends")
    parser.add_argument("--reconnect-base", type=float, default=0.5, help="full-jitter base delay, s")
    parser.add_argument("--after", type=int, default=0, help="with --tokens: resume after this seq")
    parser.add_argument("--skip", type=int, default=0, help="with --tokens: this fleet's devices start after this many")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--connect-timeout", type=float, default=300.0)
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

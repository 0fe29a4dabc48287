"""The simulated device fleet: hundreds of devices, each with its own cursor and seen-set.

Runs as its own process (`python -m tocsin.faults.fleet CONFIG_JSON`) on uvloop, so that it
never shares the issuer's event loop. Each device registers on its home node, holds one SSE
connection (raw asyncio streams, HTTP/1.1 chunked), verifies every alert's Ed25519
signature and identity, shows an alert once per identity, and when its connection drops or
goes silent it moves to another node after a full-jitter backoff, resuming with
`Last-Event-ID: <cursor>`. Like the real client it also moves, to a node whose `/readyz`
is green, when its node's keepalives say it stopped delivering (`client/freshness.py`), and
it reads events with the client's parser (`client/sse.py`) from its raw HTTP chunks. Every
event it receives is one history line (`k: d`).

It talks JSON lines: stdout `registered`, `ready` (every device synced), `awaited`,
`summary`; stdin `{"cmd": "await", "ids": [...], "timeout_s": 30}` and `{"cmd": "stop"}`.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import resource
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tocsin.client.freshness import KEEPALIVE, Freshness, DeliveringNodes, move_target
from tocsin.client.sse import SseEvent, SseParser
from tocsin.faults.history import History
from tocsin.signing import keys_by_kid, verify
from tocsin.store.base import alert_id_for

# Points: inside central Paris (the workload's alert area) or in Lyon, far from it.
INSIDE_BOX = (48.82, 2.28, 48.88, 2.39)
OUTSIDE_BOX = (45.72, 4.78, 45.79, 4.88)
REGISTER_PARALLEL = 16
CONNECT_TIMEOUT_S = 3.0
BACKOFF_BASE_S = 0.25
BACKOFF_CAP_S = 4.0

_IDENTIFIER = re.compile(r"<identifier>([^<]*)</identifier>")
_SENDER = re.compile(r"<sender>([^<]*)</sender>")
_EXPIRES = re.compile(r"<expires>([^<]*)</expires>")
_DATA_SEQ = re.compile(r'\{"seq":(\d+),')
_EARLY = '{"seq":null,'


@dataclass(slots=True, kw_only=True)
class Device:
    index: int
    device_id: str
    token: str
    inside: bool
    home: int
    node: int = 0
    cursor: int = 0
    # The last event id received (`seq.idprefix`): what goes back as Last-Event-ID.
    event_id: str = ""
    attempt: int = 0
    synced: bool = False
    # How long without a byte before the link is dead: the fleet's idle timeout until a
    # keepalive announces the node's interval.
    silence_s: float = 8.0
    # The ready node to go to next, when its node's keepalive said it stopped delivering.
    move_to: int | None = None
    seen: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Checked:
    """What a device concludes from an event's data (cached: same bytes, same answer)."""

    sig_ok: bool
    identity_ok: bool
    alert_id: str
    expires: float | None


class Fleet:
    def __init__(self, config: dict[str, Any]) -> None:
        self.urls: list[str] = config["urls"]
        self.count = int(config["devices"])
        self.outside_share = float(config.get("outside", 0.1))
        self.homes: list[int] = config.get("homes") or list(range(len(self.urls)))
        self.idle_timeout_s = float(config.get("idle_timeout_s", 8.0))
        self.rng = random.Random(int(config.get("seed", 1)))
        self.history = History(Path(config["history"]))
        self.devices: list[Device] = []
        self.jwks: dict[str, dict[str, Any]] = {}
        self.checked: dict[str, Checked] = {}
        self.displayed: dict[str, int] = defaultdict(int)  # alert id -> inside devices showing it
        self.stopping = asyncio.Event()
        self.synced = asyncio.Event()
        self.synced_count = 0
        self.reconnects = 0
        self.moves = 0
        self.ready: DeliveringNodes | None = None  # set by `run`, which owns its HTTP client

    # -- setup --------------------------------------------------------------------------

    async def register(self) -> None:
        outside = set(self.rng.sample(range(self.count), round(self.count * self.outside_share)))
        slots: list[Device | None] = [None] * self.count
        todo = iter(range(self.count))

        async def worker(http: httpx.AsyncClient) -> None:
            for i in todo:
                home = self.homes[i % len(self.homes)]
                box = OUTSIDE_BOX if i in outside else INSIDE_BOX
                point = {"lat": self.rng.uniform(box[0], box[2]), "lon": self.rng.uniform(box[1], box[3])}
                body = await self._post_device(http, home, point)
                slots[i] = Device(index=i, device_id=body["id"], token=body["token"], inside=i not in outside,
                                  home=home, node=home, silence_s=self.idle_timeout_s)

        async with httpx.AsyncClient(timeout=10) as http:
            await self._fetch_keys(http)
            async with asyncio.TaskGroup() as tasks:
                for _ in range(min(REGISTER_PARALLEL, self.count)):
                    tasks.create_task(worker(http))
        self.devices = [d for d in slots if d is not None]
        self.history.record("fleet", devices=[{"i": d.index, "id": d.device_id, "inside": d.inside, "home": d.home}
                                              for d in self.devices])

    async def _post_device(self, http: httpx.AsyncClient, home: int, point: dict[str, float]) -> dict[str, Any]:
        return await post_device(http, self.urls, home, {"points": [point]})

    async def _fetch_keys(self, http: httpx.AsyncClient) -> None:
        for url in self.urls:
            try:
                response = await http.get(f"{url}/.well-known/tocsin/keys")
                self.jwks.update(keys_by_kid(response.json().get("keys")))
                return
            except (httpx.HTTPError, ValueError):
                continue

    # -- one device ---------------------------------------------------------------------

    async def run_device(self, device: Device) -> None:
        """Connect, read, fail over; bounded by the stop event and a timeout on every read."""
        while not self.stopping.is_set():
            reason = await self._session(device)
            if self.stopping.is_set():
                return
            self.history.record("conn", dev=device.index, node=device.node, up=False, why=reason[:160])
            device.attempt += 1
            self.reconnects += 1
            # Full jitter (AWS architecture blog, "Exponential Backoff And Jitter").
            delay = random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**device.attempt))
            others = [i for i in range(len(self.urls)) if i != device.node]
            if device.move_to is not None:
                device.node, device.move_to = device.move_to, None
            elif others:
                device.node = random.choice(others)
            try:
                await asyncio.wait_for(self.stopping.wait(), delay)
            except TimeoutError:
                pass

    async def _session(self, device: Device) -> str:
        parts = urlsplit(self.urls[device.node])
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
                writer.write(
                    (f"GET /api/v1/stream HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
                     f"Authorization: Bearer {device.token}\r\nLast-Event-ID: {device.event_id or device.cursor}\r\n\r\n").encode()
                )
                head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            if status != 200:
                return f"HTTP {status}"
            chunked = b"chunked" in head.lower()
            self.history.record("conn", dev=device.index, node=device.node, up=True, cursor=device.cursor)
            await self._read(device, reader, chunked)
            return "node not delivering: moving to a ready node" if device.move_to is not None else "closed by server"
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as exc:
            return repr(exc)
        except TimeoutError:
            return "silent: no byte for the idle timeout" if writer else "connect timeout"
        finally:
            if writer is not None:
                writer.close()

    async def _read(self, device: Device, reader: asyncio.StreamReader, chunked: bool) -> None:
        parser = SseParser(last_event_id=device.event_id)
        while not self.stopping.is_set():
            async with asyncio.timeout(device.silence_s):
                if chunked:
                    size = int((await reader.readline()).split(b";", 1)[0], 16)
                    if size == 0:
                        return
                    data = (await reader.readexactly(size + 2))[:-2]
                else:
                    data = await reader.read(65536)
                    if not data:
                        return
            for event in parser.feed(data):
                if event.event == KEEPALIVE:
                    if await self._on_keepalive(device, event):
                        return
                else:
                    self._on_event(device, event)

    async def _on_keepalive(self, device: Device, event: SseEvent) -> bool:
        """True when the device should leave its node now (the rule of the real client)."""
        try:
            payload = json.loads(event.data)
        except ValueError:
            return False
        if not isinstance(payload, dict) or self.ready is None:
            return False
        freshness = Freshness.from_json(payload)
        device.silence_s = freshness.silence_limit_s(self.idle_timeout_s)
        url = self.urls[device.node]
        others = [u for u in self.urls if u != url]
        # A random order of the others, so that the devices of a bad node spread out.
        target = await move_target(freshness, url, [url, *random.sample(others, len(others))], self.ready)
        if target is None:
            return False
        device.move_to = self.urls.index(target)
        self.moves += 1
        self.history.record("move", dev=device.index, node=device.node, to=device.move_to,
                            canary_age_s=freshness.canary_age_s)
        return True

    def _on_event(self, device: Device, event: SseEvent) -> None:
        if event.event == "synced":
            device.attempt = 0
            if not device.synced:
                device.synced = True
                self.synced_count += 1
                if self.synced_count >= len(self.devices):
                    self.synced.set()
        elif event.event == "alert" and event.data.startswith(_EARLY):
            # An early copy (pipeline/early.py): shown by identity, the cursor stays.
            self._on_alert(device, None, event.data)
        elif event.event == "alert" and event.last_event_id:
            device.event_id = event.last_event_id
            # The alert's own seq starts its data (`{"seq":N,`); the event id may be a burst
            # cursor (`floor.prefix~s1~s2`: pipeline/replay.py), whose first part is not it.
            seq = _DATA_SEQ.match(event.data)
            self._on_alert(device, int(seq.group(1)) if seq else int(device.event_id.split(".")[0]), event.data)

    def _on_alert(self, device: Device, seq: int | None, key: str) -> None:
        checked = self.checked.get(key)
        if checked is None:
            checked = self.checked[key] = self._check(key)
        stale = seq is not None and seq <= device.cursor
        if seq is not None:
            device.cursor = max(device.cursor, seq)
        if not checked.sig_ok:
            why = "bad signature"
        elif not checked.identity_ok:
            why = "bad identity"
        elif checked.expires is not None and checked.expires <= time.time():
            why = "expired"
        elif checked.alert_id in device.seen:
            why = "seen"
        else:
            why = ""
            device.seen.add(checked.alert_id)
            if device.inside:
                self.displayed[checked.alert_id] += 1
        self.history.record("d", dev=device.index, node=device.node, seq=seq, id=checked.alert_id,
                            disp=not why, why=why, stale=stale)

    def _check(self, data: str) -> Checked:
        try:
            body = json.loads(data)
            cap = str(body["cap"])
            sig_ok = verify(self.jwks, str(body["kid"]), cap.encode("utf-8"), str(body["sig"]))
            ident, sender = _IDENTIFIER.search(cap), _SENDER.search(cap)
            alert_id = str(body["id"])
            identity_ok = bool(ident and sender and alert_id_for(sender.group(1), ident.group(1)) == alert_id)
            expires = _EXPIRES.search(cap)
            when = datetime.fromisoformat(expires.group(1)).astimezone(UTC).timestamp() if expires else None
            return Checked(sig_ok=sig_ok, identity_ok=identity_ok, alert_id=alert_id, expires=when)
        except (ValueError, KeyError, TypeError):
            return Checked(sig_ok=False, identity_ok=False, alert_id="?", expires=None)

    # -- control ------------------------------------------------------------------------

    async def await_ids(self, ids: list[str], timeout_s: float) -> dict[str, int]:
        """Wait until every inside device shows these alerts; return those still missing."""
        inside = sum(1 for d in self.devices if d.inside)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self.displayed[i] >= inside for i in ids):
                break
            await asyncio.sleep(0.2)
        return {i: inside - self.displayed[i] for i in ids if self.displayed[i] < inside}


async def post_device(http: httpx.AsyncClient, urls: list[str], home: int, body: dict[str, Any]) -> dict[str, Any]:
    """POST /api/v1/devices, the home node first, then the others (bounded); the 201's body."""
    last: str = ""
    for attempt in range(8):
        url = urls[(home + attempt) % len(urls)]
        try:
            response = await http.post(f"{url}/api/v1/devices", json=body)
            if response.status_code == 201:
                found: dict[str, Any] = response.json()
                return found
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        await asyncio.sleep(0.2 * (attempt + 1))
    raise RuntimeError(f"device registration failed: {last}")


def emit(kind: str, **fields: Any) -> None:
    print(json.dumps({"type": kind, **fields}), flush=True)


async def run(config: dict[str, Any]) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    fleet = Fleet(config)
    await fleet.register()
    emit("registered", devices=len(fleet.devices))
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    try:
        async with httpx.AsyncClient() as http, asyncio.TaskGroup() as tasks:
            fleet.ready = DeliveringNodes(http)
            running = [tasks.create_task(fleet.run_device(device)) for device in fleet.devices]
            try:
                async with asyncio.timeout(float(config.get("connect_timeout_s", 60))):
                    await fleet.synced.wait()
                emit("ready", devices=len(fleet.devices), inside=sum(d.inside for d in fleet.devices))
            except TimeoutError:
                emit("ready", devices=len(fleet.devices), synced=fleet.synced_count, partial=True)
            while line := await commands.readline():
                command = json.loads(line)
                if command["cmd"] == "stop":
                    break
                if command["cmd"] == "await":
                    missing = await fleet.await_ids(command["ids"], float(command.get("timeout_s", 30)))
                    emit("awaited", missing=missing)
            fleet.stopping.set()
            for task in running:
                task.cancel()
    finally:
        fleet.history.close()
    emit("summary", devices=len(fleet.devices), reconnects=fleet.reconnects, moves=fleet.moves)


def main() -> None:
    config = json.loads(sys.argv[1])
    import uvloop

    uvloop.run(run(config))


if __name__ == "__main__":
    main()

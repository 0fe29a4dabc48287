"""Devices connected to this node over SSE or WebSocket, indexed by the cells they watch.

The hot path: an alert's event is encoded once per protocol, and the same bytes are
offered to every matching connection's bounded queue. A device that falls behind is
dropped (it resumes by event id) instead of slowing the others.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tocsin.audience import Audience

log = logging.getLogger(__name__)


class Protocol(StrEnum):
    SSE = "sse"
    WS = "ws"


_TRANSPORT_METHODS = ("write", "is_closing", "get_write_buffer_size", "abort")


def as_transport(candidate: object) -> asyncio.Transport | None:
    """The object if it has the transport methods the fast paths call, else None.

    By its methods, not isinstance: uvloop's TCPTransport is not an asyncio.Transport.
    """
    if candidate is None or not all(callable(getattr(candidate, m, None)) for m in _TRANSPORT_METHODS):
        return None
    return candidate  # type: ignore[return-value]


def http_chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk (RFC 9112 §7.1), for writing straight to a chunked response."""
    assert data, "an empty chunk would end the response"
    return b"%x\r\n%s\r\n" % (len(data), data)


def ws_text_frame(text: str) -> bytes:
    """One unfragmented WebSocket text frame, server to client (RFC 6455 §5.2).

    A server never masks its frames (§5.1), so the same bytes serve every device. Sent
    without compression (RSV1 clear), which permessage-deflate allows (RFC 7692 §6).
    """
    payload = text.encode()
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 1 << 16:
        header = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return header + payload


def keepalive_sse(freshness: dict[str, Any]) -> bytes:
    """A keepalive as an SSE event carrying the node's freshness (no id: it moves no cursor).

    A named event, not a comment, so that clients can read it; EventSource dispatches it
    only to a `keepalive` listener, and clients that do not know it skip it (docs/api.md).
    """
    return b"event: keepalive\ndata: " + json.dumps(freshness, separators=(",", ":")).encode() + b"\n\n"


def keepalive_ws(freshness: dict[str, Any]) -> str:
    """The same keepalive as a WebSocket message: `{"type":"keepalive", ...freshness}`."""
    return json.dumps({"type": "keepalive", **freshness}, separators=(",", ":"))


# Keepalive writes per batch before the loop yields: 10,000 devices in ten slices.
KEEPALIVE_BATCH = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One alert, encoded once for each protocol (and once as a ready HTTP chunk)."""

    seq: int
    status: str
    sse: bytes
    ws: str
    sse_chunk: bytes = b""
    ws_frame: bytes = b""

    def for_protocol(self, protocol: Protocol) -> bytes | str:
        return self.sse if protocol is Protocol.SSE else self.ws


_CLOSED = object()

Written = tuple[int, int, list["Connection"], list["Connection"]]


def _write_each_py(
    connections: list[Connection], seq: int, sse: Protocol, sse_bytes: bytes, ws_bytes: bytes
) -> Written:
    """The per-device loop, as `_fanout.write_each` does it in C (where that is not built).

    Returns (written over SSE, over WebSocket, connections to cut off, connections for
    `offer`: no transport, already dropped, or already at or past this seq).
    """
    sent_sse = sent_ws = 0
    to_drop: list[Connection] = []
    to_offer: list[Connection] = []
    for connection in connections:
        transport = connection.transport
        if transport is None or connection.dropped or seq <= connection.last_seq:
            to_offer.append(connection)
        elif transport.get_write_buffer_size() > connection.max_buffer or transport.is_closing():
            to_drop.append(connection)
        elif connection.protocol is sse:
            transport.write(sse_bytes)
            connection.last_seq = seq
            sent_sse += 1
        else:
            transport.write(ws_bytes)
            connection.last_seq = seq
            sent_ws += 1
    return sent_sse, sent_ws, to_drop, to_offer


write_each: Callable[[list[Connection], int, Protocol, bytes, bytes], Written]
try:
    from tocsin.channels._fanout import write_each  # type: ignore[no-redef]
except ImportError:  # not built (no compiler where it was installed): the same loop in Python
    write_each = _write_each_py


@dataclass(eq=False, slots=True, kw_only=True)
class Connection:
    """One device's live connection: its cells, audience and a bounded outgoing queue."""

    device_id: str
    cells: frozenset[str]
    audience: Audience
    protocol: Protocol
    depth: int
    # The highest seq queued; never queue it or an earlier one again.
    last_seq: int = 0
    # Set on the fast paths (SSE, WebSocket): events are written straight to the socket as
    # HTTP chunks or WebSocket frames, no task or queue per device; a device whose unsent
    # bytes pass `max_buffer` is cut off (it resumes by event id).
    transport: asyncio.Transport | None = None
    # The transport's socket object (`fileno()` is -1 once it is closed), for the C loop's send().
    sock: Any = None
    max_buffer: int = 256 * 1024
    queue: asyncio.Queue[object] = field(init=False)
    dropped: bool = False

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.depth)

    def use(self, transport: asyncio.Transport) -> None:
        """Take the fast path: alert bytes go straight to this transport."""
        self.transport = transport
        sock = transport.get_extra_info("socket")
        self.sock = sock if callable(getattr(sock, "fileno", None)) else None

    def offer(self, event: Event) -> bool:
        """Queue the event unless sent already; False when the device was dropped.

        The queued path: fast-path connections get new events from `write_each`, which
        leaves to this only those already dropped or already at or past the event.
        """
        if self.dropped:
            return False
        if event.seq <= self.last_seq:
            return True
        if not self._enqueue(event):
            return False
        self.last_seq = event.seq
        return True

    def _enqueue(self, event: Event) -> bool:
        try:
            self.queue.put_nowait(event.for_protocol(self.protocol))
        except asyncio.QueueFull:
            self.drop()
            return False
        return True

    def offer_early(self, event: Event) -> bool:
        """Send an early copy (pipeline/early.py): it has no seq, so none is checked or kept
        (`last_seq` stays); False when the device was dropped, or is too far behind and is now."""
        if self.dropped:
            return False
        transport = self.transport
        if transport is None:
            return self._enqueue(event)
        if transport.get_write_buffer_size() > self.max_buffer or transport.is_closing():
            self.drop()
            return False
        transport.write(event.sse_chunk if self.protocol is Protocol.SSE else event.ws_frame)
        return True

    def write_raw(self, data: bytes) -> None:
        """Write already framed bytes (replay, keepalive) on the fast path."""
        if self.transport is not None and not self.dropped and not self.transport.is_closing():
            self.transport.write(data)

    def drop(self) -> None:
        """Close this connection at the next read; the device reconnects and resumes."""
        if not self.dropped and self.transport is not None:
            self.dropped = True
            self.transport.abort()  # unsent bytes are dropped with it; the device resumes
            return
        if not self.dropped:
            self.dropped = True
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(_CLOSED)

    async def next(self, timeout_s: float) -> bytes | str | None:
        """The next encoded event; None on keepalive timeout. Raises ConnectionDropped."""
        try:
            async with asyncio.timeout(timeout_s):
                item = await self.queue.get()
        except TimeoutError:
            return None
        if item is _CLOSED:
            raise ConnectionDropped(self.device_id)
        assert isinstance(item, (bytes, str))
        return item


class ConnectionDropped(Exception):
    """The device fell too far behind and was dropped; it resumes by event id."""


@dataclass(slots=True)
class LiveRegistry:
    """All live connections on this node, by cell."""

    # False while this node sheds its devices (not ready in a cluster): new streams refused.
    accepting: bool = True
    by_cell: dict[str, set[Connection]] = field(default_factory=lambda: defaultdict(set))
    count: int = 0
    # Counters read by /metrics and /status: per protocol, connected now, events queued
    # to a connection and devices dropped for falling behind.
    connected: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    queued: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    dropped: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, connection: Connection) -> None:
        for cell in connection.cells:
            self.by_cell[cell].add(connection)
        self.count += 1
        self.connected[connection.protocol] += 1

    def remove(self, connection: Connection) -> None:
        for cell in connection.cells:
            members = self.by_cell.get(cell)
            if members is not None:
                members.discard(connection)
                if not members:
                    del self.by_cell[cell]
        self.count -= 1
        self.connected[connection.protocol] -= 1

    @property
    def dropped_total(self) -> int:
        """Devices dropped for falling behind, every protocol."""
        return sum(self.dropped.values())

    async def keep_alive(self, interval_s: float, freshness: Callable[[], dict[str, Any]]) -> None:
        """Every interval, one keepalive on every fast-path connection (one timer for all).

        Its own task, independent of the follower: a node whose fan-out is stuck still
        tells its devices how stale its delivery is, so that they can move. Each tick
        encodes the keepalive once per protocol and yields between batches.
        """
        while True:
            await asyncio.sleep(interval_s)
            body = freshness()
            sse, ws = http_chunk(keepalive_sse(body)), ws_text_frame(keepalive_ws(body))
            connections = list({c for members in self.by_cell.values() for c in members})
            for start in range(0, len(connections), KEEPALIVE_BATCH):
                if start:
                    await asyncio.sleep(0)
                for connection in connections[start : start + KEEPALIVE_BATCH]:
                    connection.write_raw(sse if connection.protocol is Protocol.SSE else ws)

    def close_all(self) -> None:
        """End every live connection (shutdown): devices reconnect, to this node or another."""
        for connection in {c for members in self.by_cell.values() for c in members}:
            connection.drop()

    def matching(self, touches: Callable[[str], bool]) -> set[Connection]:
        """Connections with at least one cell the alert's cover touches."""
        found: set[Connection] = set()
        for cell, members in self.by_cell.items():
            if touches(cell):
                found |= members
        return found

    def publish(self, event: Event, connections: Iterable[Connection], *, early: bool = False) -> int:
        """Offer one event to the given connections (those whose audience receives its
        status); returns how many took it.

        The hot loop (`write_each`: in C when built, else `_write_each_py`): per device, the
        checks and one write of bytes encoded once per protocol. No logging, no task, no
        await; counters are summed once per call. Connections off the fast path, or
        already past this seq, go through `offer`; those too far behind are cut off.
        `early`: an early copy (pipeline/early.py), which has no seq to check or keep.
        """
        if event.status == "Actual":
            targets = connections if isinstance(connections, list) else list(connections)
        else:
            targets = [c for c in connections if c.audience.receives(event.status)]
        if early:
            return self._publish_early(event, targets)
        sent_sse, sent_ws, to_drop, to_offer = write_each(
            targets, event.seq, Protocol.SSE, event.sse_chunk, event.ws_frame
        )
        sent = {Protocol.SSE: sent_sse, Protocol.WS: sent_ws}
        lost = {Protocol.SSE: 0, Protocol.WS: 0}
        for connection in to_drop:
            connection.drop()
            lost[connection.protocol] += 1
        for connection in to_offer:
            if connection.offer(event):
                sent[connection.protocol] += 1
            else:
                lost[connection.protocol] += 1
        for protocol in (Protocol.SSE, Protocol.WS):
            if sent[protocol]:
                self.queued[protocol] += sent[protocol]
            if lost[protocol]:
                self.dropped[protocol] += lost[protocol]
        return sent[Protocol.SSE] + sent[Protocol.WS]

    def _publish_early(self, event: Event, connections: list[Connection]) -> int:
        """`publish` of an early copy: each connection through `offer_early`, counted alike."""
        sent = 0
        for connection in connections:
            if connection.offer_early(event):
                sent += 1
                self.queued[connection.protocol] += 1
            else:
                self.dropped[connection.protocol] += 1
        return sent

    async def publish_in_batches(self, event: Event, connections: Iterable[Connection], batch: int, *,
                                 early: bool = False) -> int:
        """`publish`, yielding to the event loop after every `batch` connections.

        So that one alert's fan-out to many devices does not hold up the rest of the node
        (the issuer's 201, other requests, reconnecting devices) for its whole length.
        """
        delivered = 0
        pending = list(connections)
        for start in range(0, len(pending), batch):
            if start:
                await asyncio.sleep(0)
            delivered += self.publish(event, pending[start : start + batch], early=early)
        return delivered

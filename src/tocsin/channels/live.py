"""Devices connected to this node over SSE or WebSocket, indexed by the cells they watch.

The hot path: an alert's event is encoded once per protocol, and the same bytes are
offered to every matching connection's bounded queue. A device that falls behind is
dropped (it resumes by event id) instead of slowing the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

log = logging.getLogger(__name__)


class Protocol(StrEnum):
    SSE = "sse"
    WS = "ws"


@dataclass(frozen=True, slots=True, kw_only=True)
class Audience:
    """Which statuses a device receives: Actual always; Test and Exercise on opt-in."""

    tests: bool = False
    canary: bool = False

    def receives(self, status: str) -> bool:
        if status == "Actual":
            return True
        if status in ("Test", "Exercise"):
            return self.tests
        if status == "System":
            return self.canary
        return False


def http_chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk (RFC 9112 §7.1), for writing straight to a chunked response."""
    assert data, "an empty chunk would end the response"
    return b"%x\r\n%s\r\n" % (len(data), data)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One alert, encoded once for each protocol (and once as a ready HTTP chunk)."""

    seq: int
    status: str
    sse: bytes
    ws: str
    sse_chunk: bytes = b""

    def for_protocol(self, protocol: Protocol) -> bytes | str:
        return self.sse if protocol is Protocol.SSE else self.ws


_CLOSED = object()


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
    # Set for SSE on the fast path: events are written straight to the socket as HTTP
    # chunks, no task or queue per device; a device whose unsent bytes pass
    # `max_buffer` is cut off (it resumes by event id).
    transport: asyncio.Transport | None = None
    max_buffer: int = 256 * 1024
    queue: asyncio.Queue[object] = field(init=False)
    dropped: bool = False

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.depth)

    def offer(self, event: Event) -> bool:
        """Queue the event unless sent already; False when the device was dropped."""
        if self.dropped:
            return False
        if event.seq <= self.last_seq:
            return True
        if self.transport is not None:
            return self._write(event)
        try:
            self.queue.put_nowait(event.for_protocol(self.protocol))
        except asyncio.QueueFull:
            self.drop()
            return False
        self.last_seq = event.seq
        return True

    def _write(self, event: Event) -> bool:
        transport = self.transport
        assert transport is not None
        if transport.is_closing() or transport.get_write_buffer_size() > self.max_buffer:
            self.drop()
            return False
        transport.write(event.sse_chunk)
        self.last_seq = event.seq
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

    by_cell: dict[str, set[Connection]] = field(default_factory=lambda: defaultdict(set))
    count: int = 0
    dropped_total: int = 0
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

    async def keep_alive(self, interval_s: float, frame: bytes) -> None:
        """Every interval, one keepalive on every fast-path connection (one timer for all)."""
        while True:
            await asyncio.sleep(interval_s)
            for connection in {c for members in self.by_cell.values() for c in members}:
                connection.write_raw(frame)

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

    def publish(self, event: Event, connections: Iterable[Connection]) -> int:
        """Offer one event to the given connections; returns how many took it."""
        delivered = 0
        for connection in connections:
            if not connection.audience.receives(event.status):
                continue
            if connection.offer(event):
                delivered += 1
                self.queued[connection.protocol] += 1
            else:
                self.dropped_total += 1
                self.dropped[connection.protocol] += 1
        return delivered

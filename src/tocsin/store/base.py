"""The small values and interfaces the stages use to reach the replicated store."""

from __future__ import annotations

import asyncio

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NewType, Protocol

if TYPE_CHECKING:  # audit.py uses this module's small values
    from tocsin.store.audit import AuditLog

AlertId = NewType("AlertId", str)


def alert_id_for(sender: str, identifier: str) -> AlertId:
    """An alert's id: a digest of its CAP identity, the same on every node and retry."""
    digest = hashlib.sha256(f"{sender}\n{identifier}".encode()).hexdigest()
    return AlertId(digest[:32])


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """What tocsin stores for an alert: the signed CAP bytes and who accepted them."""

    alert_id: AlertId
    # Canonical CAP 1.2 XML rendered by tocsin, UTF-8; the signature covers these bytes.
    payload: bytes
    sig: str
    kid: str
    issuer: str
    node: str
    accepted_at: datetime
    # When the alert stops being shown (its CAP expiry, or sent + the default lifetime);
    # carried in a header so that a follower skips an expired alert without parsing it.
    expires_at: datetime | None = None
    # When the stream lets it go (per-message TTL); None: never (an envelope read back).
    retain_until: datetime | None = None
    # The compacted H3 cells the alert's drawn areas cover, computed once at accept and
    # carried in a header, so that no follower computes it again; None: not carried (an
    # alert without polygon or circle, or one stored before covers were carried).
    cover: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Stored:
    """An envelope at its place in the stream; `seq` is the device-visible event id."""

    seq: int
    envelope: Envelope
    created: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamHealth:
    """What the store says about the alerts stream: its end, usage, leader and replicas."""

    last_seq: int
    replicas: int
    leader: str | None
    # (peer name, current and online) for each follower; empty with R1.
    peers: tuple[tuple[str, bool], ...] = ()
    messages: int = 0
    bytes: int = 0
    max_bytes: int = 0

    @property
    def has_quorum(self) -> bool:
        """A leader answered, and with R>1 a majority (leader included) is current."""
        if self.replicas <= 1:
            return True
        current = 1 + sum(1 for _, ok in self.peers if ok)
        return self.leader is not None and current >= self.replicas // 2 + 1

    @property
    def usage(self) -> float:
        """The share of the stream's byte limit in use (0 when it has none)."""
        return self.bytes / self.max_bytes if self.max_bytes > 0 else 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerHealth:
    """A durable consumer's backlog: unacked deliveries against its bound."""

    name: str
    ack_pending: int
    max_ack_pending: int
    pending: int

    @property
    def is_at_max_ack_pending(self) -> bool:
        return self.max_ack_pending > 0 and self.ack_pending >= self.max_ack_pending


class Records(Protocol):
    """A replicated bucket of JSON records by key (device registrations, issuer accounts)."""

    async def get(self, key: str) -> dict[str, Any] | None:
        """The record, or None; retried for a while during a leader election.

        Raises:
            StoreUnavailable: no answer in time.
        """
        ...

    async def put(self, key: str, value: dict[str, Any]) -> None:
        """Write the record.

        Raises:
            RecordsFull: the bucket holds its byte limit (not retried).
            StoreUnavailable: no confirmation in time.
        """
        ...

    async def create(self, key: str, value: dict[str, Any], *, ttl_s: float | None = None) -> bool:
        """Create the key unless it exists; False when it already did (raises as `put`).
        `ttl_s`: the record leaves the bucket that long after this write."""
        ...

    async def get_versioned(self, key: str) -> tuple[dict[str, Any], int] | None:
        """The record and its revision, or None (raises as `get`)."""
        ...

    async def replace(self, key: str, value: dict[str, Any], revision: int, *, ttl_s: float | None = None) -> bool:
        """Write only if the record is still at `revision`; False when it moved on
        (`ttl_s` as for `create`)."""
        ...

    async def delete(self, key: str) -> None: ...

    async def mirror(self, into: MutableMapping[str, dict[str, Any]], *,
                     first_pass: asyncio.Event | None = None) -> None:
        """Keep `into` holding every record of the bucket, forever (a cache: never raises);
        `first_pass` is set once it holds what the bucket held when it began."""
        ...


class AlertStore(Protocol):
    """The alerts stream, as the stages use it: write once, read by id or seq, follow."""

    stream: str

    @property
    def is_connected(self) -> bool: ...

    async def put(self, envelope: Envelope) -> Stored: ...

    async def get(self, alert_id: AlertId) -> Stored: ...

    async def get_by_seq(self, seq: int) -> Stored | None: ...

    async def holds(self, alert_id: AlertId) -> bool: ...

    async def last_seq(self) -> int: ...

    async def stream_health(self) -> StreamHealth: ...

    async def consumer_health(self) -> list[ConsumerHealth]: ...

    def follow(self, after_seq: int = 0) -> AsyncIterator[Stored]: ...

    async def announce(self, envelope: Envelope) -> None:
        """An early copy of the envelope to every node, stored nowhere (pipeline/early.py)."""
        ...

    async def listen_early(self, take: Callable[[Envelope], Awaitable[object]], listening: asyncio.Event) -> None:
        """Hand each early copy heard to `take`, until cancelled."""
        ...


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """How far a device index is complete: every message of the bucket's stream created at
    `created` (its stream info's time, ISO 8601) up to and including stream sequence `seq`.
    A bucket deleted and made again is another stream: its `created` differs."""

    created: str
    seq: int


class DeviceSink(Protocol):
    """What the device feed fills: the node's audience index (api/device_index.py)."""

    # Set by the feed once known (after a full pass; from the start of a pass after a snapshot).
    position: StreamPosition | None

    def begin_pass(self) -> None:
        """A (re)started feed begins its first pass: records put from now on are met."""
        ...

    def end_pass(self, *, drop_unmet: bool = True) -> None:
        """The first pass met every record: drop the others (unless it began from a
        snapshot and read every message after it); the index is loaded."""
        ...

    def put_many(self, items: list[tuple[str, bytes]]) -> int:
        """Put (key, JSON value) pairs in order; returns how many values it left out."""
        ...

    def discard(self, key: str) -> None:
        """Drop the key if held (deleted or expired in the bucket)."""
        ...


class Store(AlertStore, Protocol):
    """Everything a node keeps on the replicated store: alerts, devices, issuer accounts."""

    @property
    def devices(self) -> Records: ...

    @property
    def accounts(self) -> Records: ...

    @property
    def pending(self) -> Records: ...

    @property
    def areas(self) -> Records: ...

    @property
    def routes(self) -> Records: ...

    @property
    def route_status(self) -> Records: ...

    # SOURCES: relayed CAP feeds and their status (sources/).
    @property
    def sources(self) -> Records: ...

    @property
    def source_status(self) -> Records: ...

    @property
    def audit(self) -> AuditLog: ...

    async def mirror_devices(self, into: DeviceSink, *, after: StreamPosition | None = None) -> None:
        """Keep `into` holding every device record, forever (a cache: never raises). With
        `after`, `into` holds a snapshot complete up to it: read only what followed, if the
        stream still holds it (else a full pass)."""
        ...

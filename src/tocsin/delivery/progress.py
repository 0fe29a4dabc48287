"""Delivery progress per alert and channel: planned, sent, failed by reason, receipts.

The planner calls `planned`, the dispatchers `finished`, `POST /api/v1/receipts` calls
`receipt`, and `GET /api/v1/alerts/{id}`, `tocsin status` and the metrics read `summary`.

Each node counts what it did itself, in memory, and `run` writes what changed about once a
second to the replicated progress bucket as one record per alert and node
(`<alert id>.<node>`). A node never writes another node's record, so no write races
another; `summary` reads an alert's records (at most one per node, a key filter
`<alert id>.*`) and sums them, with this node's latest counts in place of its record.

Nothing outlives its alert by more than `keep_s`: each record carries a per-message TTL
(until the alert expires, plus `keep_s`), restarted at each write, and this node forgets
an alert's counts, and the devices whose receipt it counted, at the same time. Reasons and
channels are few and bounded (a gateway's reason text is cut and capped in number), and
the receipts remembered for dedupe are capped in all (`MAX_RECEIPTS`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tocsin.api.ttl_cache import TtlCache
from tocsin.delivery.model import Outcome

log = logging.getLogger(__name__)

# How often the changed counts are written (the brief's "about once a second").
FLUSH_S = 1.0
# Channels and failure reasons one alert may count: a gateway's reasons are a short list;
# anything past these caps is counted under OTHER, so no gateway text makes a record grow.
MAX_CHANNELS = 16
MAX_REASONS = 16
MAX_REASON_CHARS = 64
OTHER = "other"
# Receipts remembered (device and alert) for counting each device once: about 80 bytes each.
MAX_RECEIPTS = 500_000
# Alerts counted at once on this node; past this the one that leaves soonest is forgotten.
MAX_ALERTS = 50_000
# Records read for one alert: one per node; a cluster has far fewer.
MAX_NODES = 64
# An alert's records are read at most once this often, and so many alerts at once at most.
READ_CACHE_S = 1.0
READ_CACHE_ALERTS = 1024
MAX_READS = 64
_REASON_CHAR = re.compile(r"[^A-Za-z0-9_.:-]")
_NODE_CHAR = re.compile(r"[^-_a-zA-Z0-9]")


class ProgressRecords(Protocol):
    """The bucket's part `Progress` uses (store/jetstream.py `KvRecords`)."""

    async def put_with_ttl(self, key: str, value: dict[str, Any], *, ttl_s: float) -> None: ...

    async def matching(self, pattern: str, *, limit: int, timeout_s: float) -> dict[str, dict[str, Any]]: ...


def node_token(node: str) -> str:
    """The node's name as one key token: as it is when it fits, else a digest of it."""
    cleaned = _NODE_CHAR.sub("-", node)[:64]
    if cleaned == node and node:
        return node
    return "n" + hashlib.sha256(node.encode()).hexdigest()[:20]


def reason_of(outcome: Outcome, reason: str) -> str:
    """A failure reason as a label: the gateway's short code, cut and cleaned."""
    text = _REASON_CHAR.sub("-", reason or outcome.value)[:MAX_REASON_CHARS]
    return text or outcome.value


@dataclass(slots=True)
class _Channel:
    planned: int = 0
    sent: int = 0
    receipts: int = 0
    failed: Counter[str] = field(default_factory=Counter)

    def as_json(self) -> dict[str, Any]:
        return {"planned": self.planned, "sent": self.sent, "failed": dict(sorted(self.failed.items())),
                "receipts": self.receipts}


@dataclass(slots=True)
class _Alert:
    until: float  # monotonic: forgotten then (the record's TTL ends with it)
    ttl_s: float
    channels: dict[str, _Channel] = field(default_factory=dict)
    receipted: set[bytes] = field(default_factory=set)

    def channel(self, name: str) -> _Channel:
        found = self.channels.get(name)
        if found is None:
            if len(self.channels) >= MAX_CHANNELS - 1:
                name = OTHER
            found = self.channels.setdefault(name, _Channel())
        return found


class Progress:
    """This node's counts per alert and channel, and the cluster's sums.

    `records` None: counts of this node only (a node without the bucket, a unit test).
    `expires_of(alert_id)`: the alert's expiry as Unix seconds if this node's follower holds
    it, else None (the default lifetime is assumed). `keep_of(alert_id)`: how long its counts
    stay after it expires when not `keep_s` (a probe's are kept as briefly as the probe).
    """

    def __init__(
        self,
        node: str = "",
        records: ProgressRecords | None = None,
        *,
        expires_of: Callable[[str], float | None] = lambda alert_id: None,
        keep_s: float = 3600.0,
        keep_of: Callable[[str], float | None] = lambda alert_id: None,
        default_lifetime_s: float = 86400.0,
        read_timeout_s: float = 2.0,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self._key_node = node_token(node or "node")
        self._records = records
        self._expires_of = expires_of
        self._keep_s = keep_s
        self._keep_of = keep_of
        self._default_lifetime_s = default_lifetime_s
        self._read_timeout_s = read_timeout_s
        self._wall = wall
        self._monotonic = monotonic
        self._alerts: dict[str, _Alert] = {}
        self._dirty: set[str] = set()
        self._receipts_held = 0
        self._read_cache: TtlCache[str, dict[str, dict[str, Any]] | None] = TtlCache(READ_CACHE_ALERTS, READ_CACHE_S,
                                                                               clock=monotonic)
        self._reading: dict[str, asyncio.Future[dict[str, dict[str, Any]]]] = {}
        # Seen by the metrics at scrape time (api/services.py).
        self.receipts_by_channel: Counter[str] = Counter()
        # (channel, "planned" | "sent" | "failed") since this node started.
        self.totals: Counter[tuple[str, str]] = Counter()
        self.receipts_uncounted = 0
        self.flushes = 0
        self.flush_failures = 0

    # -- counting (on the event loop, no I/O) ---------------------------------------------

    def _alert(self, alert_id: str) -> _Alert:
        found = self._alerts.get(alert_id)
        if found is None:
            if len(self._alerts) >= MAX_ALERTS:
                self._forget(min(self._alerts, key=lambda a: self._alerts[a].until))
            expires = self._expires_of(alert_id)
            now = self._wall()
            left = self._default_lifetime_s if expires is None else max(0.0, expires - now)
            keep = self._keep_of(alert_id)
            ttl_s = left + (self._keep_s if keep is None else keep)
            found = self._alerts[alert_id] = _Alert(until=self._monotonic() + ttl_s, ttl_s=ttl_s)
        self._dirty.add(alert_id)
        return found

    def planned(self, alert_id: str, channel: str, n: int) -> None:
        """The planner enqueued `n` deliveries of the alert through `channel`."""
        if n > 0:
            self._alert(alert_id).channel(channel).planned += n
            self.totals[channel[:MAX_REASON_CHARS], "planned"] += n

    def finished(self, alert_id: str, channel: str, outcome: Outcome, reason: str = "") -> None:
        """A delivery's last word: SENT, PERMANENT, GONE, or given up at expiry ("expired")."""
        counts = self._alert(alert_id).channel(channel)
        if outcome is Outcome.SENT:
            counts.sent += 1
            self.totals[channel[:MAX_REASON_CHARS], "sent"] += 1
            return
        self.totals[channel[:MAX_REASON_CHARS], "failed"] += 1
        label = reason_of(outcome, reason)
        if label not in counts.failed and len(counts.failed) >= MAX_REASONS - 1:
            label = OTHER
        counts.failed[label] += 1

    def receipt(self, alert_id: str, channel: str, device: str | None = None) -> bool:
        """A device showed the alert; counted once per device (when named). False: not
        counted (this device's receipt was counted already, or the dedupe table is full)."""
        if device is not None:
            if self._receipts_held >= MAX_RECEIPTS:
                self.receipts_uncounted += 1
                return False
            mark = hashlib.blake2b(device.encode(), digest_size=8).digest()
            entry = self._alert(alert_id)
            if mark in entry.receipted:
                return False
            entry.receipted.add(mark)
            self._receipts_held += 1
        else:
            entry = self._alert(alert_id)
        entry.channel(channel).receipts += 1
        self.receipts_by_channel[channel] += 1
        return True

    def _forget(self, alert_id: str) -> None:
        entry = self._alerts.pop(alert_id, None)
        if entry is not None:
            self._receipts_held -= len(entry.receipted)
        self._dirty.discard(alert_id)

    def forget_past(self) -> int:
        """Drop the alerts whose time is up (their records have left the bucket too)."""
        now = self._monotonic()
        gone = [alert_id for alert_id, entry in self._alerts.items() if entry.until <= now]
        for alert_id in gone:
            self._forget(alert_id)
        return len(gone)

    def __len__(self) -> int:
        return len(self._alerts)

    def local(self, alert_id: str) -> dict[str, dict[str, Any]]:
        """This node's own counts for the alert."""
        entry = self._alerts.get(alert_id)
        return {} if entry is None else {name: c.as_json() for name, c in sorted(entry.channels.items())}

    # -- the bucket ------------------------------------------------------------------------

    def key(self, alert_id: str) -> str:
        return f"{alert_id}.{self._key_node}"

    def _record(self, alert_id: str, entry: _Alert) -> dict[str, Any]:
        return {"node": self.node, "at": round(self._wall(), 3),
                "channels": {name: c.as_json() for name, c in sorted(entry.channels.items())}}

    async def flush(self) -> int:
        """Write each alert whose counts changed since the last flush; returns how many.
        An alert whose write failed stays changed and is written at the next flush."""
        if self._records is None:
            self._dirty.clear()
            return 0
        changed, self._dirty = self._dirty, set()
        written = 0
        for alert_id in sorted(changed):
            entry = self._alerts.get(alert_id)
            if entry is None:
                continue
            left_s = max(1.0, entry.until - self._monotonic())
            try:
                await self._records.put_with_ttl(self.key(alert_id), self._record(alert_id, entry), ttl_s=left_s)
            except Exception as exc:  # the store: written again at the next flush
                self._dirty.add(alert_id)
                self.flush_failures += 1
                log.warning("progress not written", extra={"alert_id": alert_id, "error": repr(exc)[:200]})
                continue
            written += 1
        self.flushes += 1
        return written

    async def run(self, every_s: float = FLUSH_S) -> None:
        """Write what changed every `every_s` and forget what is past, until cancelled."""
        while True:
            await asyncio.sleep(every_s)
            self.forget_past()
            try:
                await self.flush()
            except Exception as exc:  # a bug must not stop the node; counts stay in memory
                log.error("progress flush failed", exc_info=exc)

    async def summary(self, alert_id: str) -> dict[str, Any]:
        """The alert's progress on every node, per channel: planned, queued (planned and not
        finished yet), sent, failed by reason, receipts. This node's own counts are its
        latest; another node's are at most a flush and a read (`READ_CACHE_S`) old. A bucket
        that does not answer leaves this node's counts alone (logged)."""
        per_node = dict(await self._others(alert_id))
        per_node[self.key(alert_id)] = self.local(alert_id)
        return total(per_node.values())

    async def _others(self, alert_id: str) -> dict[str, dict[str, Any]]:
        """The alert's records in the bucket: one read per alert and `READ_CACHE_S`, however
        many requests ask (the route is public); at most `MAX_READS` alerts read at once."""
        if self._records is None:
            return {}
        cached = self._read_cache.get(alert_id, None)
        if cached is not None:
            return cached
        reading = self._reading.get(alert_id)
        if reading is None:
            if len(self._reading) >= MAX_READS:
                return {}
            reading = self._reading[alert_id] = asyncio.ensure_future(self._read(alert_id))
            reading.add_done_callback(lambda _: self._reading.pop(alert_id, None))
        return await asyncio.shield(reading)

    async def _read(self, alert_id: str) -> dict[str, dict[str, Any]]:
        assert self._records is not None
        found: dict[str, dict[str, Any]] = {}
        try:
            records = await self._records.matching(f"{alert_id}.*", limit=MAX_NODES, timeout_s=self._read_timeout_s)
        except Exception as exc:
            log.warning("progress not read", extra={"alert_id": alert_id, "error": repr(exc)[:200]})
            records = {}
        for key, record in records.items():
            channels = record.get("channels")
            if key != self.key(alert_id) and isinstance(channels, dict):
                found[key] = channels
        self._read_cache.put(alert_id, found)
        return found


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def total(records: Any) -> dict[str, Any]:
    """Sum per-node channel counts (read from the bucket: any odd value counts 0)."""
    sums: dict[str, _Channel] = {}
    for channels in records:
        for name, counts in list(channels.items())[:MAX_CHANNELS]:
            if not isinstance(counts, dict):
                continue
            into = sums.setdefault(str(name)[:MAX_REASON_CHARS], _Channel())
            into.planned += _count(counts.get("planned"))
            into.sent += _count(counts.get("sent"))
            into.receipts += _count(counts.get("receipts"))
            failed = counts.get("failed")
            if isinstance(failed, dict):
                for reason, n in list(failed.items())[:MAX_REASONS]:
                    into.failed[str(reason)[:MAX_REASON_CHARS]] += _count(n)
    out: dict[str, Any] = {}
    for name, c in sorted(sums.items()):
        finished = c.sent + sum(c.failed.values())
        out[name] = {"planned": c.planned, "queued": max(0, c.planned - finished), "sent": c.sent,
                     "failed": dict(sorted(c.failed.items())), "receipts": c.receipts}
    return out

"""Stage 2: stored alert -> the live devices on this node whose cells its area touches.

Each node follows the alerts stream with one consumer, keeps the alerts that have not
expired (for replay to reconnecting devices), and offers each new alert's pre-encoded
event to the matching connections.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tocsin.cap.model import Alert, Area
from tocsin.cap.parse import parse_stored
from tocsin.channels.live import Connection, Event, LiveRegistry, http_chunk, ws_text_frame
from tocsin.errors import CapInvalid, StoreUnavailable
from tocsin.geo.cells import Cover, cover_for
from tocsin.store.base import AlertId, Stored, alert_id_for
from tocsin.store.jetstream import JetStreamStore

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# The follower writes to this many devices, then lets the event loop run (the issuer's 201,
# other requests, reconnecting devices) before the next batch: ~5-8 ms of writes each.
FANOUT_BATCH = 1024
# A follower that gets nothing for this long while the stream is ahead is started again.
STALL_S = 3.0
# Alerts this node's accept parsed and is publishing, kept for the follower (at most this many).
PREPARED_MAX = 64


class FollowerStalled(Exception):
    """The stream is ahead of this node's follower and nothing arrives."""


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Active:
    """An alert that has not expired, ready to replay."""

    stored: Stored
    alert: Alert
    areas: tuple[Area, ...]
    cover: Cover
    expires_at: datetime
    event: Event


# An alert's areas and the cells they cover.
Shape = tuple[tuple[Area, ...], Cover]


def _drawn_areas(alert: Alert) -> tuple[Area, ...]:
    """The alert's areas when one has a polygon or circle; () when none does (an Update or
    Cancel that goes where the alerts it references went)."""
    areas = tuple(area for info in alert.infos for area in info.areas)
    return areas if any(a.polygons or a.circles for a in areas) else ()


def event_id(seq: int, alert_id: str) -> str:
    """A device's cursor: the seq, and which alert it was (`12.3fa9c0de`).

    The id part lets a node tell a cursor into this stream from one into a stream that
    lost its tail and reused the seq for another alert (RELIABILITY.md, F14).
    """
    return f"{seq}.{alert_id[:8]}"


def parse_event_id(raw: str) -> tuple[int, str | None]:
    """`N` or `N.hhhhhhhh` -> (seq, id prefix or None).

    Raises:
        ValueError: anything else.
    """
    seq, dot, prefix = raw.partition(".")
    if not seq.isdigit() or (dot and not (len(prefix) == 8 and all(c in "0123456789abcdef" for c in prefix))):
        raise ValueError(raw)
    return int(seq), (prefix if dot else None)


def encode_event(stored: Stored, status: str) -> Event:
    """The alert's event bytes, once for SSE and once for WebSocket, framed for the wire."""
    env = stored.envelope
    cursor = event_id(stored.seq, env.alert_id)
    body = {
        "seq": stored.seq,
        "event_id": cursor,
        "id": env.alert_id,
        "kid": env.kid,
        "sig": env.sig,
        "cap": env.payload.decode("utf-8"),
    }
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    sse = f"id: {cursor}\nevent: alert\ndata: {data}\n\n".encode()
    ws = json.dumps({"type": "alert", **body}, ensure_ascii=False, separators=(",", ":"))
    return Event(seq=stored.seq, status=status, sse=sse, ws=ws, sse_chunk=http_chunk(sse), ws_frame=ws_text_frame(ws))


class Target:
    """Follows the stream; keeps the active alerts; fans each new one out to live devices."""

    def __init__(
        self,
        store: JetStreamStore,
        live: LiveRegistry,
        *,
        default_lifetime_s: float,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._live = live
        self._lifetime = timedelta(seconds=default_lifetime_s)
        self._clock = clock
        self.active: dict[int, Active] = {}
        self.by_id: dict[AlertId, Active] = {}
        self.offered: dict[AlertId, int] = {}
        self.last_seq = 0
        self.caught_up = asyncio.Event()
        self._next_prune = clock()
        self._prepared: dict[AlertId, tuple[bytes, Alert, Shape | None]] = {}
        # Fault injection for tests of readiness (F16): while this event is unset, the
        # follower waits before taking the next alert, as a stuck fan-out would.
        self.hold: asyncio.Event | None = None

    async def run(self) -> None:
        """Follow the stream forever; re-follow from the last seen seq after any error, or
        when the consumer stalls while the stream moves on."""
        while True:
            try:
                async with asyncio.TaskGroup() as tasks:
                    follower = tasks.create_task(self._follow(), name="follow")
                    tasks.create_task(self._watch_for_stall(follower), name="follow-stall")
            except* FollowerStalled:
                log.warning("alert follower stalled; following again", extra={"after": self.last_seq})
            except* (StoreUnavailable, OSError, asyncio.TimeoutError) as group:
                log.warning("alert follower restarting", extra={"after": self.last_seq, "error": repr(group)})
                await asyncio.sleep(1.0)
            except* Exception as group:  # a nats-py error we did not translate: follow again
                log.error("alert follower failed", extra={"after": self.last_seq}, exc_info=group)
                await asyncio.sleep(1.0)

    async def _follow(self) -> None:
        goal = await self._store.last_seq()
        if goal <= self.last_seq:
            self.caught_up.set()
        async for stored in self._store.follow(self.last_seq):
            if self.hold is not None:
                await self.hold.wait()
            await self.take_and_fan_out(stored)
            if stored.seq >= goal:
                self.caught_up.set()

    async def _watch_for_stall(self, follower: asyncio.Task[None], period_s: float = 1.0) -> None:
        """Raise FollowerStalled when the stream is ahead and nothing arrived for a while.

        After a quorum loss the ordered consumer's own re-creation can keep failing for
        long after the stream is back (seen in F07); a fresh consumer from the last seq
        does not. A follower held on purpose (`hold`) is not judged.
        """
        loop = asyncio.get_running_loop()
        seen, since = self.last_seq, loop.time()
        while not follower.done():
            await asyncio.sleep(period_s)
            if self.last_seq != seen or (self.hold is not None and not self.hold.is_set()):
                seen, since = self.last_seq, loop.time()
                continue
            try:
                behind = await self._store.last_seq() > self.last_seq
            except StoreUnavailable:
                continue  # no stream to compare with; the consumer is not the problem
            if behind and loop.time() - since >= STALL_S:
                raise FollowerStalled(self.last_seq)

    def prepare(self, alert_id: AlertId, payload: bytes, alert: Alert) -> None:
        """The alert this node's accept is publishing, already parsed and checked.

        Its cover is computed now, while the accept waits for the stream's acknowledgement;
        when the stream hands the follower these exact bytes, it uses both instead of
        parsing them again (on the accepting node, in the same loop, before the issuer's
        201 and the first device). Bounded: an alert whose publish failed is forgotten
        after PREPARED_MAX others.
        """
        drawn = _drawn_areas(alert)
        self._prepared[alert_id] = (payload, alert, (drawn, cover_for(drawn)) if drawn else None)
        if len(self._prepared) > PREPARED_MAX:
            del self._prepared[next(iter(self._prepared))]

    def _parsed(self, stored: Stored) -> tuple[Alert, Shape | None]:
        """The stored alert and, when known, its areas and cover: from `prepare` when it holds
        these bytes, else parsed here.

        Raises:
            CapInvalid: the payload is not a valid alert.
        """
        env = stored.envelope
        prepared = self._prepared.pop(env.alert_id, None)
        if prepared is not None and prepared[0] == env.payload:
            return prepared[1], prepared[2]
        return parse_stored(env.payload), None

    def take(self, stored: Stored) -> None:
        """Index one stored alert and offer it to the live devices it concerns, in one go."""
        active = self._index(stored)
        if active is not None:
            self._fanned_out(active, self._live.publish(active.event, self._matching(active)))

    async def take_and_fan_out(self, stored: Stored) -> None:
        """`take`, with the fan-out in batches that let the event loop run in between.

        The alert is indexed (replayable) before the first write, so a device that attaches
        during the fan-out gets it by replay; the devices matched before are written in
        order. The follower takes the next alert only after this one's fan-out ends, so each
        device still gets alerts in stream order.
        """
        # Let ready callbacks run first: on the node that accepted this alert, the issuer's
        # handler is usually ready too (the PubAck and this message arrive together), and it
        # can start its ledger write before this parses the alert and computes its cover.
        await asyncio.sleep(0)
        active = self._index(stored)
        if active is not None:
            offered = await self._live.publish_in_batches(active.event, self._matching(active), FANOUT_BATCH)
            self._fanned_out(active, offered)

    def _matching(self, active: Active) -> set[Connection]:
        return self._live.matching(active.cover.touches)

    def _fanned_out(self, active: Active, offered: int) -> None:
        self.offered[active.stored.envelope.alert_id] = offered
        self._maybe_prune()

    async def resume_after(self, raw: str | None) -> int:
        """The seq after which to replay for a device that sent this cursor (0: all).

        A cursor this stream cannot vouch for (beyond its end, or naming another alert at
        that seq) gets every active alert again; devices drop repeats by identity.

        Raises:
            ValueError: not a cursor.
        """
        if not raw:
            return 0
        seq, prefix = parse_event_id(raw)
        known = self.active.get(seq)
        if known is not None and (prefix is None or known.stored.envelope.alert_id.startswith(prefix)):
            return seq
        if prefix is None and seq <= self.last_seq:
            return seq
        stored = await self._store.get_by_seq(seq)
        if stored is not None and (prefix is None or stored.envelope.alert_id.startswith(prefix)):
            return seq
        log.warning("cursor not in this stream; replaying every active alert", extra={"cursor": raw[:40]})
        return 0

    def _index(self, stored: Stored) -> Active | None:
        """Record the alert as seen and, unless expired or unreadable, as active."""
        if stored.seq <= self.last_seq and not self._went_back(stored):
            return None
        self.last_seq = stored.seq
        active = self._activate(stored)
        if active is None:
            return None
        self.active[stored.seq] = active
        self.by_id[stored.envelope.alert_id] = active
        return active

    def _went_back(self, stored: Stored) -> bool:
        """A seq seen before that now holds another alert: the stream lost its tail.

        Forget what came after it here and close the live devices: they resume, their
        cursors no longer check out, and they get every active alert again.
        """
        known = self.active.get(stored.seq)
        if known is None or known.stored.envelope.alert_id == stored.envelope.alert_id:
            return False  # a redelivery after a consumer reset
        log.error("stream reused a sequence; devices resume with a full replay",
                  extra={"seq": stored.seq, "alert_id": stored.envelope.alert_id})
        for seq in [s for s in self.active if s >= stored.seq]:
            gone = self.active.pop(seq)
            self.by_id.pop(gone.stored.envelope.alert_id, None)
        self.last_seq = stored.seq - 1
        self._live.close_all()
        return True

    def _maybe_prune(self) -> None:
        if self._clock() >= self._next_prune:
            self._prune()

    def _activate(self, stored: Stored) -> Active | None:
        try:
            alert, shaped = self._parsed(stored)
        except CapInvalid as exc:
            log.error("stored alert unreadable", extra={"seq": stored.seq, "error": str(exc)})
            return None
        expires_at = alert.expires or alert.sent + self._lifetime
        if expires_at <= self._clock():
            return None
        if shaped is None:
            areas = _drawn_areas(alert) or self._referenced_areas(alert)
            shaped = (areas, cover_for(areas))
        areas, cover = shaped
        return Active(
            stored=stored,
            alert=alert,
            areas=areas,
            cover=cover,
            expires_at=expires_at,
            event=encode_event(stored, alert.status.value),
        )

    def _referenced_areas(self, alert: Alert) -> tuple[Area, ...]:
        """A Cancel or Update without an area goes where the alerts it references went."""
        areas: list[Area] = []
        for ref in alert.references:
            found = self.by_id.get(alert_id_for(ref.sender, ref.identifier))
            if found is not None:
                areas.extend(found.areas)
        return tuple(areas)

    def attach(self, connection: Connection, after_seq: int) -> list[Event]:
        """Register a live connection and return what it missed, oldest first.

        Synchronous on purpose: no alert can slip between the replay (seq up to now) and
        the live queue (seq after now), and none is in both.
        """
        self._live.add(connection)
        connection.last_seq = max(after_seq, self.last_seq)
        now = self._clock()
        missed: list[Event] = []
        for seq, active in self.active.items():
            if seq <= after_seq or active.expires_at <= now:
                continue
            if not connection.audience.receives(active.event.status):
                continue
            if any(active.cover.touches(cell) for cell in connection.cells):
                missed.append(active.event)
        return missed

    def _prune(self) -> None:
        now = self._clock()
        self._next_prune = now + timedelta(seconds=1)
        expired = [seq for seq, a in self.active.items() if a.expires_at <= now]
        for seq in expired:
            gone = self.active.pop(seq)
            self.by_id.pop(gone.stored.envelope.alert_id, None)
            # Bounded memory: a probe every few seconds would otherwise grow this forever.
            self.offered.pop(gone.stored.envelope.alert_id, None)

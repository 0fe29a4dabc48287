"""Stage 3: stored alert -> an active alert: parsed, not expired, its cover and event ready.

The index keeps the alerts that have not expired, by seq (for replay) and by id (for the API,
and for the areas of a Cancel or Update that draws none), and forgets them once expired.

An Update replaces and a Cancel retracts the alerts it references: once one is indexed, the
referenced alert is superseded and `replays_to` says which cursors still get what
(docs/architecture.md, "Update and Cancel"). An Update or Cancel reaches the devices of the
alerts it references (their cover, added to its own); a correction reaches every device.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tocsin.audience import expires_at
from tocsin.cap.model import Alert, Area, MsgType
from tocsin.channels.live import Event
from tocsin.correction import is_correction
from tocsin.errors import CapInvalid
from tocsin.geo.cells import Cover
from tocsin.pipeline.encode import encode_event
from tocsin.pipeline.handoff import Handoff, Shape, drawn_areas, shape_of
from tocsin.pipeline.replay import UNVOUCHED
from tocsin.store.base import AlertId, Stored, alert_id_for

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


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
    # The seq of the first alert of its chain this index knows (an Update of an Update of
    # X: X's seq); its own seq when it references nothing known.
    root_seq: int = 0
    # A Cancel: retracts what it references (a device that never showed it has no use for it).
    retracts: bool = False
    # A correction: goes to every device, wherever it is now (correction.py).
    everywhere: bool = False

    def reaches(self, cell: str) -> bool:
        """Whether a device watching this cell gets the alert."""
        return self.everywhere or self.cover.touches(cell)


class ActiveIndex:
    """The active alerts on this node, and the last seq it took from the stream."""

    def __init__(
        self,
        handoff: Handoff,
        *,
        default_lifetime_s: float,
        clock: Clock = utc_now,
        on_rewind: Callable[[], None] = lambda: None,
    ) -> None:
        self._handoff = handoff
        # How long an alert without its own expiry stays active.
        self.lifetime = timedelta(seconds=default_lifetime_s)
        self._clock = clock
        self._on_rewind = on_rewind
        self.active: dict[int, Active] = {}
        self.by_id: dict[AlertId, Active] = {}
        # Alerts an indexed Update or Cancel referenced, with the seq of the first that did;
        # kept until the superseded alert itself expires (recorded by position.py).
        self.superseded: dict[AlertId, int] = {}
        self.last_seq = 0
        self.last_id = ""  # the alert at last_seq
        # FEEDS: told of every alert registered (feeds/window.py keeps the public ones past
        # their expiry); each must not raise.
        self.observers: list[Callable[[Active], None]] = []
        self._next_prune = clock()
        # Told of the alerts each prune forgets, before they are forgotten (`superseded`
        # still says which were replaced): the fan-out's counts, FPAS withdrawals.
        self.on_expired: list[Callable[[list[Active]], None]] = []

    def add(self, stored: Stored) -> Active | None:
        """Record the alert as seen and, unless expired or unreadable, as active."""
        if not self._is_new(stored):
            return None
        read = self._read(stored)
        if read is None:
            self._seen(stored)
            return None
        alert, shaped, until = read
        shaped = shaped or self.referenced_shape(alert) or shape_of(drawn_areas(alert))
        self._seen(stored)
        return self._register(stored, alert, shaped, until)

    async def add_off_loop(self, stored: Stored) -> Active | None:
        """`add`, with a cover that was not stored with the alert (one stored before covers
        were carried) computed in a thread.

        The seq is recorded as seen only together with the active alert, after the cover:
        a device that attaches meanwhile (replay up to `last_seq`, live after it) must not
        be told it is past an alert that is not yet replayable (found by F08: a device that
        reconnected during a cover never got that alert).
        """
        if not self._is_new(stored):
            return None
        read = self._read(stored)
        if read is None:
            self._seen(stored)
            return None
        alert, shaped, until = read
        shaped = shaped or self.referenced_shape(alert)
        if shaped is None:
            shaped = await asyncio.to_thread(shape_of, drawn_areas(alert))
        self._seen(stored)
        return self._register(stored, alert, shaped, until)

    async def add_batch(self, batch: list[Stored]) -> list[Active]:
        """`add_off_loop` for several stored alerts (a burst, fanout.py), in seq order, all
        registered in one go once every cover is ready: a device that attaches meanwhile
        is before all of them or after all of them, never between (see replay.attach)."""
        read: dict[int, tuple[Alert, Shape | None, datetime] | None] = {}
        for stored in batch:
            got = self._read(stored) if stored.seq > self.last_seq or stored.seq in self.active else None
            if got is not None and got[1] is None and drawn_areas(got[0]):
                alert, _, until = got
                got = alert, await asyncio.to_thread(shape_of, drawn_areas(alert)), until
            read[stored.seq] = got
        added: list[Active] = []
        for stored in batch:
            if not self._is_new(stored):
                continue
            got = read.get(stored.seq)
            self._seen(stored)
            if got is not None:
                alert, shaped, until = got
                shaped = shaped or self.referenced_shape(alert) or ((), Cover(cells=frozenset()))
                added.append(self._register(stored, alert, shaped, until))
        return added

    def _is_new(self, stored: Stored) -> bool:
        """After the last seq taken, or at a seq that now holds another alert (a rewind)."""
        return stored.seq > self.last_seq or self._went_back(stored)

    def _seen(self, stored: Stored) -> None:
        self.last_seq, self.last_id = stored.seq, stored.envelope.alert_id

    def _read(self, stored: Stored, *, keep: bool = False) -> tuple[Alert, Shape | None, datetime] | None:
        """The alert, when it is readable and has not expired; changes nothing here.

        An alert whose envelope says it has expired is not parsed at all: a restart or a
        new node reads expired history at the cost of its headers only. `keep`: leave the
        handoff's parsed copy for the stored copy to take (an early copy reads it too).
        """
        now = self._clock()
        if stored.envelope.expires_at is not None and stored.envelope.expires_at <= now:
            return None
        try:
            alert, shaped = self._handoff.parsed(stored, keep=keep)
        except CapInvalid as exc:
            log.error("stored alert unreadable", extra={"seq": stored.seq, "error": str(exc)})
            return None
        until = expires_at(alert, self.lifetime)
        if until <= now:
            return None
        return alert, shaped, until

    def read_early(self, stored: Stored) -> tuple[Alert, Shape | None, datetime] | None:
        """`_read` for an alert not yet stored (early.py): the handoff keeps its parsed copy."""
        return self._read(stored, keep=True)

    def widened(self, alert: Alert, cover: Cover, referenced: list[Active] | None = None) -> Cover:
        """An Update with its own area also reaches the devices that showed what it replaces
        (`referenced`, the active alerts it references): one outside the new area hears of it."""
        referenced = self._referenced(alert) if referenced is None else referenced
        if referenced and drawn_areas(alert):
            return Cover(cells=cover.cells.union(*(r.cover.cells for r in referenced)))
        return cover

    def _register(self, stored: Stored, alert: Alert, shaped: Shape, until: datetime) -> Active:
        areas, cover = shaped
        referenced = self._referenced(alert)
        cover = self.widened(alert, cover, referenced)
        active = Active(
            stored=stored,
            alert=alert,
            areas=areas,
            cover=cover,
            expires_at=until,
            event=encode_event(stored, alert.status.value),
            root_seq=min((r.root_seq for r in referenced), default=stored.seq),
            retracts=alert.msg_type is MsgType.CANCEL,
            everywhere=is_correction(alert),
        )
        self.active[stored.seq] = active
        self.by_id[stored.envelope.alert_id] = active
        for earlier in referenced:
            self.superseded.setdefault(earlier.stored.envelope.alert_id, stored.seq)
        for observe in self.observers:
            observe(active)
        return active

    def _referenced(self, alert: Alert) -> list[Active]:
        """The active alerts an Update or Cancel references (none for an Alert)."""
        if alert.msg_type not in (MsgType.UPDATE, MsgType.CANCEL):
            return []
        found = (self.by_id.get(alert_id_for(ref.sender, ref.identifier)) for ref in alert.references)
        return [active for active in found if active is not None]

    def replays_to(self, active: Active, after_seq: int, ahead: frozenset[int] = frozenset()) -> bool:
        """Whether a device resuming after `after_seq` (0: never connected; UNVOUCHED: a
        cursor the stream cannot vouch for) is sent this alert again, by its place in an
        Update/Cancel chain (its cells are checked apart).

        A superseded alert only to a device that may have shown an earlier alert of its
        chain (it needs each step to follow it), so never the original itself; a Cancel
        only to a device that was connected before it (it may have shown what it retracts);
        anything else, the newest of its chain, to every device that has not had it.
        `ahead`: the seqs after `after_seq` the device already has (a burst cursor).
        """
        if after_seq >= active.stored.seq or active.stored.seq in ahead:
            return False
        if active.stored.envelope.alert_id in self.superseded:
            if after_seq == UNVOUCHED:  # it may have shown any step: each but the original
                return active.root_seq != active.stored.seq
            return after_seq >= active.root_seq or active.root_seq in ahead
        if active.retracts:
            return after_seq != 0
        return True

    def supersede(self, recorded: dict[AlertId, int]) -> None:
        """After a restart: take back the supersessions recorded with the position (those
        whose Update or Cancel expired first are not rebuilt from the active alerts)."""
        for alert_id, seq in recorded.items():
            if alert_id in self.by_id:
                self.superseded.setdefault(alert_id, seq)

    def restored(self, last_seq: int, last_id: str) -> None:
        """After a restart from a recorded position: every seq up to `last_seq` was judged."""
        if last_seq > self.last_seq:
            self.last_seq, self.last_id = last_seq, last_id

    def forget_all(self) -> None:
        """Back to nothing taken (a recorded position the stream does not vouch for)."""
        self.active.clear()
        self.by_id.clear()
        self.superseded.clear()
        self.last_seq, self.last_id = 0, ""

    def referenced_shape(self, alert: Alert) -> Shape | None:
        """A Cancel or Update without an area goes where the alerts it references went, with
        their covers (nothing computed again); None for an alert that draws its own areas."""
        if drawn_areas(alert):
            return None
        referenced = self._referenced(alert)
        areas = tuple(area for active in referenced for area in active.areas)
        return areas, Cover(cells=frozenset(cell for active in referenced for cell in active.cover.cells))

    def _went_back(self, stored: Stored) -> bool:
        """A seq seen before that now holds another alert: the stream lost its tail.

        Forget what came after it here and call `on_rewind` (it closes the live devices:
        they resume, their cursors no longer check out, and they get every active alert again).
        """
        known = self.active.get(stored.seq)
        if known is None or known.stored.envelope.alert_id == stored.envelope.alert_id:
            return False  # a redelivery after a consumer reset
        log.error("stream reused a sequence; devices resume with a full replay",
                  extra={"seq": stored.seq, "alert_id": stored.envelope.alert_id})
        for seq in [s for s in self.active if s >= stored.seq]:
            self._forget(self.active.pop(seq))
        self.last_seq = stored.seq - 1
        self._on_rewind()
        return True

    def prune_if_due(self) -> list[Active]:
        """Forget the expired alerts, at most once a second; returns what was forgotten."""
        now = self._clock()
        if now < self._next_prune:
            return []
        self._next_prune = now + timedelta(seconds=1)
        expired = [seq for seq, a in self.active.items() if a.expires_at <= now]
        gone = [self.active.pop(seq) for seq in expired]
        if gone:
            for hook in self.on_expired:
                hook(gone)
        for active in gone:
            self._forget(active)
        return gone

    def _forget(self, active: Active) -> None:
        alert_id = active.stored.envelope.alert_id
        self.by_id.pop(alert_id, None)
        self.superseded.pop(alert_id, None)

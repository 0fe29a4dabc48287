"""Replay: a device's cursor -> the active alerts it missed, then its live queue.

What it missed of an Update or Cancel chain is the index's rule (index.py `replays_to`).

A cursor (`Last-Event-ID`) is `seq.idprefix`; a node replays every active alert when it
cannot vouch for one (RELIABILITY.md, F14). An alert fanned out ahead of lower seqs (a
burst, fanout.py) carries `floor.idprefix~s1~s2`: everything up to `floor` was delivered,
and so were the seqs after `~`; a resume replays the rest and skips those.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from tocsin.channels.live import Connection, Event, LiveRegistry
from tocsin.store.base import AlertStore

if TYPE_CHECKING:  # index encodes events, whose ids are made here
    from tocsin.pipeline.early import EarlyCopies
    from tocsin.pipeline.index import ActiveIndex, Clock

log = logging.getLogger(__name__)

_HEX = frozenset("0123456789abcdef")
_DIGITS = frozenset("0123456789")
# JetStream seqs are unsigned 64-bit: a larger cursor names no event of any stream.
_SEQ_LIMIT = 2**64
# Where to replay from for a cursor this stream cannot vouch for: every active alert, as to a
# device that may have shown any of them (0 is a device that never connected).
UNVOUCHED = -1


def event_id(seq: int, alert_id: str) -> str:
    """A device's cursor: the seq, and which alert it was (`12.3fa9c0de`).

    The id part lets a node tell a cursor into this stream from one into a stream that
    lost its tail and reused the seq for another alert (RELIABILITY.md, F14).
    """
    return f"{seq}.{alert_id[:8]}"


# A burst cursor names at most this many seqs ahead of its floor (follow.py's FOLLOW_BATCH).
MAX_AHEAD = 64


class After(int):
    """Where a replay starts (a seq), and the seqs after it the device already has."""

    ahead: frozenset[int]

    def __new__(cls, seq: int, ahead: frozenset[int] = frozenset()) -> After:
        made = super().__new__(cls, seq)
        made.ahead = ahead
        return made


def burst_cursor(floor: int, floor_id: str, ahead: list[int]) -> str:
    """The cursor of an event fanned out ahead of its seq (`floor.idprefix~s1~s2`)."""
    base = event_id(floor, floor_id) if floor_id else str(floor)
    return base + "".join(f"~{seq}" for seq in sorted(ahead))


def parse_cursor(raw: str) -> tuple[int, str | None, frozenset[int]]:
    """`parse_event_id`, and the seqs after `~` (each above the floor, at most MAX_AHEAD).

    Raises:
        ValueError: anything else.
    """
    head, *rest = raw.split("~", MAX_AHEAD + 1)
    seq, prefix = parse_event_id(head)
    if len(rest) > MAX_AHEAD:
        raise ValueError(raw)
    ahead = frozenset(parse_event_id(part)[0] for part in rest if "." not in part)
    if len(ahead) != len(rest) or any(s <= seq for s in ahead):
        raise ValueError(raw)
    return seq, prefix, ahead


def parse_event_id(raw: str) -> tuple[int, str | None]:
    """`N` or `N.hhhhhhhh` -> (seq, id prefix or None); N is ASCII digits below 2^64.

    Raises:
        ValueError: anything else.
    """
    seq, dot, prefix = raw.partition(".")
    # 20 digits hold every 64-bit seq; the length check comes before int() reads it all.
    if not seq or len(seq) > 20 or not _DIGITS.issuperset(seq):
        raise ValueError(raw)
    if dot and not (len(prefix) == 8 and _HEX.issuperset(prefix)):
        raise ValueError(raw)
    number = int(seq)
    if number >= _SEQ_LIMIT:
        raise ValueError(raw)
    return number, (prefix if dot else None)


class Replay:
    """Attaches live connections, with what they missed since their cursor."""

    def __init__(
        self, store: AlertStore, index: ActiveIndex, live: LiveRegistry, *, clock: Clock,
        early: EarlyCopies | None = None,
    ) -> None:
        self._store = store
        self._index = index
        self._live = live
        self._clock = clock
        self._early = early

    async def resume_after(self, raw: str | None) -> After:
        """The seq after which to replay for a device that sent this cursor (0: none sent),
        with the seqs after it that the device has (a burst cursor).

        A cursor this stream cannot vouch for (beyond its end, or naming another alert at
        that seq) gets every active alert again (UNVOUCHED), Cancels included; devices drop
        repeats by identity.

        Raises:
            ValueError: not a cursor.
        """
        if not raw:
            return After(0)
        seq, prefix, ahead = parse_cursor(raw)
        known = self._index.active.get(seq)
        if known is not None and (prefix is None or known.stored.envelope.alert_id.startswith(prefix)):
            return After(seq, ahead)
        if prefix is None and seq <= self._index.last_seq:
            return After(seq, ahead)
        stored = await self._store.get_by_seq(seq)
        if stored is not None and (prefix is None or stored.envelope.alert_id.startswith(prefix)):
            return After(seq, ahead)
        log.warning("cursor not in this stream; replaying every active alert", extra={"cursor": raw[:40]})
        return After(UNVOUCHED)

    def attach(self, connection: Connection, after_seq: int) -> list[Event]:
        """Register a live connection and return what it missed, oldest first.

        Synchronous on purpose: no alert can slip between the replay (seq up to now) and
        the live queue (seq after now), and none is in both. Of an Update/Cancel chain only
        what the device needs is replayed (`ActiveIndex.replays_to`): a device that never
        connected gets the newest Update and no Cancel, never the alert they supersede.
        The live queue starts after this node's last seq, never after a cursor beyond it:
        a burst fans out in priority order (fanout.py), so a connection's place must not
        fall inside the next burst's seqs; a device that resumes on a node behind its
        cursor may get those alerts again, and drops them by identity. Last, the early
        copies this node holds for the device (early.py: alerts not yet stored, no cursor).
        """
        self._live.add(connection)
        connection.last_seq = self._index.last_seq
        ahead = after_seq.ahead if isinstance(after_seq, After) else frozenset()
        now = self._clock()
        missed: list[Event] = []
        for active in self._index.active.values():
            if active.expires_at <= now or not self._index.replays_to(active, after_seq, ahead):
                continue
            if not connection.audience.receives(active.event.status):
                continue
            if any(active.reaches(cell) for cell in connection.cells):
                missed.append(active.event)
        if self._early is not None:
            missed += self._early.replay_for(connection)
        return missed

"""Replay: a device's cursor -> the active alerts it missed, then its live queue.

What it missed of an Update or Cancel chain is the index's rule (index.py `replays_to`).

A cursor (`Last-Event-ID`) is `seq.idprefix`; a node replays every active alert when it
cannot vouch for one (RELIABILITY.md, F14).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from tocsin.channels.live import Connection, Event, LiveRegistry
from tocsin.store.base import AlertStore

if TYPE_CHECKING:  # index encodes events, whose ids are made here
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

    def __init__(self, store: AlertStore, index: ActiveIndex, live: LiveRegistry, *, clock: Clock) -> None:
        self._store = store
        self._index = index
        self._live = live
        self._clock = clock

    async def resume_after(self, raw: str | None) -> int:
        """The seq after which to replay for a device that sent this cursor (0: none sent).

        A cursor this stream cannot vouch for (beyond its end, or naming another alert at
        that seq) gets every active alert again (UNVOUCHED), Cancels included; devices drop
        repeats by identity.

        Raises:
            ValueError: not a cursor.
        """
        if not raw:
            return 0
        seq, prefix = parse_event_id(raw)
        known = self._index.active.get(seq)
        if known is not None and (prefix is None or known.stored.envelope.alert_id.startswith(prefix)):
            return seq
        if prefix is None and seq <= self._index.last_seq:
            return seq
        stored = await self._store.get_by_seq(seq)
        if stored is not None and (prefix is None or stored.envelope.alert_id.startswith(prefix)):
            return seq
        log.warning("cursor not in this stream; replaying every active alert", extra={"cursor": raw[:40]})
        return UNVOUCHED

    def attach(self, connection: Connection, after_seq: int) -> list[Event]:
        """Register a live connection and return what it missed, oldest first.

        Synchronous on purpose: no alert can slip between the replay (seq up to now) and
        the live queue (seq after now), and none is in both. Of an Update/Cancel chain only
        what the device needs is replayed (`ActiveIndex.replays_to`): a device that never
        connected gets the newest Update and no Cancel, never the alert they supersede.
        """
        self._live.add(connection)
        connection.last_seq = max(after_seq, self._index.last_seq)
        now = self._clock()
        missed: list[Event] = []
        for active in self._index.active.values():
            if active.expires_at <= now or not self._index.replays_to(active, after_seq):
                continue
            if not connection.audience.receives(active.event.status):
                continue
            if any(active.reaches(cell) for cell in connection.cells):
                missed.append(active.event)
        return missed

"""Stage 4: active alert -> the live connections on this node whose cells its cover touches.

An Update or Cancel's cover holds the cover of what it references (index.py); a correction
goes to every live connection, wherever it watches (its devices decide whether to show it).
"""

from __future__ import annotations

import asyncio

from tocsin.channels.live import Connection, Event, LiveRegistry
from tocsin.pipeline.duplicates import Duplicates
from tocsin.pipeline.encode import encode_event
from tocsin.pipeline.index import Active, ActiveIndex
from tocsin.pipeline.priority import rank
from tocsin.pipeline.replay import burst_cursor
from tocsin.store.base import AlertId, Stored

# The follower writes to this many devices, then lets the event loop run (the issuer's 201,
# other requests, reconnecting devices) before the next batch: ~5-8 ms of writes each.
FANOUT_BATCH = 1024


class FanOut:
    """Indexes each stored alert and offers it to the matching live devices."""

    def __init__(self, index: ActiveIndex, live: LiveRegistry, *, duplicates: Duplicates | None = None) -> None:
        self._index = index
        self._live = live
        self._duplicates = duplicates  # told of every alert fanned out (any node accepted it)
        # How many live devices took each active alert (for the alert's status); bounded
        # memory: a probe every few seconds would otherwise grow this forever.
        self.offered: dict[AlertId, int] = {}
        index.on_expired.append(self._forget)

    def take(self, stored: Stored) -> None:
        """Index one stored alert and offer it to the live devices it concerns, in one go."""
        active = self._index.add(stored)
        if active is not None:
            self._fanned_out(active, self._live.publish(active.event, self._matching(active)))

    async def take_and_fan_out(self, stored: Stored) -> None:
        """`take`, with the fan-out in batches that let the event loop run in between.

        The alert is indexed (replayable) before the first write, so a device that attaches
        during the fan-out gets it by replay; the devices matched before are written in
        order. The follower takes the next alert only after this one's fan-out ends (several
        waiting go through `take_batch`).
        """
        # Let ready callbacks run first: on the node that accepted this alert, the issuer's
        # handler is usually ready too (the PubAck and this message arrive together), and it
        # can start its ledger write before this parses the alert and computes its cover.
        await asyncio.sleep(0)
        active = await self._index.add_off_loop(stored)
        if active is not None:
            offered = await self._live.publish_in_batches(active.event, self._matching(active), FANOUT_BATCH)
            self._fanned_out(active, offered)

    async def take_batch(self, batch: list[Stored]) -> None:
        """Several pending alerts (a burst): indexed together in seq order, then fanned
        out in priority order (priority.py), Actual Extreme first.

        Two things keep every device's stream whole although seqs go out of order. The
        live order: the i-th alert fanned out carries the i-th lowest seq of the batch as
        its key (Event.seq), so each connection's "last queued" check still sees a rising
        number, and a connection that attached after the batch was indexed (replayed it)
        is past all of them. The cursor: each event's id is the seq below which the
        device has everything, plus the seqs above it it has (`replay.burst_cursor`), so a
        device resuming mid-burst misses nothing and, on a node that has the burst, is sent
        nothing twice (on a node behind its cursor: see replay.attach).
        """
        if len(batch) == 1 or batch[0].seq <= self._index.last_seq:
            # One alert, or a redelivery or rewind (index.py): one at a time, in seq order.
            for stored in batch:
                await self.take_and_fan_out(stored)
            return
        await asyncio.sleep(0)  # as in take_and_fan_out: let the issuers' handlers run first
        floor, floor_id = self._index.last_seq, self._index.last_id
        added = await self._index.add_batch(batch)
        for active, event in self._burst_events(added, floor, floor_id):
            offered = await self._live.publish_in_batches(event, self._matching(active), FANOUT_BATCH)
            self._fanned_out(active, offered)

    @staticmethod
    def _burst_events(added: list[Active], floor: int, floor_id: str) -> list[tuple[Active, Event]]:
        """The alerts of a burst in fan-out order, each with the event to fan out (take_batch).

        `added` is in seq order; `floor` is the seq this node had taken before it.
        """
        order = sorted(added, key=lambda a: (rank(a.alert), a.stored.seq))
        if order == added:
            return [(a, a.event) for a in added]
        keys = sorted(a.stored.seq for a in added)
        ids = {a.stored.seq: a.stored.envelope.alert_id for a in added}
        waiting = list(keys)  # seqs of the batch not yet fanned out, lowest first
        delivered: list[int] = []
        events: list[tuple[Active, Event]] = []
        for key, active in zip(keys, order, strict=True):
            waiting.remove(active.stored.seq)
            delivered.append(active.stored.seq)
            below = waiting[0] if waiting else keys[-1] + 1
            done = [s for s in keys if s < below]
            if done:
                floor, floor_id = done[-1], ids[done[-1]]
            ahead = [s for s in delivered if s > floor]
            cursor = burst_cursor(floor, floor_id, ahead)
            events.append((active, encode_event(active.stored, active.alert.status.value, cursor=cursor, key=key)))
        return events

    def _matching(self, active: Active) -> set[Connection]:
        # The cover's own method on the hot path; `reaches` only for a correction.
        return self._live.matching(active.reaches if active.everywhere else active.cover.touches)

    def _fanned_out(self, active: Active, offered: int) -> None:
        env = active.stored.envelope
        self.offered[env.alert_id] = offered
        if self._duplicates is not None and active.alert.status.value != "System":
            self._duplicates.note(active.alert, env.alert_id, env.issuer, env.accepted_at)
        self._index.prune_if_due()

    def _forget(self, gone: list[Active]) -> None:
        for active in gone:
            self.offered.pop(active.stored.envelope.alert_id, None)

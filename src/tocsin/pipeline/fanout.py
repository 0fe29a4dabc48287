"""Stage 4: active alert -> the live connections on this node whose cells its cover touches.

An Update or Cancel's cover holds the cover of what it references (index.py); a correction
goes to every live connection, wherever it watches (its devices decide whether to show it).
"""

from __future__ import annotations

import asyncio

from tocsin.channels.live import Connection, LiveRegistry
from tocsin.pipeline.index import Active, ActiveIndex
from tocsin.store.base import AlertId, Stored

# The follower writes to this many devices, then lets the event loop run (the issuer's 201,
# other requests, reconnecting devices) before the next batch: ~5-8 ms of writes each.
FANOUT_BATCH = 1024


class FanOut:
    """Indexes each stored alert and offers it to the matching live devices."""

    def __init__(self, index: ActiveIndex, live: LiveRegistry) -> None:
        self._index = index
        self._live = live
        # How many live devices took each active alert (for the alert's status).
        self.offered: dict[AlertId, int] = {}

    def take(self, stored: Stored) -> None:
        """Index one stored alert and offer it to the live devices it concerns, in one go."""
        active = self._index.add(stored)
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
        active = await self._index.add_off_loop(stored)
        if active is not None:
            offered = await self._live.publish_in_batches(active.event, self._matching(active), FANOUT_BATCH)
            self._fanned_out(active, offered)

    def _matching(self, active: Active) -> set[Connection]:
        # The cover's own method on the hot path; `reaches` only for a correction.
        return self._live.matching(active.reaches if active.everywhere else active.cover.touches)

    def _fanned_out(self, active: Active, offered: int) -> None:
        self.offered[active.stored.envelope.alert_id] = offered
        for gone in self._index.prune_if_due():
            # Bounded memory: a probe every few seconds would otherwise grow this forever.
            self.offered.pop(gone.stored.envelope.alert_id, None)

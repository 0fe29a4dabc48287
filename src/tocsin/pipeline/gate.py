"""The accept gate: at most so many accepts in flight, the rest enter by rank.

When 50 issuers submit within a second, the alerts that wait for a slot enter in
priority order (priority.py: Actual Extreme first), so they are stored, and get their seq,
before the Minor and Exercise alerts that came in beside them. System probes have slots
of their own and never wait behind a burst: they measure delivery, not the queue. The
gate holds a slot for the whole accept (publish and ledger), so the issuer is still
answered only once the alert is durable.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from tocsin.pipeline.priority import Rank


class GateFull(Exception):
    """As many accepts wait as the gate allows (the issuer gets a 503 with Retry-After)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """How an accept got through the gate: how many waited ahead of it, for how long."""

    ahead: int = 0
    waited_s: float = 0.0


class Gate:
    """A bounded number of slots; waiters are served lowest rank first, then by arrival."""

    def __init__(self, slots: int, *, probe_slots: int = 2, max_waiting: int = 1000) -> None:
        self._free = slots
        self._probes = asyncio.Semaphore(probe_slots)
        self._max_waiting = max_waiting
        self._waiting: list[tuple[Rank, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()
        # Counters for /metrics and the bench: accepts that had to wait, and the most at once.
        self.queued = 0
        self.most_waiting = 0

    @property
    def waiting(self) -> int:
        """Accepts waiting for a slot now."""
        return sum(1 for _, _, future in self._waiting if not future.done())

    @asynccontextmanager
    async def enter(self, rank: Rank, *, probe: bool = False) -> AsyncIterator[Entry]:
        """Hold a slot while the body runs.

        Raises:
            GateFull: `max_waiting` accepts wait already.
        """
        if probe:
            async with self._probes:
                yield Entry()
            return
        entry = await self._acquire(rank)
        try:
            yield entry
        finally:
            self._release()

    async def _acquire(self, rank: Rank) -> Entry:
        if self._free > 0 and not self.waiting:
            self._free -= 1
            return Entry()
        ahead = sum(1 for r, _, future in self._waiting if not future.done() and r <= rank)
        if self.waiting >= self._max_waiting:
            raise GateFull(self._max_waiting)
        if len(self._waiting) > 2 * self._max_waiting:  # callers that went away, not yet popped
            self._waiting = [w for w in self._waiting if not w[2].done()]
            heapq.heapify(self._waiting)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (rank, next(self._arrivals), future))
        self.queued += 1
        self.most_waiting = max(self.most_waiting, self.waiting)
        started = time.perf_counter()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release()  # handed a slot just as the caller went away: pass it on
            raise
        return Entry(ahead=ahead, waited_s=time.perf_counter() - started)

    def _release(self) -> None:
        """Hand the slot to the best waiter still waiting, else free it."""
        while self._waiting:
            _, _, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(None)
                return
        self._free += 1

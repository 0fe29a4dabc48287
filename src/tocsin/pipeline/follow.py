"""Stage 2: the alerts stream -> each stored alert, taken once by this node.

One ordered consumer per node. It is started again after an error, or when it stalls while
the stream moves on; each start follows from `start_after()`. What arrives while the
stages are busy waits in a bounded buffer; the stages take all that waits (up to
FOLLOW_BATCH) at once, so a burst is fanned out in priority order, not strictly by seq
(fanout.take_batch, priority.py). One alert at a time is the common case.

A take is never cut short by a restart of the consumer: the position counts a batch as
soon as it is indexed, before its fan-out ends, so a fan-out cancelled half-way would leave
the devices it had not reached yet without the alert and nothing to tell them. A restart
waits for the take under way, then follows from the position it left.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from tocsin.errors import StoreUnavailable
from tocsin.store.base import AlertStore, Stored

log = logging.getLogger(__name__)

# A consumer that brings nothing for this long while the stream is ahead of what it brought,
# and its buffer has room, is started again.
STALL_S = 3.0
# How often the stall is judged.
STALL_CHECK_S = 1.0
# At most this many waiting alerts are taken (and ranked) together; also the buffer's bound.
FOLLOW_BATCH = 64


class FollowerStalled(Exception):
    """The stream is ahead of what this node's consumer brought, and nothing arrives."""


def is_stalled(*, behind: bool, still_s: float) -> bool:
    """The stall rule: the stream is ahead of what my consumer brought and it has brought
    nothing for STALL_S (`still_s` counts from when the stream got ahead, or from the last
    arrival if that came later)."""
    return behind and still_s >= STALL_S


class Follower:
    """Follows the stream for ever and hands what waits to `take`, in seq order (a list of
        at most FOLLOW_BATCH; `take` decides the order of fan-out)."""

    def __init__(
        self,
        store: AlertStore,
        *,
        take: Callable[[list[Stored]], Awaitable[None]],
        position: Callable[[], int],
        restore: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._take = take
        # Read from the stream, not yet taken (for tests and /status: a burst in waiting).
        self.waiting = 0
        self._position = position
        self._restore = restore
        self.caught_up = asyncio.Event()
        # The last seq the consumer brought (taken or waiting), and whether its buffer is full
        # (then the consumer waits for the stages, which is not a stall).
        self.read_seq = 0
        self._full = False
        # The take under way, which a restart of the consumer waits for and never cancels.
        self._taking: asyncio.Future[None] | None = None
        # Fault injection for tests of readiness (F16): while this event is unset, the
        # follower waits before taking the next alert, as a stuck fan-out would.
        self.hold: asyncio.Event | None = None

    @property
    def last_seq(self) -> int:
        """The last seq this node took."""
        return self._position()

    def start_after(self) -> int:
        """Where following starts, at first and after every restart: the last seq taken."""
        return self._position()

    async def run(self) -> None:
        """Follow the stream forever; re-follow from `start_after()` after any error, or
        when the consumer stalls while the stream moves on. First, once: take back the
        recorded position (pipeline/position.py), so a restart does not reread history."""
        if self._restore is not None:
            await self._restore()
        try:
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
                await self._finish_take()
        finally:
            if self._taking is not None:  # the node stops: the take goes with it
                self._taking.cancel()

    async def _finish_take(self) -> None:
        """Wait for the take that was under way when the consumer was restarted (its error,
        if it had one, was the follow task's, already logged)."""
        taking, self._taking = self._taking, None
        if taking is not None:
            await asyncio.wait([taking])

    async def _follow(self) -> None:
        goal = await self._store.last_seq()
        start = self.start_after()
        self.read_seq, self._full = start, False
        if goal <= start:
            self.caught_up.set()
        buffer: asyncio.Queue[Stored] = asyncio.Queue(maxsize=FOLLOW_BATCH)
        async with asyncio.TaskGroup() as tasks:
            reading = tasks.create_task(self._read(self._store.follow(start), buffer), name="follow-read")
            try:
                while True:
                    batch = [await buffer.get()]
                    if self.hold is not None:
                        await self.hold.wait()
                    while not buffer.empty() and len(batch) < FOLLOW_BATCH:
                        batch.append(buffer.get_nowait())
                    self.waiting -= len(batch)
                    self._taking = asyncio.ensure_future(self._take(batch))
                    await asyncio.shield(self._taking)
                    self._taking = None
                    if batch[-1].seq >= goal:
                        self.caught_up.set()
            finally:
                reading.cancel()
                self.waiting = 0

    async def _read(self, stream: AsyncIterator[Stored], buffer: asyncio.Queue[Stored]) -> None:
        """Stream -> buffer; waits while the buffer is full (the consumer's flow control)."""
        async for stored in stream:
            self.read_seq = stored.seq
            self._full = buffer.full()
            await buffer.put(stored)
            self._full = False
            self.waiting += 1

    async def _watch_for_stall(self, follower: asyncio.Task[None]) -> None:
        """Raise FollowerStalled when `is_stalled` says so.

        After a quorum loss the ordered consumer's own re-creation can keep failing for
        long after the stream is back (seen in F07); a fresh consumer from the last seq
        does not. What is judged is the consumer (what it brings), not the stages: a long
        fan-out fills the buffer and the consumer waits, which is not a stall. A follower
        held on purpose (`hold`) is not judged.
        """
        loop = asyncio.get_running_loop()
        seen, since = self.read_seq, loop.time()
        while not follower.done():
            await asyncio.sleep(STALL_CHECK_S)
            if self.read_seq != seen or self._full or (self.hold is not None and not self.hold.is_set()):
                seen, since = self.read_seq, loop.time()
                continue
            try:
                behind = await self._store.last_seq() > self.read_seq
            except StoreUnavailable:
                continue  # no stream to compare with; the consumer is not the problem
            if not behind:
                # Counted from when the stream got ahead, not from the last move: after a
                # lull, a follower that is simply idle is not stalled.
                since = loop.time()
            if is_stalled(behind=behind, still_s=loop.time() - since):
                raise FollowerStalled(self.read_seq)

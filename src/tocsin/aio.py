"""asyncio as tocsin needs it on Python 3.11: a cancellation is never lost.

Python 3.11's `asyncio.wait_for` drops a cancellation that meets its awaitable's result in
the same turn of the loop: it returns the result, and the task that was told to stop goes
on. nats-py waits for every message and reply that way (`Subscription.next_msg`, requests),
so a node told to stop while its planner's pull got a message (or the pull request's own
408 at its expiry) kept that planner pulling forever and never finished stopping: seen as a
test run that hung at a node's stop. Python 3.12 rewrote `wait_for` on `asyncio.timeout`,
which cannot drop a cancellation; `install()` (run when tocsin is imported) gives 3.11 that
implementation, for tocsin's own code and for its libraries, which look `asyncio.wait_for`
up when they call it.

Not done: stopping a retry loop whenever its task "is being cancelled" (`Task.cancelling()`).
On 3.11 that count is not to be trusted: a TaskGroup whose child fails while the group's
owner already waits at the end of its `async with` cancels the owner and never takes that
back, so the follower (which restarts its TaskGroup after every store error) would count as
cancelled for the rest of its life (seen: a node that never followed again after its
nats-server was paused).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_for(awaitable: Awaitable[T], timeout: float | None) -> T:
    """`asyncio.wait_for` as Python 3.12 has it: TimeoutError when `timeout` passes, and a
    cancellation of the waiting task always raised, whatever finished at the same moment."""
    if timeout is not None and timeout <= 0:
        future = asyncio.ensure_future(awaitable)
        if future.done():
            return future.result()
        future.cancel()
        await asyncio.wait([future])
        try:
            return future.result()
        except asyncio.CancelledError as exc:
            raise TimeoutError from exc
    async with asyncio.timeout(timeout):
        return await awaitable


def install() -> None:
    """On Python before 3.12, make `asyncio.wait_for` the one above (idempotent)."""
    if sys.version_info < (3, 12):
        asyncio.wait_for = asyncio.tasks.wait_for = wait_for  # type: ignore[assignment]


"""A cancellation is never lost (tocsin/aio.py): the stop of a node depends on it."""

from __future__ import annotations

import asyncio
import sys

import pytest

import tocsin  # noqa: F401 - importing tocsin installs aio.wait_for on 3.11
from tocsin import aio
from tocsin.aio import wait_for


async def _cancel_as_the_result_arrives() -> asyncio.Task[int]:
    """A task in wait_for whose future gets its result in the same turn as the task's cancel:
    the race in which Python 3.11's wait_for returned the result and dropped the cancel."""
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(asyncio.wait_for(future, 5.0))
    await asyncio.sleep(0)  # the task is now waiting
    future.set_result(1)
    task.cancel()
    return task


async def test_a_cancel_that_meets_the_result_still_cancels() -> None:
    task = await _cancel_as_the_result_arrives()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="Python 3.12's own wait_for is already this one")
def test_importing_tocsin_puts_it_in_place_of_asyncio_s() -> None:
    # Libraries (nats-py) look asyncio.wait_for up at each call: they get this one too.
    assert asyncio.wait_for is wait_for and asyncio.tasks.wait_for is wait_for
    aio.install()  # again: no harm
    assert asyncio.wait_for is wait_for


async def test_a_timeout_raises_and_cancels_what_it_waited_for() -> None:
    inner = asyncio.create_task(asyncio.sleep(10))
    with pytest.raises(TimeoutError):
        await wait_for(inner, 0.05)
    assert inner.cancelled()
    with pytest.raises(TimeoutError):
        await wait_for(asyncio.sleep(10), 0)


async def test_a_result_in_time_is_returned() -> None:
    assert await wait_for(asyncio.sleep(0, "done"), 1.0) == "done"
    assert await wait_for(asyncio.sleep(0, "now"), None) == "now"
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    ready.set_result("ready")
    assert await wait_for(ready, 0) == "ready"


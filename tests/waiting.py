"""Waiting for an event with a deadline, never for a fixed time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def until(condition: Callable[[], object], timeout_s: float = 5.0) -> None:
    """Return once `condition()` is true; TimeoutError after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


async def until_async(condition: Callable[[], Awaitable[object]], timeout_s: float = 5.0, every_s: float = 0.05) -> None:
    """Return once `await condition()` is true (it may do I/O); TimeoutError after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while not await condition():
            await asyncio.sleep(every_s)

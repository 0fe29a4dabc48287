"""A node that stays unready sends its live devices elsewhere, once per red period."""

from __future__ import annotations

import asyncio
import contextlib

from tests.waiting import until
from tocsin.channels.live import Audience, Connection, LiveRegistry, Protocol
from tocsin.health.shed import shed_when_unready


def connect(live: LiveRegistry) -> Connection:
    connection = Connection(device_id="dev", cells=frozenset({"86"}), audience=Audience(),
                            protocol=Protocol.WS, depth=4)
    live.add(connection)
    return connection


async def test_red_longer_than_the_limit_closes_live_connections_once() -> None:
    live = LiveRegistry()
    ready = [True]
    task = asyncio.get_running_loop().create_task(
        shed_when_unready(lambda: ready[0], live, after_s=0.2, period_s=0.02)
    )
    try:
        first = connect(live)
        ready[0] = False
        await until(lambda: first.dropped)
        assert not live.accepting  # new streams are refused while red
        live.remove(first)
        second = connect(live)  # reconnected while still red: not closed again
        await asyncio.sleep(0.3)
        assert not second.dropped
        ready[0] = True
        await until(lambda: live.accepting)
        ready[0] = False  # a new red period
        await until(lambda: second.dropped)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_short_red_blips_do_not_close_anything() -> None:
    live = LiveRegistry()
    flips = iter([False, True] * 50)
    connection = connect(live)
    task = asyncio.get_running_loop().create_task(
        shed_when_unready(lambda: next(flips, True), live, after_s=0.5, period_s=0.01)
    )
    try:
        await asyncio.sleep(0.3)
        assert not connection.dropped
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

"""A node that stays unready sends its live devices elsewhere, once per red period."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from tests.waiting import until
from tocsin.audience import Audience
from tocsin.channels.live import Connection, LiveRegistry, Protocol
from tocsin.health.shed import shed_when_unready


def connect(live: LiveRegistry) -> Connection:
    connection = Connection(device_id="dev", cells=frozenset({"86"}), audience=Audience(),
                            protocol=Protocol.WS, depth=4)
    live.add(connection)
    return connection


class Readiness:
    """The shedder's view of readiness, counting how often it looked."""

    def __init__(self, answers: Iterator[bool] | None = None) -> None:
        self.ready = True
        self.answers = answers
        self.looks = 0

    def __call__(self) -> bool:
        self.looks += 1
        return next(self.answers, True) if self.answers is not None else self.ready

    async def looked(self, times: int) -> None:
        """Return once the shedder has checked `times` more times (each after a period)."""
        goal = self.looks + times
        await until(lambda: self.looks >= goal)


async def test_red_longer_than_the_limit_closes_live_connections_once() -> None:
    live = LiveRegistry()
    readiness = Readiness()
    task = asyncio.get_running_loop().create_task(
        shed_when_unready(readiness, live, after_s=0.2, period_s=0.02)
    )
    try:
        first = connect(live)
        readiness.ready = False
        await until(lambda: first.dropped)
        assert not live.accepting  # new streams are refused while red
        live.remove(first)
        second = connect(live)  # reconnected while still red: not closed again
        await readiness.looked(15)  # 15 periods of 0.02 s: past after_s again
        assert not second.dropped
        readiness.ready = True
        await until(lambda: live.accepting)
        readiness.ready = False  # a new red period
        await until(lambda: second.dropped)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_short_red_blips_do_not_close_anything() -> None:
    live = LiveRegistry()
    readiness = Readiness(iter([False, True] * 50))
    connection = connect(live)
    task = asyncio.get_running_loop().create_task(
        shed_when_unready(readiness, live, after_s=0.05, period_s=0.01)
    )
    try:
        await readiness.looked(100)  # every blip seen: each red for one period, under after_s
        assert not connection.dropped and live.accepting
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

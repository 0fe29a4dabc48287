"""The accept gate: bounded slots, waiters enter by rank, probes never wait behind a burst."""

from __future__ import annotations

import asyncio

import pytest

from tests.waiting import until
from tocsin.pipeline.gate import Gate, GateFull
from tocsin.pipeline.priority import Rank

EXTREME, SEVERE, MINOR, EXERCISE = Rank(0, 0, 0), Rank(0, 1, 0), Rank(0, 3, 2), Rank(2, 0, 0)


async def test_waiters_enter_by_rank_then_by_arrival() -> None:
    gate = Gate(1)
    entered: list[str] = []
    release = asyncio.Event()

    async def accept(name: str, rank: Rank) -> None:
        async with gate.enter(rank):
            entered.append(name)
            if name == "first":
                await release.wait()

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(accept("first", MINOR))
        await until(lambda: entered == ["first"])
        for name, rank in [("exercise", EXERCISE), ("minor-1", MINOR), ("extreme", EXTREME),
                           ("minor-2", MINOR), ("severe", SEVERE)]:
            tasks.create_task(accept(name, rank))
        await until(lambda: gate.waiting == 5)
        release.set()
    assert entered == ["first", "extreme", "severe", "minor-1", "minor-2", "exercise"]


async def test_probes_have_their_own_slots_and_the_waiting_line_is_bounded() -> None:
    gate = Gate(1, probe_slots=1, max_waiting=2)
    release = asyncio.Event()

    async def hold() -> None:
        async with gate.enter(MINOR):
            await release.wait()

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(hold())
        await until(lambda: gate._free == 0)
        waiters = [tasks.create_task(hold()) for _ in range(2)]
        await until(lambda: gate.waiting == 2)
        with pytest.raises(GateFull):
            async with gate.enter(EXTREME):
                pass
        async with asyncio.timeout(1):  # a probe enters although every slot is taken
            async with gate.enter(Rank(1, 4, 4), probe=True) as entry:
                assert entry.ahead == 0
        # A waiter that goes away frees its place; the slot still reaches the next one.
        waiters[0].cancel()
        await until(lambda: gate.waiting == 1)
        release.set()
    assert gate._free == 1 and gate.waiting == 0

"""The follower's stall rule (only a consumer the stream is ahead of, still for STALL_S, is
stalled), and what a restart must never do: cut a take short."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.e2e.conftest import node_settings
from tests.samples import alert_xml
from tests.waiting import until
from tocsin.cap.parse import parse_xml
from tocsin.cap.render import to_xml
from tocsin.cluster.nats_server import NatsServer
from tocsin.pipeline import follow
from tocsin.pipeline.follow import STALL_S, Follower, is_stalled
from tocsin.store.base import Envelope, Stored, alert_id_for
from tocsin.store.jetstream import JetStreamStore, connect


def test_a_follower_is_stalled_only_when_behind_and_still_long_enough() -> None:
    assert is_stalled(behind=True, still_s=STALL_S)
    assert not is_stalled(behind=True, still_s=STALL_S - 0.1)
    # A quiet stream: nothing to follow, however long.
    assert not is_stalled(behind=False, still_s=10 * STALL_S)


async def test_a_long_take_is_never_cut_short_and_nothing_is_taken_twice(
    tmp_path: Path, nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A fan-out longer than the stall time, while the stream moves on and the buffer fills,
    is the consumer waiting for the stages, not a stall: the take runs to its end (a
    cancelled fan-out would leave the devices it had not reached without the alert), and
    every alert is taken once, in order."""
    monkeypatch.setattr(follow, "STALL_S", 0.3)
    monkeypatch.setattr(follow, "STALL_CHECK_S", 0.05)
    monkeypatch.setattr(follow, "FOLLOW_BATCH", 2)  # the buffer fills: the consumer waits on it
    settings = node_settings(tmp_path, nats_server)
    nc = await connect(settings, [nats_server.client_url], name="follow-test")
    store = JetStreamStore(nc, settings)
    await store.ensure()
    release, started, taken, cut = asyncio.Event(), asyncio.Event(), [], []
    position = 0

    async def take(batch: list[Stored]) -> None:
        nonlocal position
        position = batch[-1].seq  # as the index: counted before the fan-out ends
        try:
            if batch[0].seq == 1:
                started.set()
                await release.wait()
        except asyncio.CancelledError:
            cut.append(batch[0].seq)
            raise
        taken.extend(s.seq for s in batch)

    follower = Follower(store, take=take, position=lambda: position)
    running = asyncio.create_task(follower.run())
    try:
        await store.put(_envelope("F-1"))
        await until(started.is_set)
        for n in range(2, 8):
            await store.put(_envelope(f"F-{n}"))
        await until(lambda: follower.waiting == 2)  # the buffer is full
        held = asyncio.get_running_loop().time()
        # Far past the stall time while behind and still: a stalled consumer would be started
        # again (and, before this rule, the take cut) within it.
        await until(lambda: asyncio.get_running_loop().time() - held > 4 * follow.STALL_S + 3 * follow.STALL_CHECK_S, timeout_s=5)
        assert not cut and "stalled" not in caplog.text
        release.set()
        await until(lambda: len(taken) == 7)
        assert taken == list(range(1, 8)) and not cut
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await nc.close()


def _envelope(identifier: str) -> Envelope:
    alert = parse_xml(alert_xml(identifier=identifier))
    now = datetime.now(UTC)
    return Envelope(alert_id=alert_id_for(alert.sender, alert.identifier), payload=to_xml(alert), sig="s", kid="k",
                    issuer="admin", node="n", accepted_at=now)

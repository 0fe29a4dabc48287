"""Cursors (Last-Event-ID): a node replays everything active when it cannot vouch for one.

Found by the fault suite (F14, and the F11 mutation run): when the alerts stream loses its
tail, new and republished alerts reuse seqs that devices have already passed. A device
that resumed from its old cursor was never sent them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ISSUER_TOKEN, node  # noqa: F401 - fixture
from tests.e2e.devices import register, sse_device
from tests.samples import IN_PARIS, alert_xml
from tests.waiting import until
from tocsin.app import Node
from tocsin.audience import Audience
from tocsin.channels.live import Connection, Protocol
from tocsin.pipeline import index as index_module
from tocsin.pipeline.replay import UNVOUCHED, event_id, parse_event_id
from tocsin.store.base import AlertId, Stored

ADMIN = {"Authorization": f"Bearer {ISSUER_TOKEN}", "Content-Type": "application/cap+xml"}


async def issue(http: httpx.AsyncClient) -> tuple[int, str]:
    response = await http.post("/api/v1/alerts", content=alert_xml(), headers=ADMIN)
    assert response.status_code == 201
    return int(response.json()["seq"]), str(response.json()["id"])


def test_event_ids_name_the_seq_and_the_alert() -> None:
    assert event_id(12, "3fa9c0de" + "0" * 24) == "12.3fa9c0de"
    assert parse_event_id("12.3fa9c0de") == (12, "3fa9c0de")
    assert parse_event_id("12") == (12, None)
    assert parse_event_id(str(2**64 - 1)) == (2**64 - 1, None)
    for bad in ("", "x", "12.", "12.XYZ", "-1", "12.3fa9c0de0", str(2**64), f"{2**64}.3fa9c0de",
                "9" * 4000, "\u0661\u0662", "\u00b2", " 12", "+12"):
        try:
            parse_event_id(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was accepted")


async def test_a_cursor_the_stream_cannot_vouch_for_gets_a_full_replay(node: Node) -> None:  # noqa: F811
    replay = node.services.pipeline.replay
    async with httpx.AsyncClient(base_url=node.url) as http:
        seq, alert_id = await issue(http)
        cursor = event_id(seq, alert_id)
        assert await replay.resume_after(cursor) == seq
        # Beyond the end of the stream, or another alert at that seq: replay everything.
        assert await replay.resume_after(f"{seq + 50}.deadbeef") == UNVOUCHED
        assert await replay.resume_after(f"{seq}.deadbeef") == UNVOUCHED
        assert await replay.resume_after(str(seq + 50)) == UNVOUCHED
        device = await register(http, *IN_PARIS)
        # Over HTTP: a device resuming from a cursor into a lost tail gets the alert again.
        async with sse_device(node.url, device["token"], last_event_id=f"{seq + 50}.deadbeef") as sse:
            replayed = await sse.next("alert")
            assert replayed.last_event_id == cursor
        bad = await http.get("/api/v1/stream", headers={"Authorization": f"Bearer {device['token']}",
                                                         "Last-Event-ID": "nope"})
        assert (bad.status_code, bad.json()["code"]) == (400, "device.event-id-invalid")
        # JetStream seqs are 64-bit: 2^64 and beyond name nothing and are refused, not a 500.
        for huge in (str(2**64), f"{2**64}.deadbeef", "9" * 30):
            bad = await http.get("/api/v1/stream", headers={"Authorization": f"Bearer {device['token']}",
                                                             "Last-Event-ID": huge})
            assert (bad.status_code, bad.json()["code"]) == (400, "device.event-id-invalid")


async def test_a_reused_seq_resets_the_follower_and_closes_live_devices(node: Node) -> None:  # noqa: F811
    pipeline = node.services.pipeline
    async with httpx.AsyncClient(base_url=node.url) as http:
        seq, _ = await issue(http)
        device = await register(http, *IN_PARIS)
        async with sse_device(node.url, device["token"]) as sse:
            await sse.next("synced")
            live = [c for members in node.services.live.by_cell.values() for c in members]
            known = pipeline.index.active[seq].stored
            # The stream now holds another alert at a seq it had already given out.
            other = Stored(seq=seq, envelope=dataclasses.replace(known.envelope, alert_id="f" * 32))
            pipeline.fanout.take(other)
            assert pipeline.index.active[seq].stored.envelope.alert_id == "f" * 32
            assert live and all(c.dropped for c in live)  # they resume, and get a full replay


async def test_a_device_that_attaches_while_a_cover_is_computed_still_gets_that_alert(
    node: Node, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """Found by F08 under load: the seq was marked seen before the alert was replayable, so a
    device attaching during the cover was told it was past an alert it never got."""
    pipeline = node.services.pipeline
    async with httpx.AsyncClient(base_url=node.url) as http:
        seq, alert_id = await issue(http)
    await until(lambda: seq in pipeline.index.active)  # the 201 may come before the follower took it
    stored = pipeline.index.active[seq].stored
    # Stored without its cover (as before covers were carried), so the follower computes it.
    fresh = Stored(seq=seq + 1, envelope=dataclasses.replace(stored.envelope, alert_id=AlertId("e" * 32), cover=None))
    covering, release = threading.Event(), threading.Event()
    real_shape = index_module.shape_of

    def slow_shape(areas: Any) -> Any:
        covering.set()
        release.wait(10)
        return real_shape(areas)

    monkeypatch.setattr(index_module, "shape_of", slow_shape)
    taking = asyncio.get_running_loop().create_task(pipeline.fanout.take_and_fan_out(fresh))
    try:
        await until(covering.is_set)
        cells = next(iter(pipeline.index.active[seq].cover.cells))
        connection = Connection(device_id="dev_x", cells=frozenset({cells}), audience=Audience(),
                                protocol=Protocol.SSE, depth=8)
        missed = pipeline.replay.attach(connection, seq)
        assert all(event.seq != seq + 1 for event in missed)  # not replayable yet...
        release.set()
        await taking
        # ...so it comes live.
        assert connection.last_seq == seq + 1
        queued = connection.queue.get_nowait()
        assert isinstance(queued, bytes) and queued.startswith(f"id: {seq + 1}.eeeeeeee".encode())
        node.services.live.remove(connection)
    finally:
        release.set()

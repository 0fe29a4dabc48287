"""How long an alert stays in the feed, over HTTP against a real node with a moved clock,
and across a restart: the node's follower forgets expired alerts, the feed does not."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.e2e.conftest import FakeClock, node_settings, start_node, stop_node
from tests.feeds import atomcheck
from tests.feeds.conftest import issue
from tests.feeds.test_feeds_http import FEED, by_identifier, feed_with
from tests.waiting import until_async
from tocsin.cluster.nats_server import NatsServer

WINDOW_S = 600.0  # the feed fixture's TOCSIN_FEED_WINDOW_S


async def shown(http: httpx.AsyncClient) -> set[str]:
    return set(by_identifier((await http.get(FEED)).content))


async def test_an_alert_leaves_the_window_after_it_expired(http: httpx.AsyncClient, clock: FakeClock) -> None:
    await issue(http, "WIN-SHORT", expires_in_s=30)
    await issue(http, "WIN-LONG", expires_in_s=7200)
    await feed_with(http, FEED, "WIN-SHORT", "WIN-LONG")
    clock.advance(60)  # expired; devices no longer get it; the feed still shows it
    assert await shown(http) == {"WIN-SHORT", "WIN-LONG"}
    clock.advance(WINDOW_S - 50)  # it leaves 30 + WINDOW_S after it was sent: 20 s from now
    assert await shown(http) == {"WIN-SHORT", "WIN-LONG"}
    clock.advance(40)
    assert await shown(http) == {"WIN-LONG"}


async def test_a_superseded_alert_leaves_the_window_after_its_update(http: httpx.AsyncClient, clock: FakeClock) -> None:
    first = await issue(http, "WIN-FIRST", expires_in_s=7200)
    update = await issue(http, "WIN-UPDATE", msg_type="Update", references=[first], expires_in_s=7200)
    before = await feed_with(http, FEED, "WIN-FIRST", "WIN-UPDATE")
    clock.advance(WINDOW_S + 5)
    after = await http.get(FEED)
    assert set(by_identifier(after.content)) == {"WIN-UPDATE"}
    assert after.headers["etag"] != before.headers["etag"]
    assert by_identifier(after.content)["WIN-UPDATE"].cap["references"] == first.reference
    assert update.alert_id in by_identifier(after.content)["WIN-UPDATE"].cap_href


async def test_a_restart_keeps_the_alerts_that_expired_within_the_window(tmp_path: Path, nats_server: NatsServer) -> None:
    clock = FakeClock()
    settings = node_settings(tmp_path, nats_server, feed_window_s=WINDOW_S)
    node, task, cm = await start_node(settings, clock=clock)
    try:
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
            await issue(http, "WIN-RESTART", expires_in_s=30)
            await feed_with(http, FEED, "WIN-RESTART")
            clock.advance(60)
    finally:
        await stop_node(node, task, cm)
    assert (tmp_path / "feed-window.json").is_file()
    node, task, cm = await start_node(settings, clock=clock)
    try:
        assert not node.services.pipeline.index.by_id  # the follower holds no active alert
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
            response = await http.get(FEED)
            assert set(by_identifier(response.content)) == {"WIN-RESTART"}
            entry = atomcheck.entries(response.content)[0]
            assert (await http.get(entry.cap_href)).status_code == 200  # the stream still holds it
            clock.advance(WINDOW_S)
            assert await shown(http) == set()
    finally:
        await stop_node(node, task, cm)


async def test_a_feed_over_its_byte_bound_leaves_out_the_oldest_and_counts_them(
        tmp_path: Path, nats_server: NatsServer) -> None:
    node, task, cm = await start_node(node_settings(tmp_path, nats_server, feed_max_bytes=10_000))
    try:
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
            identifiers = [f"WIN-BIG-{n:02}" for n in range(20)]
            for identifier in identifiers:
                await issue(http, identifier)
            await until_settled(http, len(identifiers))
            response = await http.get(FEED)
            assert len(response.content) <= 10_000
            kept = [e.cap["identifier"] for e in atomcheck.entries(response.content)]
            omitted = atomcheck.feed_child(response.content, "{urn:x-tocsin:feed:1}omitted")
            assert omitted is not None and int(omitted.text or "") == len(identifiers) - len(kept) > 0
            assert kept == identifiers[::-1][:len(kept)]  # the newest kept
            metrics = (await http.get("/metrics")).text
            assert 'tocsin_feed_entries_omitted_total{feed="all"}' in metrics
    finally:
        await stop_node(node, task, cm)


async def until_settled(http: httpx.AsyncClient, alerts: int) -> None:
    """Until the window holds every alert issued (the feed shows some, and omits the rest)."""
    async def settled() -> bool:
        body = (await http.get(FEED)).content
        omitted = atomcheck.feed_child(body, "{urn:x-tocsin:feed:1}omitted")
        left_out = int(omitted.text or "0") if omitted is not None else 0
        return len(atomcheck.entries(body)) + left_out == alerts

    await until_async(settled, timeout_s=10)

"""Header size, count and deadline, body size, pipelining: bounded before they cost anything."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.e2e.devices import register
from tests.edge.conftest import (
    RSS_GROWTH_BOUND_MB, connect, exchange, open_fds, port_of, read_answer, rss_mb, served,
)
from tests.e2e.conftest import start_node, stop_node
from tests.waiting import until
from tocsin.cluster.nats_server import NatsServer
from tocsin.app import Node


async def test_a_huge_header_sent_slowly_is_refused_431_at_the_limit(edge_node: Node, http: httpx.AsyncClient) -> None:
    # The issue: one 128 MB header cost 15.7 s of CPU. Sent in 4 KiB pieces, the node stops
    # reading at 16 KiB and answers; it never sees the rest.
    port = port_of(edge_node.url)
    rss_before = rss_mb()
    reader, writer = await connect(port)
    writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Pad: ")
    answer = None
    try:
        sent = await _send_until_answered(reader, writer, b"a" * 4096, 2048)  # up to 8 MiB
        async with asyncio.timeout(5):
            answer = await read_answer(reader)
    finally:
        writer.close()
    assert answer is not None, f"no answer after {sent} bytes"
    assert answer.status == 431
    assert answer.problem()["code"] == "request.headers-too-large"
    assert sent < 1024 * 1024, sent  # refused long before the attacker finished
    assert await served(http, edge_node.url) < 1.0
    assert rss_mb() - rss_before < RSS_GROWTH_BOUND_MB
    refused = edge_node.services.metrics.refused.labels("request.headers-too-large")._value.get()
    assert refused >= 1


async def _send_until_answered(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, piece: bytes, pieces: int
) -> int:
    """Write `piece` up to `pieces` times, stopping once the node answered; bytes sent."""
    sent = 0
    for _ in range(pieces):
        if reader.at_eof() or reader._buffer:  # type: ignore[attr-defined]  # the answer is in
            break
        try:
            writer.write(piece)
            await writer.drain()
        except ConnectionError:
            break
        sent += len(piece)
        await asyncio.sleep(0.001)
    return sent


async def test_too_many_headers_are_refused_431(edge_node: Node) -> None:
    headers = b"".join(b"X-H%d: 1\r\n" % i for i in range(65))
    answer = await exchange(port_of(edge_node.url), b"GET /livez HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert answer.status == 431
    assert "64 headers" in answer.problem()["detail"]


@pytest.mark.parametrize("edge_node", [{"header_timeout_s": 1.0}], indirect=True)
async def test_slow_headers_are_cut_off_at_the_deadline_while_others_are_served(
    edge_node: Node, http: httpx.AsyncClient
) -> None:
    # Slowloris, bounded: 300 connections send a header line a few times a second and
    # never finish; every one is answered 408 and closed within the deadline (+1 s).
    port = port_of(edge_node.url)
    fds_before, rss_before = open_fds(), rss_mb()
    slow = [await connect(port, f"127.0.0.{2 + i % 200}") for i in range(300)]
    for _, writer in slow:
        writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def trickle() -> None:
        for _ in range(20):
            for _, writer in slow:
                if not writer.is_closing():
                    writer.write(b"X-Slow: 1\r\n")
            await asyncio.sleep(0.1)

    trickler = asyncio.create_task(trickle())
    try:
        assert await served(http, edge_node.url) < 1.0  # served meanwhile
        answers = await asyncio.gather(*(asyncio.wait_for(read_answer(r), 5) for r, _ in slow))
    finally:
        trickler.cancel()
        for _, writer in slow:
            writer.close()
    took = loop.time() - started
    assert {a.status for a in answers} == {408}
    assert answers[0].problem()["code"] == "request.header-timeout"
    assert took < 2.5, took
    await until(lambda: edge_node.services.edge is not None and edge_node.services.edge.public.total == 0, 5)
    await until(lambda: open_fds() <= fds_before + 5, 5)
    assert rss_mb() - rss_before < RSS_GROWTH_BOUND_MB


async def test_a_body_larger_than_the_limit_is_refused_before_it_is_sent(edge_node: Node) -> None:
    # Content-Length over the limit: the answer comes without a byte of body.
    limit = edge_node.settings.max_cap_bytes
    head = b"POST /api/v1/alerts HTTP/1.1\r\nHost: x\r\nContent-Type: application/cap+xml\r\n"
    answer = await exchange(port_of(edge_node.url), head + b"Content-Length: %d\r\n\r\n" % (limit + 1))
    assert answer.status == 413
    assert answer.problem()["code"] == "request.too-large"


async def test_a_chunked_body_is_refused_once_it_passes_the_limit(edge_node: Node) -> None:
    limit = edge_node.settings.max_cap_bytes
    reader, writer = await connect(port_of(edge_node.url))
    writer.write(b"POST /api/v1/devices HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    answer = None
    try:
        sent = await _send_until_answered(reader, writer, b"10000\r\n" + b"a" * 0x10000 + b"\r\n", 4 * limit // 0x10000)
        async with asyncio.timeout(5):
            answer = await read_answer(reader)
    finally:
        writer.close()
    assert answer is not None and answer.status == 413, answer
    assert sent <= limit + 2 * 0x10000 + 512 * 1024, sent


@pytest.mark.parametrize("edge_node", [{"body_timeout_s": 0.5}], indirect=True)
async def test_a_body_that_stops_arriving_is_refused_408(edge_node: Node) -> None:
    head = b"POST /api/v1/devices HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    answer = await exchange(port_of(edge_node.url), head, timeout_s=3)
    assert answer.status == 408
    assert answer.problem()["code"] == "request.body-timeout"


async def test_pipelined_stream_requests_leave_no_connected_device(edge_node: Node, http: httpx.AsyncClient) -> None:
    # The issue: requests pipelined behind a stream left "connected" devices for ever.
    async with httpx.AsyncClient(base_url=edge_node.url) as client:
        device = await register(client, 48.85, 2.35)
    live = edge_node.services.live
    request = (b"GET /api/v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % device["token"].encode())
    for _ in range(10):
        reader, writer = await connect(port_of(edge_node.url))
        writer.write(request * 3)
        await reader.readuntil(b"event: synced")
        writer.close()
    await until(lambda: live.count == 0, 5)
    assert not edge_node.services.streams


async def test_one_device_token_holds_a_bounded_number_of_streams(edge_node: Node) -> None:
    async with httpx.AsyncClient(base_url=edge_node.url) as client:
        device = await register(client, 48.85, 2.35)
    request = b"GET /api/v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % device["token"].encode()
    limit = edge_node.settings.max_streams_per_device
    port = port_of(edge_node.url)
    held = []
    try:
        for _ in range(limit):
            reader, writer = await connect(port)
            writer.write(request)
            await reader.readuntil(b"event: synced")
            held.append(writer)
        answer = await exchange(port, request)
        assert answer.status == 429
        assert answer.problem()["code"] == "device.too-many-streams"
    finally:
        for writer in held:
            writer.close()
    await until(lambda: not edge_node.services.streams, 5)
    async with httpx.AsyncClient(base_url=edge_node.url) as client:
        async with client.stream("GET", "/api/v1/stream", headers={"Authorization": f"Bearer {device['token']}"}) as r:
            assert r.status_code == 200  # the token's streams were given back


async def test_readyz_tells_the_truth_during_slowloris(tmp_path: Path, nats_server: NatsServer) -> None:
    """Below the connection limit, slow clients are cut off and cost nothing: the node goes on
    delivering, and /readyz (on a fresh connection each time, as an outside checker) says so."""
    from tests.health.conftest import GREEN_WITHIN_S, Readyz, fast_settings

    running = await start_node(fast_settings(tmp_path, nats_server, header_timeout_s=1.0))
    node = running[0]
    prober = node.services.prober
    assert prober is not None
    port = port_of(node.url)
    readyz = Readyz(node.url)
    slow: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        async with httpx.AsyncClient(timeout=5, limits=httpx.Limits(max_keepalive_connections=0)) as http:
            await readyz.until(http, ready=True, within_s=GREEN_WITHIN_S)
            delivered = sum(h.delivered for h in prober.channels.values())
            for _wave in range(3):  # three waves, each cut off at the deadline
                slow = [await connect(port, f"127.0.4.{1 + i % 100}") for i in range(200)]
                for _, writer in slow:
                    writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
                for _ in range(4):
                    assert (await readyz.sample(http)).status == 200, readyz.samples[-1]
                    await asyncio.sleep(0.3)
                for _, writer in slow:
                    writer.close()
        assert sum(h.delivered for h in prober.channels.values()) > delivered
    finally:
        for _, writer in slow:
            writer.close()
        await stop_node(*running)

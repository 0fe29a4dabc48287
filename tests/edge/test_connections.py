"""Connections per source and per node; issuers on their own listener while devices flood."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.e2e.conftest import ISSUER_TOKEN
from tests.edge.conftest import RSS_GROWTH_BOUND_MB, connect, exchange, open_fds, port_of, rss_mb, served
from tests.samples import alert_xml
from tests.waiting import until
from tocsin.app import Node

LIVEZ = b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("edge_node", [{"max_connections_per_source": 20}], indirect=True)
async def test_one_address_holds_a_bounded_number_of_connections(edge_node: Node, http: httpx.AsyncClient) -> None:
    port = port_of(edge_node.url)
    held = [await connect(port, "127.0.0.9") for _ in range(20)]
    try:
        await until(lambda: edge_node.services.edge is not None and edge_node.services.edge.public.total >= 20, 5)
        answer = await exchange(port, LIVEZ, source="127.0.0.9")
        assert answer.status == 429
        assert answer.problem()["code"] == "request.source-full"
        assert await served(http, edge_node.url) < 1.0  # another address is served
    finally:
        for _, writer in held:
            writer.close()


@pytest.mark.parametrize(
    "edge_node", [{"max_connections": 100, "issuer_listen": "127.0.0.1:0", "header_timeout_s": 30.0}], indirect=True
)
async def test_issuers_and_readiness_are_served_while_devices_fill_the_public_listener(
    edge_node: Node, http: httpx.AsyncClient
) -> None:
    # A bounded flood: 100 idle connections from 50 addresses fill the public listener, 200
    # more are refused; the issuer listener keeps issuing alerts, and its /readyz says red.
    public, issuer = port_of(edge_node.url), port_of(edge_node.settings.issuer_listen)
    issuer_url = f"http://{edge_node.settings.issuer_listen}"
    fds_before, rss_before = open_fds(), rss_mb()
    assert "connections" not in (await http.get(f"{issuer_url}/readyz")).json()["failing"]
    flood = [await connect(public, f"127.0.1.{1 + i % 50}") for i in range(100)]
    try:
        edge = edge_node.services.edge
        assert edge is not None
        await until(lambda: edge.public.total == 100, 5)
        refused = await asyncio.gather(*(exchange(public, LIVEZ, source=f"127.0.2.{1 + i % 50}") for i in range(200)))
        assert {a.status for a in refused} == {503}
        assert refused[0].problem()["code"] == "request.node-full"
        ready = await http.get(f"{issuer_url}/readyz")
        assert ready.status_code == 503
        assert "connections" in ready.json()["failing"]
        assert ready.json()["checks"]["connections"]["value"]["open"] == 100
        loop = asyncio.get_running_loop()
        for _ in range(5):
            started = loop.time()
            response = await http.post(
                f"{issuer_url}/api/v1/alerts", content=alert_xml(), headers={
                    "Authorization": f"Bearer {ISSUER_TOKEN}", "Content-Type": "application/cap+xml"},
            )
            assert response.status_code == 201, response.text
            assert loop.time() - started < 2.0
        assert issuer != public
        assert rss_mb() - rss_before < RSS_GROWTH_BOUND_MB
    finally:
        for _, writer in flood:
            writer.close()
    await until(lambda: edge.public.total == 0, 5)
    await until(lambda: open_fds() <= fds_before + 5, 5)
    assert await served(http, edge_node.url) < 1.0
    metric = edge_node.services.metrics.refused.labels("request.node-full")._value.get()
    assert metric >= 200

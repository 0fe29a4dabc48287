"""HTTP/1.0, redirects, security and CORS headers, WebSocket message size, the issuer cache."""

from __future__ import annotations

import httpx
import pytest
import websockets
from websockets.asyncio.client import connect as ws_connect

from tests.e2e.devices import register
from tests.edge.conftest import exchange, port_of
from tests.waiting import until
from tocsin.api.ttl_cache import TtlCache
from tocsin.app import Node


async def test_http_1_0_clients_never_get_chunked_encoding(edge_node: Node) -> None:
    async with httpx.AsyncClient(base_url=edge_node.url) as client:
        device = await register(client, 48.85, 2.35)
    port = port_of(edge_node.url)
    stream = await exchange(port, b"GET /api/v1/stream HTTP/1.0\r\nAuthorization: Bearer %s\r\n\r\n" % device["token"].encode())
    assert stream.status == 505
    assert stream.problem()["code"] == "request.http-version"
    for path in (b"/livez", b"/readyz", b"/status", b"/openapi.json", b"/.well-known/tocsin/keys"):
        answer = await exchange(port, b"GET " + path + b" HTTP/1.0\r\n\r\n")
        assert "transfer-encoding" not in answer.headers, path
        assert int(answer.headers["content-length"]) == len(answer.body), path
    assert not edge_node.services.streams and edge_node.services.live.count == 0


async def test_no_redirect_is_built_from_the_host_header(edge_node: Node) -> None:
    answer = await exchange(port_of(edge_node.url), b"GET /readyz/ HTTP/1.1\r\nHost: evil.example\r\n\r\n")
    assert answer.status == 404
    assert "location" not in answer.headers
    assert b"evil.example" not in answer.body


async def test_html_has_security_headers_and_public_reads_allow_any_origin(edge_node: Node) -> None:
    async with httpx.AsyncClient(base_url=edge_node.url) as client:
        page = await client.get("/status", headers={"Accept": "text/html"})
        assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none'
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        keys = await client.get("/.well-known/tocsin/keys", headers={"Origin": "https://app.example"})
        assert keys.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in keys.headers
        # The issuer API: no CORS header and no preflight, so no page of another origin can use it.
        issue = await client.post("/api/v1/alerts", content=b"<x/>", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in issue.headers
        preflight = await client.options("/api/v1/alerts", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in preflight.headers
        register_preflight = await client.options("/api/v1/devices", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
        assert register_preflight.status_code == 204
        assert register_preflight.headers["access-control-allow-methods"] == "POST"
        device = await register(client, 48.85, 2.35)
        async with client.stream("GET", "/api/v1/stream", headers={"Authorization": f"Bearer {device['token']}"}) as s:
            assert s.headers["access-control-allow-origin"] == "*"  # the fast path's head too


async def test_websocket_messages_are_small_and_never_compressed(edge_node: Node) -> None:
    async with httpx.AsyncClient(base_url=edge_node.url) as client:
        device = await register(client, 48.85, 2.35)
    url = edge_node.url.replace("http://", "ws://") + f"/api/v1/ws?token={device['token']}"
    async with ws_connect(url, compression="deflate", max_size=2**20) as ws:
        assert "permessage-deflate" not in (ws.response.headers.get("sec-websocket-extensions") or "")
        assert '"synced"' in str(await ws.recv())
        await ws.send("x" * (edge_node.settings.ws_max_message_bytes + 1))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    await until(lambda: edge_node.services.live.count == 0 and not edge_node.services.streams, 5)


async def test_wrong_issuer_tokens_are_cached_bounded_and_for_a_while_only(edge_node: Node) -> None:
    cache = edge_node.services.issuer_cache
    async with httpx.AsyncClient(base_url=edge_node.url) as client:
        for i in range(50):
            response = await client.post("/api/v1/alerts", content=b"<x/>", headers={"Authorization": f"Bearer wrong-{i}"})
            assert response.status_code == 401
    assert 50 <= len(cache) <= cache.max_entries
    now = [0.0]
    small: TtlCache[str, object] = TtlCache(3, 10.0, clock=lambda: now[0])
    for i in range(5):
        small.put(f"t{i}", None)
    assert len(small) == 3 and small.get("t0", "miss") == "miss" and small.get("t4", "miss") is None
    now[0] = 10.0
    assert small.get("t4", "miss") == "miss"

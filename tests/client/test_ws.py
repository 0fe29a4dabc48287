"""The watcher over WebSocket, against a local websockets server playing the node."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from websockets.asyncio.server import ServerConnection, serve

from tocsin.client.backoff import Backoff
from tocsin.client.watch import Watcher
from tocsin.client.ws import ws_url
from tocsin.signing import SigningKey

from .cap_samples import NOW, PARIS, cap_xml
from .fake_node import FakeNode


def _frame(seq: int, cap: str, key: SigningKey) -> str:
    return json.dumps({"type": "alert", "seq": seq, "id": f"al_{seq}", "kid": key.kid,
                       "sig": key.sign(cap.encode()), "cap": cap})


class WsNode:
    """Each connection plays the next script: frames to send, then a close code (or stay)."""

    def __init__(self, key: SigningKey, scripts: list[tuple[list[str], int | None]]) -> None:
        self.key = key
        self.scripts = scripts
        self.queries: list[dict[str, list[str]]] = []

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.queries.append(parse_qs(urlparse(ws.request.path).query))
        frames, close = self.scripts.pop(0) if self.scripts else ([], None)
        for frame in frames:
            await ws.send(frame)
        if close is None:
            await ws.wait_closed()
        else:
            await ws.close(code=close, reason="device.unknown" if close == 4401 else "")


@pytest.fixture
async def ws_node() -> AsyncIterator[tuple[WsNode, str]]:
    node = WsNode(SigningKey.generate(), [])
    async with serve(node.handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield node, f"http://127.0.0.1:{port}"


def test_ws_url_carries_token_and_last_event_id() -> None:
    assert ws_url("https://n.example", "dev_1.s", 7) == "wss://n.example/api/v1/ws?token=dev_1.s&last_event_id=7"
    assert ws_url("http://n", "t", None) == "ws://n/api/v1/ws?token=t"


async def test_watcher_follows_the_websocket_stream(ws_node: tuple[WsNode, str]) -> None:
    node, url = ws_node
    http = FakeNode(key=node.key)  # keys and registration over HTTP
    synced = json.dumps({"type": "synced", "node": "n1", "seq": 2})
    node.scripts = [
        ([_frame(1, cap_xml(identifier="W-1"), node.key), '{"type":"keepalive"}'], 1001),
        ([_frame(2, cap_xml(identifier="W-2"), node.key), synced], None),
    ]
    delays: list[float] = []

    async def no_sleep(delay: float) -> None:
        delays.append(delay)

    def now() -> datetime:
        return NOW + timedelta(seconds=1)

    async with Watcher([url], [PARIS], protocol="ws", transport=http.transport(), now=now,
                       keys={node.key.kid: node.key.public_jwk()}, sleep=no_sleep, backoff=Backoff(rng=random.Random(0))) as w:
        async with asyncio.timeout(3):
            displays = w.displays()
            first, second = await anext(displays), await anext(displays)
            done = await w.wait_synced()
    assert (first.identifier, second.identifier) == ("W-1", "W-2")
    assert node.queries[0] == {"token": ["dev_1.secret"]}
    assert node.queries[1] == {"token": ["dev_1.secret"], "last_event_id": ["1"]}
    assert (done.node, done.seq) == ("n1", 2)


async def test_websocket_close_4401_registers_again(ws_node: tuple[WsNode, str]) -> None:
    node, url = ws_node
    http = FakeNode(key=node.key)
    node.scripts = [([], 4401), ([_frame(1, cap_xml(identifier="W-3"), node.key)], None)]

    async def no_sleep(delay: float) -> None:
        await asyncio.sleep(0)

    async with Watcher([url], [PARIS], protocol="ws", transport=http.transport(),
                       keys={node.key.kid: node.key.public_jwk()}, now=lambda: NOW, sleep=no_sleep) as w:
        async with asyncio.timeout(3):
            display = await anext(w.displays())
    assert display.identifier == "W-3"
    assert len(http.registrations) == 2
    assert node.queries[1]["token"] == ["dev_2.secret"]

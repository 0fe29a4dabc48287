"""Several nodes on one JetStream: each push device gets each alert once, and a node killed
with sends in flight still leads to every delivery happening once (on another node)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from tocsin.app import Node
from tocsin.delivery.model import FCM
from tocsin.settings import Settings

from tests.conftest import unique_name
from tests.delivery.gateway import Gateway, GatewaySender
from tests.delivery.test_dispatch import ISSUER, alert_id_of, fast
from tests.e2e.conftest import start_node, stop_node
from tests.fakes.h2 import h2_server
from tests.samples import IN_PARIS, alert_xml
from tests.waiting import until, until_async


class Nodes:
    """Nodes sharing one stream, device bucket and work queue (each its own data dir)."""

    def __init__(self, tmp_path: Path, nats_server: Any, gateway_url: str) -> None:
        self._base = fast(tmp_path, nats_server)
        self._tmp_path = tmp_path
        self._url = gateway_url
        self.running: dict[str, tuple[Node, asyncio.Task[None], object]] = {}

    async def start(self, name: str) -> Node:
        folder = self._tmp_path / name
        folder.mkdir()
        settings: Settings = self._base.replace(data_dir=folder, node_name=f"{name}-{unique_name('n')}")
        started = await start_node(settings, senders={FCM: GatewaySender(self._url, settings, node=name)})
        self.running[name] = started
        return started[0]

    async def stop(self, name: str) -> None:
        await stop_node(*self.running.pop(name))

    async def stop_all(self) -> None:
        for name in list(self.running):
            await self.stop(name)


@asynccontextmanager
async def cluster(tmp_path: Path, nats_server: Any) -> AsyncIterator[tuple[Nodes, Gateway]]:
    gateway = Gateway()
    async with h2_server(gateway.app()) as url:
        nodes = Nodes(tmp_path, nats_server, url)
        try:
            yield nodes, gateway
        finally:
            await nodes.stop_all()


async def register(node: Node, token: str) -> str:
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
        response = await http.post("/api/v1/devices", json={
            "channel": FCM, "token": token, "points": [{"lat": IN_PARIS[0], "lon": IN_PARIS[1]}]})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


async def issue(node: Node, **fields: Any) -> None:
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
        response = await http.post("/api/v1/alerts", content=alert_xml(**fields), headers=ISSUER)
        assert response.status_code == 201, response.text


async def queue_empty(node: Node) -> bool:
    info = await node.services.store.jetstream.stream_info(node.settings.deliveries_stream)
    return int(info.state.messages) == 0


async def test_three_nodes_deliver_each_alert_to_each_device_once(tmp_path: Path, nats_server: Any) -> None:
    async with cluster(tmp_path, nats_server) as (nodes, gateway):
        members = [await nodes.start(name) for name in ("a", "b", "c")]
        devices = [await register(members[i % 3], f"dev-{i}") for i in range(6)]
        for node in members:
            await until(lambda: all(d in node.services.device_cache for d in devices), 10)
        for node in members:
            await issue(node)
        await until(lambda: len(gateway.sent()) >= 18, 20)
        await until_async(lambda: queue_empty(members[0]), 10)
        sent = Counter((r.token, alert_id_of(r.body)) for r in gateway.sent())
        assert len(sent) == 18 and set(sent.values()) == {1}
        # Each alert planned by one node only.
        assert sum(node.planner.planned for node in members if node.planner) == 3


async def test_a_node_killed_with_sends_in_flight_leaves_them_to_another(tmp_path: Path, nats_server: Any) -> None:
    async with cluster(tmp_path, nats_server) as (nodes, gateway):
        gateway.hang_for.add("a")
        first = await nodes.start("a")
        devices = [await register(first, f"dev-{i}") for i in range(4)]
        await until(lambda: all(d in first.services.device_cache for d in devices), 10)
        await issue(first)
        # Node a holds every delivery in flight (its gateway requests hang); then it dies.
        await until(lambda: len({r.token for r in gateway.to_node("a")}) == 4, 10)
        second = await nodes.start("b")
        await nodes.stop("a")
        await until(lambda: len(gateway.sent()) == 4, 20)
        await until_async(lambda: queue_empty(second), 10)
        assert sorted(r.token for r in gateway.sent()) == [f"dev-{i}" for i in range(4)]
        assert {r.node for r in gateway.sent()} == {"b"}

"""Push deliveries end to end: a node plans each alert once, its dispatchers send through a
fake gateway on loopback (HTTP/2, TLS), retried, backed off, given up at expiry, removed."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tocsin.app import Node
from tocsin.api.device_records import record_json, renew_if_due
from tocsin.delivery.dispatcher import Dispatcher, Parts
from tocsin.delivery.model import FCM
from tocsin.settings import Settings

from tests.conftest import unique_name
from tests.delivery.gateway import Gateway, GatewaySender
from tests.e2e.conftest import ISSUER_TOKEN, node_settings, start_node, stop_node
from tests.e2e.test_follow_ups import follow_up_xml
from tests.fakes.h2 import h2_server
from tests.fakes.tls import gateway_ca
from tests.samples import IN_LYON, IN_PARIS, alert_xml
from tests.waiting import until, until_async

ISSUER = {"Authorization": f"Bearer {ISSUER_TOKEN}", "Content-Type": "application/cap+xml"}
LYON_BOX = "45.70,4.78 45.70,4.90 45.80,4.90 45.80,4.78 45.70,4.78"


@dataclass
class Running:
    node: Node
    gateway: Gateway
    http: httpx.AsyncClient
    sender: GatewaySender

    async def register(self, token: str, place: tuple[float, float] = IN_PARIS, **extra: Any) -> dict[str, Any]:
        body = {"channel": FCM, "token": token, "points": [{"lat": place[0], "lon": place[1]}], **extra}
        response = await self.http.post("/api/v1/devices", json=body)
        assert response.status_code == 201, response.text
        found: dict[str, Any] = response.json()
        await until(lambda: found["id"] in self.node.services.device_cache)
        return found

    async def issue(self, xml: bytes) -> str:
        response = await self.http.post("/api/v1/alerts", content=xml, headers=ISSUER)
        assert response.status_code == 201, response.text
        return str(response.json()["identifier"])

    async def queued(self) -> int:
        info = await self.node.services.store.jetstream.stream_info(self.node.settings.deliveries_stream)
        return int(info.state.messages)


def fast(tmp_path: Path, nats_server: Any, **changes: Any) -> Settings:
    return node_settings(
        tmp_path, nats_server, deliveries_stream=unique_name("DELIVERIES_T"), push_ca_file=str(gateway_ca().ca_file),
        push_timeout_s=1.0, delivery_ack_wait_s=3.0, delivery_backoff_base_s=0.05, delivery_backoff_max_s=0.4,
        breaker_failures=3, breaker_open_s=1.0, dispatch_concurrency=8,
    ).replace(**changes)


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Running]:
    gateway = Gateway()
    async with h2_server(gateway.app()) as url:
        sender = GatewaySender(url, settings)
        started = await start_node(settings, senders={FCM: sender})
        try:
            async with httpx.AsyncClient(base_url=started[0].url, timeout=10) as http:
                yield Running(started[0], gateway, http, sender)
        finally:
            await stop_node(*started)


def alert_id_of(body: bytes) -> str:
    return str(json.loads(body)["id"])


async def test_each_push_device_in_the_area_gets_the_alert_once(tmp_path: Path, nats_server: Any) -> None:
    async with running(fast(tmp_path, nats_server)) as run:
        inside = [await run.register(f"paris-{i}") for i in range(3)]
        await run.register("lyon-0", IN_LYON)
        live = await run.http.post("/api/v1/devices", json={"points": [{"lat": IN_PARIS[0], "lon": IN_PARIS[1]}]})
        assert live.status_code == 201 and live.json()["channel"] == "live"
        await run.issue(alert_xml())
        await until(lambda: len(run.gateway.sent()) >= 3, 10)
        await until_async(lambda: _empty(run), 5)
        assert sorted(r.token for r in run.gateway.received) == [f"paris-{i}" for i in range(3)]
        payload = json.loads(run.gateway.received[0].body)
        assert set(payload) == {"seq", "id", "kid", "sig", "cap"} and "<identifier>" in payload["cap"]
        assert all(0 < r.ttl <= 3600 for r in run.gateway.received)
        assert len(inside) == 3


async def _empty(run: Running) -> bool:
    return await run.queued() == 0

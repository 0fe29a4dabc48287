"""A real node with CAP routes, a downstream receiver on loopback (HTTP/2 over TLS), and
the helpers the route tests share: add a route, issue an alert, enqueue its delivery as the
planner would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cap.capdata import official_schema
from tests.conftest import unique_name
from tests.e2e.conftest import ADMIN_TOKEN, ISSUER_TOKEN, node_settings, running_node
from tests.fakes.h2 import h2_server
from tests.fakes.tls import gateway_ca
from tests.routes.receiver import Receiver
from tocsin.app import Node
from tocsin.cluster.nats_server import NatsServer
from tocsin.delivery import queue
from tocsin.delivery.model import CAP, Delivery
from tocsin.settings import Settings
from tocsin.store.base import AlertId
from tocsin.store.jetstream import JetStreamStore

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ISSUER = {"Authorization": f"Bearer {ISSUER_TOKEN}"}
XML = {"Content-Type": "application/cap+xml"}


def route_settings(tmp_path: Path, nats_server: NatsServer, **changes: Any) -> Settings:
    """Fast retries, short timeouts, rare link tests (a test asks for them), its own queue and buckets."""
    base: dict[str, Any] = dict(
        deliveries_stream=unique_name("DELIV_T"), routes_bucket=unique_name("ROUTES_T"),
        push_ca_file=str(gateway_ca().ca_file), route_link_test_s=3600.0, push_timeout_s=1.0,
        delivery_backoff_base_s=0.05, delivery_backoff_max_s=0.2,
    )
    return node_settings(tmp_path, nats_server, **{**base, **changes})


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    official_schema()  # the receiver's referee: skips here (not inside a request) when the XSD is absent
    found = Receiver(keys={})
    async with h2_server(found.app()) as url:
        found.url = f"{url}/cap"
        try:
            yield found
        finally:
            found.release()


def trust(receiver: Receiver, node: Node) -> None:
    """The receiver verifies with this deployment's key (as it would read /.well-known/tocsin/keys)."""
    signer = node.services.signer
    receiver.keys[signer.kid] = signer.public_jwk()


@pytest.fixture
async def node(tmp_path: Path, nats_server: NatsServer, receiver: Receiver) -> AsyncIterator[Node]:
    async with running_node(route_settings(tmp_path, nats_server)) as started:
        trust(receiver, started)
        yield started


@pytest.fixture
async def http(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
        yield client


async def add_route(http: httpx.AsyncClient, name: str, url: str, **fields: Any) -> dict[str, Any]:
    response = await http.put(f"/api/v1/admin/routes/{name}", json={"url": url, **fields}, headers=ADMIN)
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


async def issue(http: httpx.AsyncClient, xml: bytes) -> dict[str, Any]:
    """Issue an alert as the automated source; the answer (id, seq, expires)."""
    response = await http.post("/api/v1/alerts", content=xml, headers={**ISSUER, **XML})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def enqueue(node: Node, route: str, issued: dict[str, Any]) -> Delivery:
    """What the planner does for each route of an alert: one delivery on `S.route.<route>`."""
    store = node.services.store
    assert isinstance(store, JetStreamStore)
    # The expiry the follower and the planner go by (a Cancel without its own: the default lifetime).
    expires = (await store.get(AlertId(issued["id"]))).envelope.expires_at
    assert expires is not None
    delivery = Delivery(alert_id=issued["id"], seq=int(issued["seq"]), channel=CAP, destination=route,
                        expires_at=expires.timestamp(), urgent=False)
    await queue.enqueue(store.jetstream, node.settings, delivery)
    return delivery


def route_record(node: Node, route: str) -> dict[str, Any]:
    """The route's delivery status as this node holds it."""
    return node.services.route_status.get(f"delivery.{route}") or {}

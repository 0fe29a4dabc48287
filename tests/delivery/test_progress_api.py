"""Receipts and delivery progress through the HTTP API of real nodes on a real nats-server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import unique_name
from tests.e2e.conftest import ISSUER_TOKEN, node_settings, running_node
from tests.e2e.devices import register
from tests.samples import alert_xml
from tests.waiting import until, until_async
from tocsin.app import Node
from tocsin.cluster.nats_server import NatsServer
from tocsin.delivery.model import Outcome
from tocsin.store.base import AlertId

ISSUE = {"Content-Type": "application/cap+xml", "Authorization": f"Bearer {ISSUER_TOKEN}"}
PARIS = (48.8566, 2.3522)


@pytest.fixture
async def nodes(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[tuple[Node, Node]]:
    """Two nodes of one deployment (one stream, one progress bucket)."""
    stream, bucket = unique_name("ALERTS_P"), unique_name("PROG")
    small = {"progress_bucket": bucket, "progress_max_bytes": 1024 * 1024}
    one = node_settings(tmp_path / "one", nats_server, stream=stream, receipts_per_device_per_min=5, **small)
    two = node_settings(tmp_path / "two", nats_server, stream=stream, **small)
    async with running_node(one) as first, running_node(two) as second:
        yield first, second


async def _issue(http: httpx.AsyncClient, nodes: tuple[Node, ...]) -> tuple[str, int]:
    response = await http.post("/api/v1/alerts", content=alert_xml(), headers=ISSUE)
    assert response.status_code == 201, response.text
    alert_id, seq = response.json()["id"], response.json()["seq"]
    await until(lambda: all(AlertId(alert_id) in n.services.pipeline.index.by_id for n in nodes), timeout_s=10)
    return alert_id, seq


def _device(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_receipt_counts_once_per_device_and_shows_in_the_alert(nodes: tuple[Node, Node]) -> None:
    one, two = nodes
    async with httpx.AsyncClient(base_url=one.url, timeout=10) as http, \
            httpx.AsyncClient(base_url=two.url, timeout=10) as other:
        alert_id, seq = await _issue(http, nodes)
        device = await register(http, *PARIS)
        answer = await http.post("/api/v1/receipts", json={"alert_id": alert_id, "event_id": f"{seq}.{alert_id[:8]}"},
                                 headers=_device(device["token"]))
        assert answer.status_code == 202 and answer.json() == {"alert_id": alert_id, "channel": "live", "counted": True}
        again = await http.post("/api/v1/receipts", json={"alert_id": alert_id}, headers=_device(device["token"]))
        assert again.status_code == 202 and again.json()["counted"] is False
        # Another device's receipt on the other node: the alert shows both, from either node.
        second = await register(other, *PARIS)
        assert (await other.post("/api/v1/receipts", json={"alert_id": alert_id, "event_id": seq},
                                 headers=_device(second["token"]))).status_code == 202

        async def both_counted() -> bool:
            body = (await other.get(f"/api/v1/alerts/{alert_id}")).json()
            return bool(body["delivery"]["channels"].get("live", {}).get("receipts") == 2)

        await until_async(both_counted, timeout_s=10, every_s=0.2)
        metrics = (await http.get("/metrics")).text
        assert 'tocsin_receipts_total{channel="live"} 1.0' in metrics


async def test_gateway_progress_is_summed_over_the_nodes_in_the_alert(nodes: tuple[Node, Node]) -> None:
    one, two = nodes
    async with httpx.AsyncClient(base_url=one.url, timeout=10) as http:
        alert_id, _ = await _issue(http, nodes)
        # What the planner (on one node) and the dispatchers (on both) report.
        one.services.progress.planned(alert_id, "webpush", 3)
        one.services.progress.finished(alert_id, "webpush", Outcome.SENT)
        two.services.progress.finished(alert_id, "webpush", Outcome.GONE, "http-410")
        expected = {"planned": 3, "queued": 1, "sent": 1, "failed": {"http-410": 1}, "receipts": 0}

        async def summed() -> bool:
            body = (await http.get(f"/api/v1/alerts/{alert_id}")).json()
            return bool(body["delivery"]["channels"].get("webpush") == expected)

        await until_async(summed, timeout_s=10, every_s=0.2)
        body = (await http.get(f"/api/v1/alerts/{alert_id}")).json()
        assert body["delivery"]["node"] == one.settings.node_name  # what was there stays
        metrics = (await http.get("/metrics")).text  # this node's own share
        assert 'tocsin_deliveries_total{channel="webpush",outcome="planned"} 3.0' in metrics
        assert 'tocsin_deliveries_total{channel="webpush",outcome="sent"} 1.0' in metrics
        assert 'outcome="failed"' not in metrics and "tocsin_progress_alerts 1.0" in metrics
        record = await one.services.store.progress.get(f"{alert_id}.{two.settings.node_name}")  # type: ignore[attr-defined]
        assert record is not None and record["node"] == two.settings.node_name
        # The record leaves with the alert: its TTL runs to the expiry (an hour) plus the keep time.
        assert one.services.progress._alerts[alert_id].ttl_s <= 3600 + one.settings.progress_keep_s + 5


@pytest.mark.parametrize(("body", "status", "code"), [
    (b"not json", 400, "request.malformed"),
    (b"[1]", 422, "receipt.invalid"),
    (b'{"alert_id": "nope"}', 422, "receipt.invalid"),
    (b'{"alert_id": "' + b"f" * 32 + b'"}', 422, "receipt.invalid"),  # not an active alert
    (b'{"alert_id": "ALERT", "extra": 1}', 422, "receipt.invalid"),
    (b'{"alert_id": "ALERT", "event_id": 999999}', 422, "receipt.invalid"),  # another event
    (b'{"alert_id": "ALERT", "event_id": "1.ffffffff"}', 422, "receipt.invalid"),  # another alert's id
    (b'{"alert_id": "ALERT", "event_id": true}', 422, "receipt.invalid"),
    (b'{"alert_id": "ALERT", "pad": "' + b"x" * 600 + b'"}', 413, "request.too-large"),
])
async def test_a_receipt_is_refused_plainly(nodes: tuple[Node, Node], body: bytes, status: int, code: str) -> None:
    one = nodes[0]
    async with httpx.AsyncClient(base_url=one.url, timeout=10) as http:
        alert_id, _ = await _issue(http, nodes)
        device = await register(http, *PARIS)
        answer = await http.post("/api/v1/receipts", content=body.replace(b"ALERT", alert_id.encode()),
                                 headers={**_device(device["token"]), "Content-Type": "application/json"})
        assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        if code == "receipt.invalid":  # the field at fault is named
            assert answer.json()["errors"][0]["path"] in ("$", "alert_id", "event_id", "extra")
        assert one.services.progress.local(alert_id) == {}


async def test_a_receipt_needs_a_device_token_and_keeps_to_its_rate(nodes: tuple[Node, Node]) -> None:
    one = nodes[0]
    async with httpx.AsyncClient(base_url=one.url, timeout=10) as http:
        alert_id, _ = await _issue(http, nodes)
        for headers in ({}, _device("dev_000000000000000000000000.wrong"), {"Authorization": f"Bearer {ISSUER_TOKEN}"}):
            answer = await http.post("/api/v1/receipts", json={"alert_id": alert_id}, headers=headers)
            assert (answer.status_code, answer.json()["code"]) == (401, "device.unknown")
        device = await register(http, *PARIS)
        answers: list[Any] = []
        started = time.monotonic()
        for _ in range(one.settings.receipts_per_device_per_min + 1):
            answers.append(await http.post("/api/v1/receipts", json={"alert_id": alert_id},
                                           headers=_device(device["token"])))
        assert time.monotonic() - started < 10  # the bucket cannot have refilled meanwhile
        assert [a.status_code for a in answers[:-1]] == [202] * one.settings.receipts_per_device_per_min
        assert answers[-1].status_code == 429 and answers[-1].json()["code"] == "receipt.rate-limited"
        assert int(answers[-1].headers["Retry-After"]) >= 1
        # A browser app may send receipts from its own origin.
        preflight = await http.options("/api/v1/receipts", headers={"Origin": "https://app.example",
                                                                      "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 204 and "authorization" in preflight.headers["access-control-allow-headers"]

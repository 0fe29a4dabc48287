"""Bounded life: alerts and probes leave the stream on their own; a full stream says so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from tests.e2e.conftest import ISSUER_TOKEN, node_settings, start_node, stop_node
from tests.samples import alert_xml
from tests.waiting import until, until_async
from tocsin.cap.parse import parse_xml
from tocsin.cluster.nats_server import NatsServer
from tocsin.pipeline.accept import Retention
from tocsin.prober.probe import prober_sender
from tocsin.store.base import AlertId, alert_id_for
from tocsin.store.jetstream import JetStreamStore, subject_for

ISSUE = {"Content-Type": "application/cap+xml", "Authorization": f"Bearer {ISSUER_TOKEN}"}


async def _ttl_s(store: JetStreamStore, alert_id: AlertId) -> int:
    """The Nats-TTL the stored message carries, in seconds."""
    raw = await store._js.get_last_msg(store.stream, subject_for(store.stream, alert_id))
    ttl = (raw.headers or {})["Nats-TTL"]
    assert ttl.endswith("s"), ttl
    return int(ttl[:-1])


def test_an_alert_is_kept_a_set_time_after_it_expires_and_a_probe_minutes() -> None:
    retention = Retention(default_lifetime_s=3600, after_expiry_s=7 * 86400, probe_s=300)
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    expires = now + timedelta(hours=2)
    assert retention.retain_until(expires, now, probe=False) == expires + timedelta(days=7)
    assert retention.retain_until(expires, now, probe=True) == now + timedelta(minutes=5)
    # No <expires>: the deployment's default lifetime, from sent.
    alert = parse_xml(alert_xml(sent=now, expires_in_s=None))
    assert retention.expires_at(alert) == now + timedelta(hours=1)


async def test_an_expired_alert_leaves_the_stream_after_its_retention_and_stays_in_the_ledger(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    node, task, cm = await start_node(node_settings(tmp_path, nats_server, retention_after_expiry_s=2.0))
    try:
        store = node.services.store
        body = alert_xml(expires_in_s=2)
        alert = parse_xml(body)
        alert_id = alert_id_for(alert.sender, alert.identifier)
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
            assert (await http.post("/api/v1/alerts", content=body, headers=ISSUE)).status_code == 201
        assert await store.holds(alert_id)
        # Expires in about 2 s, then 2 s of retention.
        assert 2 <= await _ttl_s(store, alert_id) <= 6

        async def gone() -> bool:
            return not await store.holds(alert_id)

        await until_async(gone, timeout_s=20)
        recorded = node.ledger.envelope(alert_id)
        assert recorded is not None and parse_xml(recorded.payload).identifier == alert.identifier
        # Retention removed it on purpose: the reconciler never calls it missing.
        for _ in range(3):
            assert await node.reconciler.reconcile() == 0
        assert await gone() and node.reconciler.republished == 0
    finally:
        await stop_node(node, task, cm)


async def test_probes_leave_the_stream_minutes_after_they_were_read_and_the_ledger_keeps_few(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    settings = node_settings(tmp_path, nats_server, probe_interval_s=0.5, probe_expires_s=1.0,
                             probe_deadline_s=2.0, probe_retention_s=3.0)
    node, task, cm = await start_node(settings)
    try:
        prober, store = node.services.prober, node.services.store
        assert prober is not None
        await until(lambda: sum(h.delivered for h in prober.channels.values()) >= 1, timeout_s=20)
        latest = alert_id_for(prober_sender(settings.node_name), f"probe-{prober._boot}-{prober._issued}")
        assert await _ttl_s(store, latest) == 3

        async def gone() -> bool:
            return not await store.holds(latest)

        await until_async(gone, timeout_s=20)
        # Probes are written to the ledger as alerts are, but not into its permanent record.
        assert node.ledger.count() == 0 and node.ledger.probe_count() >= 2
        # About retention / interval probes at a time, however long the node has run.
        assert (await store.stream_health()).messages <= 3.0 / 0.5 + 4
    finally:
        await stop_node(node, task, cm)


async def test_a_stream_near_its_limit_turns_readyz_red_then_refuses_with_store_full(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    settings = node_settings(tmp_path, nats_server, stream_max_bytes=96 * 1024, max_cap_bytes=16 * 1024,
                             stream_usage_red=0.5)
    node, task, cm = await start_node(settings)
    readiness = node.services.readiness
    assert readiness is not None
    try:
        red_after: int | None = None
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
            for sent in range(200):
                body = alert_xml()
                response = await http.post("/api/v1/alerts", content=body, headers=ISSUE)
                await readiness.refresh()
                if response.status_code == 201:
                    if red_after is None and "stream-usage" in readiness.report()["failing"]:
                        red_after = sent
                    continue
                break
            else:
                raise AssertionError("the stream never filled")
            assert red_after is not None and red_after < sent, "readiness must turn red before the first refusal"
            assert response.status_code == 507
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["code"] == "store.full"
            assert "retry-after" not in response.headers
            # Nothing was stored, and asking again does not change that.
            refused = parse_xml(body)
            assert not await node.services.store.holds(alert_id_for(refused.sender, refused.identifier))
            again = await http.post("/api/v1/alerts", content=body, headers=ISSUE)
            assert again.status_code == 507
            ready = await http.get("/readyz")
            assert ready.status_code == 503 and "stream-usage" in ready.json()["failing"]
    finally:
        await stop_node(node, task, cm)

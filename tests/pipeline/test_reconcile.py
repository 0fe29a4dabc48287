"""The reconciler republishes what the node acknowledged and the stream lacks."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx

from tests.e2e.conftest import ISSUER_TOKEN, node  # noqa: F401 - fixture
from tests.pipeline.envelopes import envelope_for
from tests.samples import alert_xml
from tocsin.app import Node
from tocsin.errors import AlertNotFound

XML = {"Content-Type": "application/cap+xml"}


async def test_alert_in_ledger_but_not_in_stream_is_republished(node: Node) -> None:  # noqa: F811
    envelope = envelope_for(node, "FR-LOST-1", age_s=60)
    payload = envelope.payload
    # As if the stream had acknowledged it a minute ago and then lost it (a corrupted block file).
    assert await node.ledger.record(envelope, None)
    try:
        await node.services.store.get(envelope.alert_id)
        raise AssertionError("the alert should not be in the stream yet")
    except AlertNotFound:
        pass
    assert await node.reconciler.reconcile() == 1
    stored = await node.services.store.get(envelope.alert_id)
    assert stored.envelope.payload == payload and stored.envelope.sig == envelope.sig
    assert await node.reconciler.reconcile() == 0


async def test_alerts_accepted_during_a_pass_are_not_called_missing(node: Node) -> None:  # noqa: F811
    headers = {**XML, "Authorization": f"Bearer {ISSUER_TOKEN}"}
    async with httpx.AsyncClient(base_url=node.url) as http:

        async def accept_many() -> None:
            for _ in range(20):
                response = await http.post("/api/v1/alerts", content=alert_xml(), headers=headers)
                assert response.status_code == 201

        async def reconcile_often() -> int:
            return sum([await node.reconciler.reconcile() for _ in range(20)])

        _, republished = await asyncio.gather(accept_many(), reconcile_often())
    assert republished == 0


async def test_a_young_row_is_left_to_its_publish_and_a_withdrawn_one_never_published(node: Node) -> None:  # noqa: F811
    in_flight, refused = envelopes = [envelope_for(node, "FR-INFLIGHT-1"), envelope_for(node, "FR-REFUSED-1", age_s=60)]
    assert await node.ledger.record(in_flight, None)
    assert await node.ledger.record(refused, None)
    await node.ledger.withdraw(refused.alert_id, datetime.now(UTC))
    # Neither is in the stream: one may still be publishing, the other's issuer was refused.
    assert await node.reconciler.reconcile() == 0
    for envelope in envelopes:
        try:
            await node.services.store.get(envelope.alert_id)
            raise AssertionError(f"{envelope.alert_id} should not have been published")
        except AlertNotFound:
            pass
    # The issuer sends the refused one again (same bytes): that attempt owns the row again.
    assert await node.ledger.record(refused, None)
    assert await node.reconciler.reconcile() == 1
    assert (await node.services.store.get(refused.alert_id)).envelope.payload == refused.payload


async def test_an_identity_conflict_leaves_no_row_to_republish(node: Node) -> None:  # noqa: F811
    headers = {**XML, "Authorization": f"Bearer {ISSUER_TOKEN}"}
    async with httpx.AsyncClient(base_url=node.url) as http:
        first = await http.post("/api/v1/alerts", content=alert_xml(identifier="FR-TWICE-1"), headers=headers)
        assert first.status_code == 201
        other = await http.post(
            "/api/v1/alerts", content=alert_xml(identifier="FR-TWICE-1", headline="other words"), headers=headers
        )
        assert other.status_code == 409
    alert_id = first.json()["id"]
    # The node's row is the first content, and it is not withdrawn by the refused second.
    envelope = node.ledger.envelope(alert_id)
    assert envelope is not None
    assert envelope.payload == (await node.services.store.get(alert_id)).envelope.payload
    assert node.ledger.withdrawn_among([alert_id]) == set()


async def test_a_refused_conflict_on_a_node_that_never_had_the_alert_is_withdrawn(node: Node) -> None:  # noqa: F811
    # Another node stored this identity first (written to the stream directly here).
    elsewhere = envelope_for(node, "FR-ELSEWHERE-1", by="another-node")
    payload = elsewhere.payload
    await node.services.store.put(elsewhere)
    headers = {**XML, "Authorization": f"Bearer {ISSUER_TOKEN}"}
    async with httpx.AsyncClient(base_url=node.url) as http:
        refused = await http.post(
            "/api/v1/alerts", content=alert_xml(identifier="FR-ELSEWHERE-1", headline="other words"), headers=headers
        )
    assert refused.status_code == 409
    # This node wrote a row for the refused content while it published; it is withdrawn.
    recorded = node.ledger.envelope(elsewhere.alert_id)
    assert recorded is not None and recorded.payload != payload
    assert node.ledger.withdrawn_among([elsewhere.alert_id]) == {elsewhere.alert_id}


async def test_a_pass_reads_the_retention_window_not_the_ledgers_history(node: Node) -> None:  # noqa: F811
    # A long history: rows whose alerts retention has already let go.
    long_ago = datetime.now(UTC) - timedelta(days=30)
    for n in range(300):
        old = replace(envelope_for(node, f"FR-OLD-{n}", age_s=40 * 86400), retain_until=long_ago)
        assert await node.ledger.record(old, None)
    fresh = replace(envelope_for(node, "FR-IN-WINDOW-1", age_s=60), retain_until=datetime.now(UTC) + timedelta(days=7))
    assert await node.ledger.record(fresh, None)
    watched_before = node.reconciler.window_size
    # The new rows come in through the watermark; those already retained out are dropped
    # and never looked up in the stream, let alone called missing.
    assert await node.reconciler.reconcile() == 1
    assert node.reconciler.window_size == watched_before + 1
    assert node.reconciler.checked_last_pass <= watched_before + 1
    assert await node.reconciler.reconcile() == 0


async def test_a_restarted_reconciler_loads_only_the_window(node: Node) -> None:  # noqa: F811
    long_ago = datetime.now(UTC) - timedelta(days=30)
    for n in range(300):
        old = replace(envelope_for(node, f"FR-GONE-{n}", age_s=40 * 86400), retain_until=long_ago)
        assert await node.ledger.record(old, None)
    rows, last = node.ledger.window(datetime.now(UTC), legacy_lifetime_s=86400.0)
    assert all(not row.alert_id.startswith("FR-GONE") for row in rows)
    assert {row.alert_id for row in rows}.isdisjoint({replace(envelope_for(node, f"FR-GONE-{n}")).alert_id for n in range(300)})
    assert last >= 300

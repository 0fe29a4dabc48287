"""The reconciler republishes what the node acknowledged and the stream lacks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx

from tests.e2e.conftest import node  # noqa: F401 - fixture
from tests.samples import alert_xml
from tocsin.app import Node
from tocsin.cap.parse import parse_xml
from tocsin.cap.render import to_xml
from tocsin.errors import AlertNotFound
from tocsin.store.base import Envelope, Stored, alert_id_for

XML = {"Content-Type": "application/cap+xml"}


async def test_alert_in_ledger_but_not_in_stream_is_republished(node: Node) -> None:  # noqa: F811
    alert = parse_xml(alert_xml(identifier="FR-LOST-1"))
    payload = to_xml(alert)
    signer = node.services.accept._signer  # the node's own key, as accept would sign
    envelope = Envelope(
        alert_id=alert_id_for(alert.sender, alert.identifier), payload=payload, sig=signer.sign(payload),
        kid=signer.kid, issuer="admin", node=node.settings.node_name, accepted_at=datetime.now(UTC),
    )
    # As if the stream had acknowledged it and then lost it (a corrupted block file).
    await node.ledger.record(Stored(seq=999, envelope=envelope), None)
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
    headers = {**XML, "Authorization": "Bearer tca_test-admin-token"}
    async with httpx.AsyncClient(base_url=node.url) as http:

        async def accept_many() -> None:
            for _ in range(20):
                response = await http.post("/api/v1/alerts", content=alert_xml(), headers=headers)
                assert response.status_code == 201

        async def reconcile_often() -> int:
            return sum([await node.reconciler.reconcile() for _ in range(20)])

        _, republished = await asyncio.gather(accept_many(), reconcile_often())
    assert republished == 0

"""Envelopes as a node's accept would build them, for tests that write the stream or ledger directly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.samples import alert_xml
from tocsin.app import Node
from tocsin.cap.parse import parse_xml
from tocsin.cap.render import to_xml
from tocsin.store.base import Envelope, alert_id_for


def envelope_for(node: Node, identifier: str, *, age_s: float = 0.0, by: str | None = None) -> Envelope:
    """The sample alert `identifier`, rendered and signed with the node's key, accepted
    `age_s` ago by node `by` (this node by default)."""
    alert = parse_xml(alert_xml(identifier=identifier))
    payload = to_xml(alert)
    signer = node.services.accept._signer
    return Envelope(
        alert_id=alert_id_for(alert.sender, alert.identifier), payload=payload, sig=signer.sign(payload),
        kid=signer.kid, issuer="admin", node=by or node.settings.node_name,
        accepted_at=datetime.now(UTC) - timedelta(seconds=age_s),
    )

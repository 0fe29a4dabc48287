"""The accepting node's follower takes the alert its accept parsed, instead of parsing it again."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import ISSUER_TOKEN, node  # noqa: F401 - fixture
from tests.pipeline.envelopes import envelope_for
from tests.samples import alert_xml
from tests.waiting import until
from tocsin.app import Node
from tocsin.cap.model import Alert
from tocsin.cap.parse import parse_xml
from tocsin.cap.render import to_xml
from tocsin.pipeline import handoff as handoff_module
from tocsin.store.base import AlertId

ADMIN = {"Authorization": f"Bearer {ISSUER_TOKEN}", "Content-Type": "application/cap+xml"}


async def test_only_alerts_accepted_elsewhere_are_parsed_by_the_follower(
    node: Node, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    parsed: list[bytes] = []
    parse_stored = handoff_module.parse_stored  # type: ignore[attr-defined]

    def counting(payload: bytes) -> Alert:
        parsed.append(payload)
        return parse_stored(payload)

    monkeypatch.setattr(handoff_module, "parse_stored", counting)
    index = node.services.pipeline.index
    async with httpx.AsyncClient(base_url=node.url) as http:
        response = await http.post("/api/v1/alerts", content=alert_xml(identifier="FR-HERE-1"), headers=ADMIN)
    assert response.status_code == 201
    here = AlertId(response.json()["id"])
    await until(lambda: here in index.by_id)
    assert parsed == []
    assert index.by_id[here].alert == parse_xml(to_xml(index.by_id[here].alert))
    # Stored by another node: the follower has only the bytes, and parses them.
    there = envelope_for(node, "FR-THERE-1", by="another-node")
    await node.services.store.put(there)
    await until(lambda: there.alert_id in index.by_id)
    assert parsed == [there.payload]
    assert index.by_id[there.alert_id].alert == parse_xml(there.payload)

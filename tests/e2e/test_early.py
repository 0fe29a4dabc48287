"""Early copies (pipeline/early.py) on a real node: an alert not yet stored reaches live devices
without a cursor, new devices get it in their replay, and its stored copy follows with one.

The copies here are sent on the node's own subject as accept sends them during an election
(`JetStreamStore.announce`); tests/cluster/test_early_cluster.py makes a real one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.e2e.devices import register, sse_device
from tests.e2e.test_watcher import XML, next_display
from tests.samples import IN_LYON, IN_PARIS, alert_xml
from tests.waiting import until
from tocsin.app import Node
from tocsin.cap.parse import parse_xml
from tocsin.channels.live import LiveRegistry
from tocsin.client.watch import Watcher
from tocsin.pipeline import early as early_module
from tocsin.pipeline.early import EarlyCopies, signed_by
from tocsin.pipeline.handoff import Handoff
from tocsin.pipeline.index import ActiveIndex
from tocsin.signing import SigningKey
from tocsin.store.base import Envelope, alert_id_for


def envelope_of(xml: bytes, signer: SigningKey) -> Envelope:
    """What accept would send for this CAP (no cover carried: the node computes it)."""
    alert = parse_xml(xml)
    now = datetime.now(UTC)
    return Envelope(
        alert_id=alert_id_for(alert.sender, alert.identifier), payload=xml, sig=signer.sign(xml), kid=signer.kid,
        issuer="test", node="elsewhere", accepted_at=now, expires_at=now + timedelta(hours=1),
    )


async def listening(node: Node) -> EarlyCopies:
    early = node.services.pipeline.early
    assert early is not None
    await until(early.listening.is_set, 10)
    return early


async def test_an_early_copy_goes_to_live_devices_without_a_cursor_then_its_stored_copy_with_one(
    node: Node, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    early = await listening(node)
    paris = (await register(http, *IN_PARIS))["token"]
    lyon = (await register(http, *IN_LYON))["token"]
    xml = alert_xml()
    envelope = envelope_of(xml, node.services.signer)
    async with sse_device(node.url, paris) as inside, sse_device(node.url, lyon) as outside:
        await inside.next("synced")
        await outside.next("synced")
        await node.services.store.announce(envelope)
        copy = await inside.next("alert")
        body = json.loads(copy.data)
        assert body["seq"] is None and body["event_id"] is None and body["id"] == envelope.alert_id
        assert copy.last_event_id == ""  # no id: field, the cursor stays
        assert early.held.keys() == {envelope.alert_id}
        # A device that connects now gets the early copy with its replay, still without a cursor.
        async with sse_device(node.url, paris) as late:
            replayed = await late.next("alert")
            assert json.loads(replayed.data)["id"] == envelope.alert_id and replayed.last_event_id == ""
            response = await http.post("/api/v1/alerts", content=xml, headers={**admin, **XML})
            assert response.status_code == 201, response.text
            seq = response.json()["seq"]
            for device in (inside, late):
                stored = await device.next("alert")
                assert json.loads(stored.data)["seq"] == seq
                assert stored.last_event_id.startswith(f"{seq}.")
        # Nothing went outside the area: the next thing the Lyon device gets is a Lyon alert.
        lyon_xml = alert_xml(polygon="45.70,4.75 45.70,4.90 45.80,4.90 45.80,4.75 45.70,4.75")
        assert (await http.post("/api/v1/alerts", content=lyon_xml, headers={**admin, **XML})).status_code == 201
        got = json.loads((await outside.next("alert")).data)
        assert got["id"] == alert_id_for(parse_xml(lyon_xml).sender, parse_xml(lyon_xml).identifier)
    # Its stored copy is indexed: the early one is no longer held, and a new device gets the
    # stored copy only.
    assert early.held == {}
    assert 'tocsin_early_copies_total{outcome="offered"} 1.0' in (await http.get("/metrics")).text
    async with sse_device(node.url, paris) as fresh:
        first = await fresh.next("alert")
        assert json.loads(first.data)["seq"] == seq


async def test_a_watcher_shows_an_alert_once_from_its_early_copy_and_resumes_from_the_stored_one(
    node: Node, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await listening(node)
    xml = alert_xml()
    envelope = envelope_of(xml, node.services.signer)
    async with Watcher([node.url], [IN_PARIS], languages=["fr"], trust_on_first_use=True) as watcher:
        await watcher.wait_synced()
        displays = watcher.displays()
        await node.services.store.announce(envelope)
        shown = await next_display(displays)
        assert shown.alert_id == envelope.alert_id and shown.seq is None
        assert watcher.state.cursor is None  # an early copy moves no cursor
        response = await http.post("/api/v1/alerts", content=xml, headers={**admin, **XML})
        assert response.status_code == 201
        seq = response.json()["seq"]
        await until(lambda: watcher.state.last_seq == seq, 10)
        assert watcher.state.cursor is not None and watcher.state.cursor.startswith(f"{seq}.")
        # The stored copy was a repeat by identity: the next display is the next alert.
        later = alert_xml()
        assert (await http.post("/api/v1/alerts", content=later, headers={**admin, **XML})).status_code == 201
        assert (await next_display(displays)).identifier == parse_xml(later).identifier
        assert watcher.stats.early == 1


async def test_an_early_copy_signed_with_another_key_is_dropped(
    node: Node, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    early = await listening(node)
    token = (await register(http, *IN_PARIS))["token"]
    forged = envelope_of(alert_xml(headline="faux"), SigningKey.generate())
    async with sse_device(node.url, token) as device:
        await device.next("synced")
        await node.services.store.announce(forged)
        await until(lambda: early.dropped == 1, 10)
        real = alert_xml()
        assert (await http.post("/api/v1/alerts", content=real, headers={**admin, **XML})).status_code == 201
        first = json.loads((await device.next("alert")).data)
        assert first["seq"] is not None and first["id"] != forged.alert_id
    assert forged.alert_id not in early.held
    metrics = (await http.get("/metrics")).text
    assert 'tocsin_early_copies_total{outcome="dropped"} 1.0' in metrics


async def test_early_copies_held_are_bounded_and_each_is_taken_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(early_module, "EARLY_MAX", 3)
    signer = SigningKey.generate()
    index = ActiveIndex(Handoff(), default_lifetime_s=3600)
    copies = EarlyCopies(index, LiveRegistry(), verify=signed_by(signer), clock=lambda: datetime.now(UTC))
    envelopes = [envelope_of(alert_xml(), signer) for _ in range(5)]
    for envelope in envelopes:
        await copies.take(envelope)
    await copies.take(envelopes[0])  # heard twice (two workers' subscriptions, a retry): taken once
    assert list(copies.held) == [e.alert_id for e in envelopes[:3]]
    assert (copies.heard, copies.dropped) == (3, 2)

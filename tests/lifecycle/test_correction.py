"""One-call correction: a signed Cancel that references the false alert (docs/lifecycle.md)."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx

from tocsin.app import Node
from tocsin.cap.model import MsgType
from tocsin.cap.parse import parse_xml
from tocsin.correction import CORRECTION_PARAMETER, CORRECTION_VALUE, DEFAULT_TEMPLATES, is_correction
from tocsin.signing import verify
from tocsin.store.base import AlertId

from tests.e2e.devices import register, sse_device
from tests.lifecycle.conftest import as_, audit_of
from tests.samples import IN_PARIS, alert_xml


async def _published(http: httpx.AsyncClient, identifier: str = "false-alarm") -> dict[str, str]:
    response = await http.post("/api/v1/alerts", content=alert_xml(identifier=identifier), headers=as_("issuer"))
    assert response.status_code == 201, response.text
    body: dict[str, str] = response.json()
    return body


async def test_correct_publishes_a_signed_cancel_referencing_the_original(node: Node, http: httpx.AsyncClient) -> None:
    original = await _published(http)
    response = await http.post(f"/api/v1/alerts/{original['id']}/correct", headers=as_("issuer"))
    assert response.status_code == 201, response.text
    correction_id = response.json()["id"]
    stored = await node.services.store.get(AlertId(correction_id))
    alert = parse_xml(stored.envelope.payload)
    assert is_correction(alert) and alert.msg_type is MsgType.CANCEL and alert.status.value == "Actual"
    [reference] = alert.references
    assert (reference.sender, reference.identifier) == (original["sender"], original["identifier"])
    assert reference.sent == datetime.fromisoformat(original["sent"])
    assert {info.language for info in alert.infos} == set(DEFAULT_TEMPLATES)
    assert all((p.value_name, p.value) == (CORRECTION_PARAMETER, CORRECTION_VALUE)
               for info in alert.infos for p in info.parameters)
    assert all(info.areas for info in alert.infos)  # the original's areas
    # Live long enough for a device offline for a day.
    assert alert.expires is not None and alert.expires - alert.sent >= timedelta(hours=24)
    cap = await http.get(f"/api/v1/alerts/{correction_id}.xml")
    keys = {k["kid"]: k for k in (await http.get("/.well-known/tocsin/keys")).json()["keys"]}
    assert verify(keys, cap.headers["tocsin-key-id"], cap.content, cap.headers["tocsin-signature"])
    # A retry makes no second correction; the action is audited once.
    again = await http.post(f"/api/v1/alerts/{original['id']}/correct", headers=as_("issuer"))
    assert again.status_code == 200 and again.json()["id"] == correction_id
    corrected = [e for e in await audit_of(http, correction_id) if e["action"] == "corrected"]
    assert len(corrected) == 1 and corrected[0]["detail"]["corrects"] == original["id"]


async def test_only_the_alerts_organisation_may_correct_it(node: Node, http: httpx.AsyncClient) -> None:
    original = await _published(http, "not-yours")
    refused = await http.post(f"/api/v1/alerts/{original['id']}/correct", headers=as_("alice"))
    assert refused.status_code == 422 and refused.json()["code"] == "policy.reference-not-allowed"
    approver_only = await http.post(f"/api/v1/alerts/{original['id']}/correct", headers=as_("bob"))
    assert approver_only.status_code == 403 and approver_only.json()["code"] == "auth.role-required"
    unknown = await http.post(f"/api/v1/alerts/{'0' * 32}/correct", headers=as_("issuer"))
    assert unknown.status_code == 404


async def test_a_correction_of_an_actual_alert_never_waits_for_approval(node: Node, http: httpx.AsyncClient) -> None:
    submitted = await http.post("/api/v1/alerts", content=alert_xml(identifier="needs-two"), headers=as_("alice"))
    alert_id = submitted.json()["id"]
    assert (await http.post(f"/api/v1/alerts/{alert_id}/approve", headers=as_("bob"))).status_code == 201
    # Alice alone corrects it at once (single-person, like a Cancel).
    corrected = await http.post(f"/api/v1/alerts/{alert_id}/correct", headers=as_("alice"))
    assert corrected.status_code == 201, corrected.text


async def test_admins_edit_the_templates_and_the_change_is_audited(node: Node, http: httpx.AsyncClient) -> None:
    url = "/api/v1/admin/correction-templates"
    assert (await http.get(url, headers=as_("admin"))).json()["templates"] == DEFAULT_TEMPLATES
    assert (await http.get(url, headers=as_("alice"))).json()["code"] == "auth.role-required"
    mine = {"de-DE": {"event": "Korrektur", "headline": "Falscher Alarm: {headline}",
                      "description": "Die Warnung vom {sent} war falsch.", "instruction": "Nichts zu tun."}}
    bad = await http.put(url, json={"templates": {"de-DE": {"event": "x"}}}, headers=as_("admin"))
    assert bad.status_code == 422 and bad.json()["code"] == "correction.templates-invalid"
    put = await http.put(url, json={"templates": mine}, headers=as_("admin"))
    assert put.status_code == 200 and put.json()["templates"] == mine
    original = await _published(http, "templated")
    correction = (await http.post(f"/api/v1/alerts/{original['id']}/correct", headers=as_("issuer"))).json()
    [info] = parse_xml((await http.get(f"/api/v1/alerts/{correction['id']}.xml")).content).infos
    assert info.language == "de-DE" and info.headline == "Falscher Alarm: Inondation: évacuez les quais"
    changed = [e for e in await audit_of(http, "correction-templates") if e["action"] == "policy-changed"]
    assert changed and changed[-1]["actor"] == "user:admin" and changed[-1]["detail"]["languages"] == ["de-DE"]


async def test_a_device_that_showed_the_alert_receives_its_correction_live(node: Node, http: httpx.AsyncClient) -> None:
    # Through the original's areas, which the correction carries; delivery to every device
    # (also those that moved away) is the devices' side of issue 11.
    device = await register(http, *IN_PARIS)
    async with sse_device(node.url, device["token"]) as sse:
        await sse.next("synced")
        original = await _published(http, "shown-then-false")
        assert (await sse.next_alert())["id"] == original["id"]
        correction = (await http.post(f"/api/v1/alerts/{original['id']}/correct", headers=as_("issuer"))).json()
        event = await sse.next_alert()
        assert event["id"] == correction["id"] and is_correction(parse_xml(event["cap"].encode()))

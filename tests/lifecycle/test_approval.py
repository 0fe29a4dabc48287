"""Two-person approval through the HTTP API against a real node (docs/lifecycle.md)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import httpx

from tocsin.app import Node
from tocsin.cluster.nats_server import NatsServer
from tocsin.store.base import AlertId

from tests.e2e.conftest import FakeClock, stop_node
from tests.lifecycle.conftest import ORG, as_, audit_of, running
from tests.samples import alert_xml
from tests.waiting import until_async


async def submit(http: httpx.AsyncClient, who: str = "alice", **xml: object) -> dict[str, object]:
    response = await http.post("/api/v1/alerts", content=alert_xml(**xml), headers=as_(who))  # type: ignore[arg-type]
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/api/v1/alerts/{response.json()['id']}"
    body: dict[str, object] = response.json()
    return body


async def test_an_actual_alert_waits_outside_the_stream_and_its_author_cannot_approve_it(
    node: Node, http: httpx.AsyncClient
) -> None:
    before = await node.services.store.last_seq()
    pending = await submit(http)
    assert pending["state"] == "pending" and pending["org"] == ORG and pending["author"] == "user:alice"
    alert_id = AlertId(str(pending["id"]))
    # Not in the alert stream: no seq taken, the identity not held there.
    assert await node.services.store.last_seq() == before
    assert not await node.services.store.holds(alert_id)
    # Its organisation reads its state; the public (and another organisation) does not.
    seen = (await http.get(f"/api/v1/alerts/{alert_id}", headers=as_("bob"))).json()
    assert seen["state"] == "pending" and seen["alert"]["sender"] == "prefecture-75@interieur.gouv.fr"
    assert (await http.get(f"/api/v1/alerts/{alert_id}")).status_code == 404
    assert (await http.get(f"/api/v1/alerts/{alert_id}", headers=as_("erin"))).status_code == 404
    refused = await http.post(f"/api/v1/alerts/{alert_id}/approve", headers=as_("alice"))
    assert refused.status_code == 403 and refused.json()["code"] == "approval.self-approval"
    # No approver role: refused; another organisation's approver: not found.
    assert (await http.post(f"/api/v1/alerts/{alert_id}/approve", headers=as_("dave"))).json()["code"] == "auth.role-required"
    assert (await http.post(f"/api/v1/alerts/{alert_id}/approve", headers=as_("erin"))).json()["code"] == "approval.unknown"
    assert not await node.services.store.holds(alert_id)


async def test_another_approver_publishes_it_once_with_every_step_audited(node: Node, http: httpx.AsyncClient) -> None:
    alert_id = str((await submit(http))["id"])
    approved = await http.post(f"/api/v1/alerts/{alert_id}/approve", headers=as_("bob"))
    assert approved.status_code == 201, approved.text
    assert approved.json()["id"] == alert_id and approved.json()["seq"] >= 1
    stored = await node.services.store.get(AlertId(alert_id))
    assert stored.envelope.issuer == ORG  # published as its author's organisation
    again = await http.post(f"/api/v1/alerts/{alert_id}/approve", headers=as_("carol"))
    assert again.status_code == 409 and again.json()["code"] == "approval.not-pending"
    public = (await http.get(f"/api/v1/alerts/{alert_id}")).json()
    assert public["seq"] == approved.json()["seq"]
    entries = await audit_of(http, alert_id)
    assert [(e["action"], e["actor"]) for e in entries] == [
        ("submitted", "user:alice"), ("approved", "user:bob"), ("published", "user:alice")]
    assert all(e["org"] == ORG and e["source"] == "127.0.0.1" for e in entries)
    assert entries[2]["detail"]["approvedBy"] == "user:bob"


async def test_two_approvers_at_once_publish_once(node: Node, http: httpx.AsyncClient) -> None:
    for round_ in range(3):
        alert_id = str((await submit(http, identifier=f"race-{round_}"))["id"])
        answers = await asyncio.gather(*(http.post(f"/api/v1/alerts/{alert_id}/approve", headers=as_(who))
                                         for who in ("bob", "carol")))
        assert sorted(a.status_code for a in answers) == [201, 409], [a.text for a in answers]
        published = [e for e in await audit_of(http, alert_id) if e["action"] == "published"]
        assert len(published) == 1


async def test_a_rejected_alert_is_never_published_and_says_why(node: Node, http: httpx.AsyncClient) -> None:
    alert_id = str((await submit(http))["id"])
    no_reason = await http.post(f"/api/v1/alerts/{alert_id}/reject", headers=as_("bob", "application/json"))
    assert no_reason.status_code == 422 and no_reason.json()["code"] == "approval.reason-required"
    rejected = await http.post(f"/api/v1/alerts/{alert_id}/reject", json={"reason": "wrong area"}, headers=as_("bob"))
    assert rejected.status_code == 200 and rejected.json()["state"] == "rejected"
    late = await http.post(f"/api/v1/alerts/{alert_id}/approve", headers=as_("carol"))
    assert late.status_code == 409 and late.json()["code"] == "approval.not-pending"
    seen = (await http.get(f"/api/v1/alerts/{alert_id}", headers=as_("alice"))).json()
    assert (seen["state"], seen["reason"], seen["decidedBy"]) == ("rejected", "wrong area", "user:bob")
    assert not await node.services.store.holds(AlertId(alert_id))
    entries = await audit_of(http, alert_id)
    assert [e["action"] for e in entries] == ["submitted", "rejected"]
    assert entries[1]["detail"]["reason"] == "wrong area"


async def test_exercise_and_test_and_cancel_never_wait(node: Node, http: httpx.AsyncClient) -> None:
    for status in ("Exercise", "Test"):
        response = await http.post("/api/v1/alerts", content=alert_xml(status=status), headers=as_("alice"))
        assert response.status_code == 201, response.text
    pending = await submit(http, identifier="to-cancel")  # an Actual alert of the organisation
    approved = await http.post(f"/api/v1/alerts/{pending['id']}/approve", headers=as_("bob"))
    assert approved.status_code == 201, approved.text
    sent = approved.json()["sent"]
    cancel = alert_xml(identifier="the-cancel", msg_type="Cancel",
                       references=f"prefecture-75@interieur.gouv.fr,to-cancel,{sent}")
    # Its Cancel, by another author of the organisation alone, is published at once.
    assert (await http.post("/api/v1/alerts", content=cancel, headers=as_("dave"))).status_code == 201


async def test_the_pending_list_is_the_callers_organisations_and_paged(node: Node, http: httpx.AsyncClient) -> None:
    ids = [str((await submit(http, identifier=f"list-{n}"))["id"]) for n in range(3)]
    other = str((await submit(http, "erin", identifier="lyon-1"))["id"])

    async def listed(who: str, **params: str) -> dict[str, object]:
        response = await http.get("/api/v1/alerts", params={"state": "pending", **params}, headers=as_(who))
        assert response.status_code == 200, response.text
        body: dict[str, object] = response.json()
        return body

    async def mirrored() -> bool:
        return len((await listed("admin"))["alerts"]) >= 4  # type: ignore[arg-type]

    await until_async(mirrored)
    first = await listed("bob", limit="2")
    assert [a["id"] for a in first["alerts"]] == ids[:2]  # type: ignore[union-attr]
    following = (await http.get(first["links"]["next"], headers=as_("bob"))).json()  # type: ignore[index]
    assert [a["id"] for a in following["alerts"]] == ids[2:] and "next" not in following["links"]
    assert [a["id"] for a in (await listed("erin"))["alerts"]] == [other]  # type: ignore[union-attr]
    bad = await http.get("/api/v1/alerts", params={"state": "nonsense"}, headers=as_("bob"))
    assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"


async def test_pending_alerts_per_organisation_are_capped(tmp_path: Path, nats_server: NatsServer) -> None:
    started = await running(tmp_path, nats_server, max_pending_per_org=2)
    try:
        async with httpx.AsyncClient(base_url=started[0].url, timeout=10) as http:
            for n in range(2):
                await submit(http, identifier=f"cap-{n}")

            async def both_mirrored() -> bool:
                page = (await http.get("/api/v1/alerts", params={"state": "pending"}, headers=as_("bob"))).json()
                return len(page["alerts"]) == 2

            await until_async(both_mirrored)
            third = await http.post("/api/v1/alerts", content=alert_xml(identifier="cap-2"), headers=as_("alice"))
            assert third.status_code == 409 and third.json()["code"] == "approval.too-many-pending"
            # Another organisation has its own cap.
            await submit(http, "erin", identifier="cap-lyon")
    finally:
        await stop_node(*started)


async def test_an_alert_that_expires_while_pending_is_never_published(tmp_path: Path, nats_server: NatsServer) -> None:
    clock = FakeClock()
    started = await running(tmp_path, nats_server, clock=clock, pending_sweep_s=0.1)
    node = started[0]
    try:
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
            alert_id = str((await submit(http, expires_in_s=60))["id"])
            clock.advance(120)
            late = await http.post(f"/api/v1/alerts/{alert_id}/approve", headers=as_("bob"))
            assert late.status_code == 409 and late.json()["code"] == "approval.not-pending"
            assert "expired" in late.json()["detail"]
            assert not await node.services.store.holds(AlertId(alert_id))
            seen = (await http.get(f"/api/v1/alerts/{alert_id}", headers=as_("alice"))).json()
            assert seen["state"] == "expired"
            # The sweeper marks one that nobody tried to approve, audited once.
            quiet = str((await submit(http, identifier="quiet", expires_in_s=600))["id"])
            clock.advance(1200)

            async def expired_once() -> bool:
                entries = [e for e in await audit_of(http, quiet) if e["action"] == "expired"]
                assert len(entries) <= 1
                return len(entries) == 1

            await until_async(expired_once)
            assert not await node.services.store.holds(AlertId(quiet))
            assert [e["action"] for e in await audit_of(http, alert_id)] == ["submitted", "expired"]
    finally:
        await stop_node(*started)


async def test_submitting_an_approved_alert_again_changes_nothing(node: Node, http: httpx.AsyncClient) -> None:
    sent = datetime.now(UTC).replace(microsecond=0)
    alert_id = str((await submit(http, identifier="resent", sent=sent))["id"])
    seq = (await http.post(f"/api/v1/alerts/{alert_id}/approve", headers=as_("bob"))).json()["seq"]
    again = await http.post("/api/v1/alerts", content=alert_xml(identifier="resent", sent=sent), headers=as_("alice"))
    assert again.status_code == 200 and again.json()["seq"] == seq
    other = await http.post("/api/v1/alerts", content=alert_xml(identifier="resent", sent=sent, headline="changed"),
                            headers=as_("alice"))
    assert other.status_code == 409 and other.json()["code"] == "alert.identity-conflict"
    assert (await submissions_listed(http)) == []


async def submissions_listed(http: httpx.AsyncClient) -> list[object]:
    page = (await http.get("/api/v1/alerts", params={"state": "pending"}, headers=as_("bob"))).json()
    listed: list[object] = page["alerts"]
    return listed

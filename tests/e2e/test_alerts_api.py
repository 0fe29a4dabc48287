"""The issuer API: durable accept, create-if-absent, clear refusals."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import httpx

from tests.datafiles import CAP_DATA
from tests.samples import alert_xml
from tocsin.app import Node
from tocsin.cap.parse import parse_xml
from tocsin.cap.render import to_json
from tocsin.signing import verify

XML = {"Content-Type": "application/cap+xml"}


async def post(http: httpx.AsyncClient, admin: dict[str, str], body: bytes, **headers: str) -> httpx.Response:
    return await http.post("/api/v1/alerts", content=body, headers={**admin, **XML, **headers})


async def test_accepted_alert_is_stored_and_readable(node: Node, http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    xml = alert_xml(identifier="FR-75-0001")
    response = await post(http, admin, xml)
    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"] == f"/api/v1/alerts/{body['id']}"
    assert body["identifier"] == "FR-75-0001" and body["seq"] >= 1
    # Stored in JetStream before the answer: read straight from the stream.
    stored = await node.services.store.get(body["id"])
    assert parse_xml(stored.envelope.payload) == parse_xml(xml)
    got = (await http.get(body["links"]["self"])).json()
    assert got["alert"]["identifier"] == "FR-75-0001" and got["state"] == "active"
    cap = await http.get(body["links"]["cap"])
    assert cap.headers["content-type"].startswith("application/cap+xml")
    keys = {k["kid"]: k for k in (await http.get("/.well-known/tocsin/keys")).json()["keys"]}
    assert verify(keys, cap.headers["tocsin-key-id"], cap.content, cap.headers["tocsin-signature"])
    assert node.ledger.count() >= 1


async def test_same_alert_sent_twice_is_stored_once(node: Node, http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    xml = alert_xml()
    first = await post(http, admin, xml)
    last_seq = await node.services.store.last_seq()
    again = await post(http, admin, xml)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"] and again.json()["seq"] == first.json()["seq"]
    assert await node.services.store.last_seq() == last_seq


async def test_same_identity_with_other_content_is_a_conflict(
    node: Node, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    sent = datetime.now(UTC).replace(microsecond=0)
    first = await post(http, admin, alert_xml(identifier="FR-DUP-1", sent=sent))
    other = await post(http, admin, alert_xml(identifier="FR-DUP-1", sent=sent, headline="autre"))
    assert other.status_code == 409
    assert other.json()["code"] == "alert.identity-conflict"
    assert other.headers["location"] == first.headers["location"]
    stored = await node.services.store.get(first.json()["id"])
    assert b"autre" not in stored.envelope.payload


async def test_json_form_is_accepted(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    document = to_json(parse_xml(alert_xml()))
    response = await http.post("/api/v1/alerts", json=document, headers=admin)
    assert response.status_code == 201, response.text


async def test_expired_alert_is_refused(node: Node, http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    before = await node.services.store.last_seq()
    old = datetime.now(UTC) - timedelta(hours=3)
    response = await post(http, admin, alert_xml(sent=old, expires_in_s=3600))
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "cap.expired"
    assert await node.services.store.last_seq() == before


async def test_cancellation_that_expires_when_sent_is_valid_cap_but_refused_as_expired(
    node: Node, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    # Valid CAP 1.2 (expires == sent, as tsunami centres cancel); already expired on arrival.
    before = await node.services.store.last_seq()
    sent = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    references = f"prefecture-75@interieur.gouv.fr,FR-TSU-1,{(sent - timedelta(hours=1)).isoformat()}"
    xml = alert_xml(msg_type="Cancel", references=references, sent=sent, expires_in_s=0, event="Tsunami")
    parse_xml(xml)  # valid CAP: no violation
    response = await post(http, admin, xml)
    assert response.status_code == 422
    assert response.json()["code"] == "cap.expired"
    assert await node.services.store.last_seq() == before


async def test_alert_sent_far_in_the_future_is_refused(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await post(http, admin, alert_xml(sent=datetime.now(UTC) + timedelta(hours=1)))
    assert response.json()["code"] == "cap.sent-in-future"


async def test_invalid_cap_names_rule_and_path(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    xml = alert_xml(polygon="48.80,2.25 48.80,2.42 48.90,2.42 48.90,2.25")
    problem = (await post(http, admin, xml)).json()
    assert problem["status"] == 422
    assert any(e["path"] == "info[0].area[0].polygon[0]" for e in problem["errors"])
    assert problem["code"] == problem["errors"][0]["code"]


async def test_invalid_fixtures_are_refused_with_problem_json(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    for path in sorted((CAP_DATA / "invalid").glob("*.xml")):
        response = await post(http, admin, path.read_bytes())
        assert response.status_code in (413, 422), path.name
        assert response.json()["code"].startswith("cap."), path.name


async def test_hostile_xml_is_refused_without_harm(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    bomb = b"""<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">
<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&lol4;</identifier></alert>"""
    xxe = b"""<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&x;</identifier></alert>"""
    for body in (bomb, xxe):
        started = time.perf_counter()
        response = await post(http, admin, body)
        assert response.status_code == 422 and time.perf_counter() - started < 2
        assert "root:" not in response.text
    huge = b"<alert>" + b"x" * (2 * 1024 * 1024) + b"</alert>"
    response = await post(http, admin, huge)
    assert response.status_code == 413 and response.json()["code"] == "request.too-large"


async def test_requests_without_valid_token_are_refused(http: httpx.AsyncClient) -> None:
    missing = await http.post("/api/v1/alerts", content=alert_xml(), headers=XML)
    wrong = await http.post("/api/v1/alerts", content=alert_xml(), headers={**XML, "Authorization": "Bearer nope"})
    assert (missing.status_code, missing.json()["code"]) == (401, "auth.missing-token")
    assert (wrong.status_code, wrong.json()["code"]) == (401, "auth.unknown-token")


async def test_unsupported_media_type(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await http.post("/api/v1/alerts", content=b"hello", headers={**admin, "Content-Type": "text/plain"})
    assert (response.status_code, response.json()["code"]) == (415, "request.unsupported-media-type")


async def test_unknown_alert_and_route(http: httpx.AsyncClient) -> None:
    assert (await http.get("/api/v1/alerts/0123")).json()["code"] == "alert.not-found"
    assert (await http.get("/nope")).json()["code"] == "request.not-found"


async def test_draft_and_restricted_are_not_distributed(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    draft = await post(http, admin, alert_xml(status="Draft"))
    assert draft.json()["code"] == "policy.draft"
    restricted = alert_xml().replace(b"<scope>Public</scope>", b"<scope>Restricted</scope><restriction>x</restriction>")
    assert (await post(http, admin, restricted)).json()["code"] == "policy.scope-not-public"


async def test_openapi_document_is_served(http: httpx.AsyncClient) -> None:
    document = (await http.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    assert "/api/v1/alerts" in document["paths"] and "/api/v1/stream" in document["paths"]
    json.dumps(document)


async def test_an_issuer_token_in_the_url_is_not_accepted(node: Node, http: httpx.AsyncClient) -> None:
    """URLs end up in logs: the issuer API takes its token from the Authorization header only."""
    token = "tca_test-admin-token"
    before = await node.services.store.last_seq()
    response = await http.post(f"/api/v1/alerts?token={token}", content=alert_xml(),
                               headers={"Content-Type": "application/cap+xml"})
    assert (response.status_code, response.json()["code"]) == (401, "auth.missing-token")
    assert await node.services.store.last_seq() == before

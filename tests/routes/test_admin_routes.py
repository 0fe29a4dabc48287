"""The routes admin API and `tocsin routes`: deployment admins only, every field bounded,
the token never shown, every change audited."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from tests.e2e.conftest import ADMIN_TOKEN
from tests.routes.conftest import ADMIN, ISSUER, add_route
from tests.routes.receiver import Receiver
from tests.waiting import until
from tocsin.accounts import grant
from tocsin.app import Node
from tocsin.policy import Issuer, Role
from tocsin.cli.main import cli

GOOD = "https://gateway.example.org/cap"


async def test_only_a_deployment_admin_manages_routes(http: httpx.AsyncClient) -> None:
    for method, path in (("GET", "/api/v1/admin/routes"), ("GET", "/api/v1/admin/routes/a"),
                         ("PUT", "/api/v1/admin/routes/a"), ("DELETE", "/api/v1/admin/routes/a"),
                         ("POST", "/api/v1/admin/routes/a/test")):
        refused = await http.request(method, path, json={"url": GOOD}, headers=ISSUER)
        assert refused.status_code == 403, (method, path, refused.text)
        assert refused.json()["code"] == "auth.role-required"
        anonymous = await http.request(method, path, json={"url": GOOD})
        assert anonymous.status_code == 401
    assert (await http.get("/api/v1/admin/routes", headers=ADMIN)).json() == {"routes": []}


async def test_an_organisations_own_admin_is_refused_too(node: Node, http: httpx.AsyncClient) -> None:
    """Routes are the deployment's: an admin of another organisation manages none."""
    await grant(node.services.store, "tca_org-admin", Issuer(name="prefecture-75", principal="user:org-admin",
                                                             roles=frozenset({Role.ADMIN, Role.AUTHOR})))
    org_admin = {"Authorization": "Bearer tca_org-admin"}
    assert (await http.get("/api/v1/admin/orgs/prefecture-75", headers=org_admin)).status_code == 200
    refused = await http.put("/api/v1/admin/routes/gw", json={"url": GOOD}, headers=org_admin)
    assert refused.status_code == 403 and refused.json()["code"] == "auth.role-required"
    assert (await http.get("/api/v1/admin/routes", headers=org_admin)).status_code == 403


@pytest.mark.parametrize(("body", "field"), [
    ({"url": "ftp://gateway.example.org/cap"}, "url"),
    ({"url": "https://user:secret@gateway.example.org/cap"}, "url"),
    ({"url": "https:///cap"}, "url"),
    ({"url": "https://gateway.example.org/c ap"}, "url"),
    ({"url": "https://gateway.example.org/cap#x"}, "url"),
    ({"url": "https://gateway.example.org:99999/cap"}, "url"),
    ({"url": "https://" + "a" * 2100 + ".org/"}, "url"),
    ({"url": "javascript:alert(1)"}, "url"),
    ({}, "url"),
    ({"url": GOOD, "statuses": ["Draft"]}, "statuses[0]"),
    ({"url": GOOD, "statuses": []}, "statuses"),
    ({"url": GOOD, "statuses": ["Actual", "Rumour"]}, "statuses[1]"),
    ({"url": GOOD, "token": "two words"}, "token"),
    ({"url": GOOD, "token": "x\r\nX-Evil: 1"}, "token"),
    ({"url": GOOD, "enabled": "yes"}, "enabled"),
    ({"url": GOOD, "colour": "red"}, "colour"),
])
async def test_a_route_that_is_not_valid_is_refused_naming_the_field(http: httpx.AsyncClient, body: dict[str, object],
                                                                     field: str) -> None:
    refused = await http.put("/api/v1/admin/routes/gw", json=body, headers=ADMIN)
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert problem["code"] == "route.invalid" and problem["errors"][0]["path"] == field
    assert (await http.get("/api/v1/admin/routes/gw", headers=ADMIN)).status_code == 404


async def test_names_bodies_and_unknown_routes(http: httpx.AsyncClient) -> None:
    for name in ("UPPER", "-lead", "a.b", "x" * 64):
        refused = await http.put(f"/api/v1/admin/routes/{name}", json={"url": GOOD}, headers=ADMIN)
        assert refused.status_code == 422 and refused.json()["errors"][0]["path"] == "name", name
    not_json = await http.put("/api/v1/admin/routes/gw", content=b"{", headers={**ADMIN, "Content-Type": "application/json"})
    assert not_json.status_code == 422 and not_json.json()["code"] == "route.invalid"
    huge = await http.put("/api/v1/admin/routes/gw", content=b" " * 2_000_000, headers=ADMIN)
    assert huge.status_code == 413
    for method, path in (("GET", "/api/v1/admin/routes/nope"), ("DELETE", "/api/v1/admin/routes/nope"),
                         ("POST", "/api/v1/admin/routes/nope/test"), ("GET", "/api/v1/admin/routes/a.b")):
        unknown = await http.request(method, path, headers=ADMIN)
        assert unknown.status_code == 404 and unknown.json()["code"] == "route.unknown", (method, path)


async def test_the_token_is_never_shown_and_every_change_is_audited(node: Node, http: httpx.AsyncClient) -> None:
    created = await http.put("/api/v1/admin/routes/gw", json={"url": GOOD + "?key=k1", "token": "s3cret-token"},
                             headers=ADMIN)
    assert created.status_code == 201
    assert created.json()["route"]["has_token"] and "s3cret" not in created.text
    assert created.json()["route"]["statuses"] == ["Actual", "Exercise", "Test"]
    assert created.json()["route"]["created_by"] == created.json()["route"]["changed_by"] != ""
    # A PUT without the token keeps it; null removes it.
    kept = await http.put("/api/v1/admin/routes/gw", json={"url": GOOD, "statuses": ["Actual"]}, headers=ADMIN)
    assert kept.status_code == 200 and kept.json()["route"]["has_token"]
    for answer in (await http.get("/api/v1/admin/routes", headers=ADMIN), await http.get("/api/v1/admin/routes/gw",
                                                                                          headers=ADMIN)):
        assert "s3cret" not in answer.text and "token\":" not in answer.text.replace("has_token", "")
    assert (await node.services.store.routes.get("gw") or {})["token"] == "s3cret-token"
    assert node.services.routes.names_for("Actual") == ["gw"] and node.services.routes.names_for("Test") == []
    removed = await http.put("/api/v1/admin/routes/gw", json={"url": GOOD, "token": None}, headers=ADMIN)
    assert not removed.json()["route"]["has_token"]
    assert (await http.delete("/api/v1/admin/routes/gw", headers=ADMIN)).status_code == 200
    assert node.services.routes.names_for("Actual") == []
    audit = (await http.get("/api/v1/audit", params={"subject": "gw"}, headers=ADMIN)).json()
    entries = [e for e in audit["entries"] if e["action"].startswith("route-")]
    assert [e["action"] for e in entries] == ["route-created", "route-changed", "route-changed", "route-removed"]
    assert [e["detail"].get("token") for e in entries[:3]] == ["set", "kept", "removed"]
    assert all("s3cret" not in json.dumps(e) and "k1" not in json.dumps(e) for e in entries)


async def _tocsin(node: Node, *args: str) -> Result:
    env = {"TOCSIN_URL": node.url, "TOCSIN_TOKEN": ADMIN_TOKEN}
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env)


async def test_the_cli_adds_lists_tests_and_removes(node: Node, receiver: Receiver, tmp_path: Path) -> None:
    receiver.token = "downstream-token"
    token_file = tmp_path / "token"
    token_file.write_text("downstream-token\n")
    added = await _tocsin(node, "routes", "add", "relay", receiver.url, "--status", "Actual", "--status", "Test",
                          "--token-file", str(token_file))
    assert added.exit_code == 0, added.output
    assert added.output.startswith("relay  ok  ") and "token=yes" in added.output
    tested = await _tocsin(node, "routes", "test", "relay")
    assert tested.exit_code == 0 and "link test ok" in tested.output, tested.output
    await until(lambda: bool(receiver.links()))
    listed = await _tocsin(node, "routes", "list")
    assert listed.exit_code == 0 and "relay  ok" in listed.output and "link-test=ok" in listed.output
    assert "statuses=Actual,Test" in listed.output and "pending=" in listed.output
    as_json = json.loads((await _tocsin(node, "routes", "list", "--json")).output)
    assert as_json["routes"][0]["status"]["link_test"]["ok"] is True
    bad = await _tocsin(node, "routes", "add", "relay2", "ftp://nowhere")
    assert bad.exit_code == 2 and "route.invalid" in bad.output
    removed = await _tocsin(node, "routes", "remove", "relay")
    assert removed.exit_code == 0 and "relay removed" in removed.output
    again = await _tocsin(node, "routes", "remove", "relay")
    assert again.exit_code == 2 and "route.unknown" in again.output
    assert (await _tocsin(node, "routes", "list")).output.strip() == "no routes"


async def test_a_route_with_a_wrong_token_fails_its_link_test(node: Node, http: httpx.AsyncClient,
                                                              receiver: Receiver) -> None:
    receiver.token = "expected"
    await add_route(http, "wrong", receiver.url, token="not-it")
    answer = (await http.post("/api/v1/admin/routes/wrong/test", headers=ADMIN)).json()
    assert not answer["link_test"]["ok"] and answer["link_test"]["reason"] == "http-401"
    assert not answer["status"]["ok"] and "http-401" in answer["status"]["detail"]
    failed = await _tocsin(node, "routes", "test", "wrong")
    assert failed.exit_code == 1 and "link test FAILED: http-401" in failed.output

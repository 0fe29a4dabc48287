"""The sources admin API and `tocsin sources`: deployment admins only, every field checked
and named when refused, every change audited."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from tests.conftest import unique_name
from tests.e2e.conftest import ADMIN_TOKEN, ISSUER_TOKEN
from tests.sources.conftest import ADMIN, add_source, wait_status
from tests.sources.feeds import Publisher, linked_atom
from tests.sources.signer import authority
from tocsin.app import Node
from tocsin.cli.main import cli
from tocsin.cli.sources_cmd import name_for


async def test_only_a_deployment_admin_manages_sources(http: httpx.AsyncClient) -> None:
    issuer = {"Authorization": f"Bearer {ISSUER_TOKEN}"}
    for method, path in (("GET", "/api/v1/admin/sources"), ("PUT", "/api/v1/admin/sources/x"),
                         ("DELETE", "/api/v1/admin/sources/x")):
        response = await http.request(method, path, headers=issuer, json={"url": "http://127.0.0.1/feed"})
        assert response.status_code == 403 and response.json()["code"] == "auth.role-required"
    assert (await http.get("/api/v1/admin/sources")).status_code == 401


@pytest.mark.parametrize(("body", "path"), [
    ({"url": "ftp://example.org/feed"}, "url"),
    ({"url": "http://user:pw@example.org/feed"}, "url"),
    ({"url": "http://example.org/feed", "interval_s": 0}, "interval_s"),
    ({"url": "http://example.org/feed", "interval_s": True}, "interval_s"),
    ({"url": "http://example.org/feed", "signatures": "trust-me"}, "signatures"),
    ({"url": "http://example.org/feed", "signatures": "require-signed"}, "keys"),
    ({"url": "http://example.org/feed", "keys": ["not a key"]}, "keys[0]"),
    ({"url": "http://example.org/feed", "keys": ["k"] * 5}, "keys"),
    ({"url": "http://example.org/feed", "statuses": ["System"]}, "statuses[0]"),
    ({"url": "http://example.org/feed", "senders": []}, "senders"),
    ({"url": "http://example.org/feed", "territory": {"polygons": ["nonsense"]}}, "territory"),
    ({"url": "http://example.org/feed", "colour": "red"}, "colour"),
])
async def test_a_source_that_is_not_valid_is_refused_naming_the_field(http: httpx.AsyncClient, body: dict[str, Any],
                                                                      path: str) -> None:
    response = await http.put("/api/v1/admin/sources/s1", json=body, headers=ADMIN)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "source.invalid" and problem["errors"][0]["path"] == path


async def test_names_bodies_and_unknown_sources(http: httpx.AsyncClient) -> None:
    response = await http.put("/api/v1/admin/sources/Not_A_Name", json={"url": "http://example.org/f"}, headers=ADMIN)
    assert response.status_code == 422 and response.json()["errors"][0]["path"] == "name"
    response = await http.put("/api/v1/admin/sources/s1", content=b"[1]", headers=ADMIN)
    assert response.status_code == 422 and response.json()["errors"][0]["path"] == "body"
    for method in ("GET", "DELETE"):
        response = await http.request(method, "/api/v1/admin/sources/nobody", headers=ADMIN)
        assert response.status_code == 404 and response.json()["code"] == "source.unknown"


async def test_a_source_is_created_replaced_and_removed_and_audited(http: httpx.AsyncClient) -> None:
    signer, name = authority(), unique_name("audited")  # the audit log is the session's
    body = {"url": "http://127.0.0.1:9/feed.atom", "enabled": False, "signatures": "require-signed",
            "keys": [signer.cert_pem], "senders": ["a@example.org"], "statuses": ["Actual"],
            "territory": {"circles": ["48.85,2.35 20"]}}
    created = await http.put(f"/api/v1/admin/sources/{name}", json=body, headers=ADMIN)
    assert created.status_code == 201
    answer = created.json()
    assert answer["source"]["signatures"] == "require-signed" and answer["status"]["state"] == "disabled"
    assert answer["source"]["territory"]["circles"] == ["48.85,2.35 20.0"]
    replaced = await http.put(f"/api/v1/admin/sources/{name}", json={**body, "interval_s": 300}, headers=ADMIN)
    assert replaced.status_code == 200 and replaced.json()["source"]["created"] == answer["source"]["created"]
    listed = (await http.get("/api/v1/admin/sources", headers=ADMIN)).json()["sources"]
    assert name in [s["name"] for s in listed]
    assert (await http.delete(f"/api/v1/admin/sources/{name}", headers=ADMIN)).json()["removed"] is True
    assert (await http.get(f"/api/v1/admin/sources/{name}", headers=ADMIN)).status_code == 404
    audit = (await http.get("/api/v1/audit", params={"subject": name}, headers=ADMIN)).json()
    actions = [e["action"] for e in audit["entries"] if e["subject"] == name]
    assert actions == ["source-created", "source-changed", "source-removed"]


def test_a_name_is_made_from_the_url_host() -> None:
    assert name_for("https://alerts.weather.gov/cap/us.php?x=0") == "alerts-weather-gov"
    assert name_for("http://[::1]:8080/feed") == "1"


async def _tocsin(node: Node, *args: str) -> Result:
    env = {"TOCSIN_URL": node.url, "TOCSIN_TOKEN": ADMIN_TOKEN}
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env)


async def test_the_cli_adds_lists_shows_and_removes(node: Node, http: httpx.AsyncClient, feeds: Publisher,
                                                    tmp_path: Path) -> None:
    feeds.docs["/cli.atom"] = (linked_atom([]), "application/atom+xml")
    key = tmp_path / "weather.pem"
    key.write_text(authority().cert_pem)
    added = await _tocsin(node, "sources", "add", f"{feeds.url}/cli.atom", "--name", "cli", "--interval", "1",
                          "--require-signed", "--key", str(key), "--status", "Actual")
    assert added.exit_code == 0, added.output
    assert added.output.startswith("cli  ") and "signatures=require-signed" in added.output
    await wait_status(http, "cli", lambda s: s.get("state") == "ok")
    listed = await _tocsin(node, "sources", "list")
    assert listed.exit_code == 0 and "cli  ok  " in listed.output
    shown = await _tocsin(node, "sources", "status", "cli", "--json")
    assert shown.exit_code == 0 and json.loads(shown.output)["status"]["state"] == "ok"
    refused = await _tocsin(node, "sources", "add", "ftp://x/feed", "--name", "bad")
    assert refused.exit_code == 2 and refused.output.startswith("source.invalid")
    removed = await _tocsin(node, "sources", "remove", "cli")
    assert removed.exit_code == 0 and "cli removed" in removed.output
    assert (await _tocsin(node, "sources", "status", "cli")).exit_code == 2
    assert await add_source(http, "again", f"{feeds.url}/cli.atom")

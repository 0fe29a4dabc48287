"""Drafts for the console: kept per organisation, bounded, audited when saved."""

from __future__ import annotations

from pathlib import Path

import httpx

from tocsin.app import Node
from tocsin.cluster.nats_server import NatsServer

from tests.e2e.conftest import stop_node
from tests.lifecycle.conftest import as_, audit_of, running
from tests.waiting import until_async


async def test_save_list_read_replace_and_delete_a_draft(node: Node, http: httpx.AsyncClient) -> None:
    saved = await http.post("/api/v1/drafts", json={"name": "flood", "alert": "<alert/>"}, headers=as_("alice"))
    assert saved.status_code == 201, saved.text
    draft_id = saved.json()["id"]
    assert saved.headers["location"] == f"/api/v1/drafts/{draft_id}"
    replaced = await http.post("/api/v1/drafts", json={"id": draft_id, "name": "flood v2", "alert": {"x": 1}},
                               headers=as_("alice"))
    assert replaced.json()["id"] == draft_id
    got = (await http.get(f"/api/v1/drafts/{draft_id}", headers=as_("dave"))).json()
    assert (got["name"], got["alert"], got["savedBy"]) == ("flood v2", {"x": 1}, "user:alice")

    async def listed() -> bool:
        names = [d["name"] for d in (await http.get("/api/v1/drafts", headers=as_("dave"))).json()["drafts"]]
        return names == ["flood v2"]

    await until_async(listed)
    assert (await http.get(f"/api/v1/drafts/{draft_id}", headers=as_("erin"))).status_code == 404
    assert [e["action"] for e in await audit_of(http, draft_id)] == ["draft-saved", "draft-saved"]
    assert (await http.delete(f"/api/v1/drafts/{draft_id}", headers=as_("alice"))).status_code == 204
    assert (await http.get(f"/api/v1/drafts/{draft_id}", headers=as_("alice"))).json()["code"] == "draft.unknown"
    for wrong in ("%C2%B2", "x" * 32, "a" * 200):  # only the ids this API gives name a draft, at once
        assert (await http.get(f"/api/v1/drafts/{wrong}", headers=as_("alice"))).json()["code"] == "draft.unknown"
    invalid = await http.post("/api/v1/drafts", json={"alert": {}}, headers=as_("alice"))
    assert invalid.status_code == 422 and invalid.json()["code"] == "draft.invalid"
    assert (await http.get("/api/v1/drafts", headers=as_("bob"))).json()["code"] == "auth.role-required"


async def test_drafts_per_organisation_are_capped(tmp_path: Path, nats_server: NatsServer) -> None:
    started = await running(tmp_path, nats_server, max_drafts_per_org=2)
    try:
        async with httpx.AsyncClient(base_url=started[0].url, timeout=10) as http:
            for n in range(2):
                body = {"name": f"d{n}", "alert": "<alert/>"}
                assert (await http.post("/api/v1/drafts", json=body, headers=as_("alice"))).status_code == 201

            async def both() -> bool:
                return len((await http.get("/api/v1/drafts", headers=as_("alice"))).json()["drafts"]) == 2

            await until_async(both)
            third = await http.post("/api/v1/drafts", json={"name": "d2", "alert": "<alert/>"}, headers=as_("alice"))
            assert third.status_code == 409 and third.json()["code"] == "draft.too-many"
    finally:
        await stop_node(*started)

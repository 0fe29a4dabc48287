"""GET /api/v1/audit: filters, paging, who reads what; no route changes or deletes an entry."""

from __future__ import annotations

import httpx
from starlette.routing import Route

from tocsin.api.routes import ROUTES
from tocsin.app import Node

from tests.lifecycle.conftest import ORG, as_
from tests.samples import alert_xml


async def _three_submissions(http: httpx.AsyncClient) -> list[str]:
    ids = []
    for n in range(3):
        response = await http.post("/api/v1/alerts", content=alert_xml(identifier=f"audit-{n}"), headers=as_("alice"))
        assert response.status_code == 202
        ids.append(response.json()["id"])
    return ids


async def test_filters_and_paging_with_a_next_link(node: Node, http: httpx.AsyncClient) -> None:
    ids = await _three_submissions(http)
    first = await http.get("/api/v1/audit", params={"action": "submitted", "actor": "user:alice", "org": ORG,
                                                    "limit": "2"}, headers=as_("admin"))
    assert first.status_code == 200, first.text
    page = first.json()
    # Entries of earlier tests share the log: the three of this test come last, in order.
    seen = [e["subject"] for e in page["entries"]]
    while "next" in page["links"]:
        page = (await http.get(page["links"]["next"], headers=as_("admin"))).json()
        seen += [e["subject"] for e in page["entries"]]
    assert seen[-3:] == ids
    by_alert = (await http.get("/api/v1/audit", params={"alert": ids[1]}, headers=as_("bob"))).json()["entries"]
    assert [(e["action"], e["subject"]) for e in by_alert] == [("submitted", ids[1])]


async def test_each_organisation_reads_its_own_entries_and_an_admin_all(node: Node, http: httpx.AsyncClient) -> None:
    [alert_id, *_] = await _three_submissions(http)
    assert (await http.get("/api/v1/audit", params={"subject": alert_id}, headers=as_("erin"))).json()["entries"] == []
    other = await http.get("/api/v1/audit", params={"org": ORG}, headers=as_("erin"))
    assert other.status_code == 400 and other.json()["code"] == "audit.query-invalid"
    assert len((await http.get("/api/v1/audit", params={"subject": alert_id}, headers=as_("admin"))).json()["entries"]) == 1
    assert (await http.get("/api/v1/audit")).status_code == 401


async def test_a_bad_query_is_a_problem_not_a_500(http: httpx.AsyncClient) -> None:
    for params in ({"action": "deleted"}, {"limit": "0"}, {"limit": "100000"}, {"after": "-1"}, {"sort": "x"}):
        response = await http.get("/api/v1/audit", params=params, headers=as_("admin"))
        assert response.status_code == 400, params
        assert response.json()["code"] == "audit.query-invalid"


async def test_no_route_changes_or_deletes_an_entry(http: httpx.AsyncClient) -> None:
    audit_routes = [r for r in ROUTES if isinstance(r, Route) and "audit" in r.path]
    assert [(r.path, r.methods - {"HEAD"}) for r in audit_routes if r.methods] == [("/api/v1/audit", {"GET"})]
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        response = await http.request(method, "/api/v1/audit", headers=as_("admin"))
        assert response.status_code == 405, method
    # Every other route that writes names something else than the audit log.
    writers = {r.path for r in ROUTES if isinstance(r, Route) and r.methods and r.methods - {"GET", "HEAD"}}
    assert not [p for p in writers if "audit" in p]

"""Gazetteer import, reads and removal through a real node's HTTP API (api/areas.py)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.accounts.conftest import bearer, new_org
from tests.areas.conftest import ADMIN, MARSEILLE, collection, feature, import_areas
from tests.datafiles import ROOT
from tocsin.app import Node
from tocsin.geo.gazetteer import MAX_POINTS_PER_AREA, key_for

DEPARTEMENTS = ROOT / "tests" / "data" / "geo" / "departements-version-simplifiee.geojson"


async def test_an_import_is_listed_shown_replaced_and_removed(http: httpx.AsyncClient, node: Node) -> None:
    body = collection(feature("nice", nom="Nice"), feature("13", MARSEILLE, nom="Marseille"))
    made = await import_areas(http, "ZONES.T", body)
    assert made.status_code == 201, made.text
    assert made.json() == {"scheme": "ZONES.T", "source": "imported", "areas": 2, "removed": 0, "points": 10}
    schemes = (await http.get("/api/v1/areas")).json()
    assert {"scheme": "ZONES.T", "areas": 2, "source": "imported"} in schemes["schemes"]
    assert {"scheme": "INSEE-DEP", "areas": 96, "source": "built-in"} in schemes["schemes"]
    assert "Licence Ouverte" in schemes["attribution"]["INSEE-DEP"]
    listed = (await http.get("/api/v1/areas/ZONES.T")).json()
    assert listed["areas"] == [{"code": "13", "name": "Marseille", "polygons": 1, "points": 5},
                               {"code": "nice", "name": "Nice", "polygons": 1, "points": 5}]
    shown = (await http.get("/api/v1/areas/ZONES.T/13")).json()
    assert shown["polygons"] == [[[lat, lon] for lon, lat in MARSEILLE]] and shown["source"] == "imported"
    assert await node.services.store.areas.get(key_for("ZONES.T", "13")) is not None  # in the bucket
    assert (await http.get("/api/v1/areas/ZONES.T/nice")).json()["name"] == "Nice"  # its body is kept now
    # A new file replaces the scheme: an area it no longer lists leaves.
    replaced = await import_areas(http, "ZONES.T", collection(feature("nice", nom="Nice (ville)")))
    assert replaced.status_code == 200 and replaced.json()["removed"] == 1
    assert (await http.get("/api/v1/areas/ZONES.T/13")).json()["code"] == "area.not-found"
    assert (await http.get("/api/v1/areas/ZONES.T/nice")).json()["name"] == "Nice (ville)"
    removed = await http.delete("/api/v1/admin/areas/ZONES.T", headers=ADMIN)
    assert removed.status_code == 200 and removed.json() == {"scheme": "ZONES.T", "removed": 1}
    assert (await http.get("/api/v1/areas/ZONES.T")).status_code == 404
    again = await http.delete("/api/v1/admin/areas/ZONES.T", headers=ADMIN)
    assert again.status_code == 404 and again.json()["code"] == "area.not-found"
    audit = (await http.get("/api/v1/audit", params={"subject": "ZONES.T"}, headers=ADMIN)).json()
    actions = [e["action"] for e in audit["entries"]]
    assert actions.count("areas-imported") == 2 and actions.count("areas-removed") == 1


async def test_the_departements_file_imports_under_another_scheme_and_pages(http: httpx.AsyncClient) -> None:
    made = await import_areas(http, "DEP-COPY", DEPARTEMENTS.read_bytes())
    assert made.status_code == 201 and made.json()["areas"] == 96
    first = (await http.get("/api/v1/areas/DEP-COPY", params={"limit": "50"})).json()
    assert len(first["areas"]) == 50 and first["next"] == first["areas"][-1]["code"] and first["count"] == 96
    rest = (await http.get("/api/v1/areas/DEP-COPY", params={"after": first["next"]})).json()
    codes = [a["code"] for a in first["areas"] + rest["areas"]]
    assert len(codes) == 96 and codes == sorted(codes) and rest["next"] is None
    assert next(a for a in rest["areas"] if a["code"] == "75")["name"] == "Paris"


async def test_a_refused_import_names_the_feature_and_stores_nothing(http: httpx.AsyncClient, node: Node) -> None:
    ring = [[7.0 + k * 1e-5, 43.0] for k in range(MAX_POINTS_PER_AREA)] + [[7.0, 43.1], [7.0, 43.0]]
    third = ring[: MAX_POINTS_PER_AREA // 3] + [[7.0, 43.1], [7.0, 43.0]]
    three = {"type": "Feature", "properties": {"code": "many"},
             "geometry": {"type": "MultiPolygon", "coordinates": [[third], [third], [third]]}}
    cases = [
        (collection(feature("a"), {"type": "Feature", "properties": {"nom": "x"},
                                   "geometry": feature("b")["geometry"]}), "features[1]: property 'code'"),
        (collection(feature("a"), feature("b"), feature("a")), "features[2] (BAD a): code a appears twice"),
        (collection(feature("a"), feature("b", [[7, 43], [7.1, 43], [7, 43]])), "features[1] (BAD b) polygon 0"),
        (collection(feature("a"), feature("big", ring)), "features[1] (BAD big) polygon 0: a ring is a list of at most"),
        (collection(feature("a"), three), "BAD many: 3 polygons and 20004 points; at most 500 and 20000"),
        (b"<kml/>", "not JSON"),
        (json.dumps({"type": "Feature"}).encode(), "not a GeoJSON FeatureCollection"),
        (b"[" * 100_000, "not JSON"),
        (collection(), "no feature"),
    ]
    for body, detail in cases:
        refused = await import_areas(http, "BAD", body)
        assert refused.status_code == 422 and refused.json()["code"] == "area.import-invalid", refused.text
        assert detail in refused.json()["detail"], (detail, refused.json()["detail"])
    assert (await http.get("/api/v1/areas/BAD")).status_code == 404
    assert await node.services.store.areas.get(key_for("BAD", "a")) is None


async def test_who_may_import_and_what(http: httpx.AsyncClient, node: Node) -> None:
    body = collection(feature("a"))
    builtin = await import_areas(http, "INSEE-DEP", body)
    assert builtin.status_code == 422 and "built into tocsin" in builtin.json()["detail"]
    assert (await http.delete("/api/v1/admin/areas/INSEE-DEP", headers=ADMIN)).status_code == 422
    assert (await import_areas(http, "X", body, code_property="")).json()["code"] == "area.import-invalid"
    assert (await import_areas(http, "bad scheme!", body)).status_code == 422
    anonymous = await http.put("/api/v1/admin/areas/X", params={"code_property": "code"}, content=body)
    assert anonymous.status_code == 401
    org = await new_org(http, automated=False)
    author = await import_areas(http, "X", body, token=bearer(org.author))
    assert author.status_code == 403 and author.json()["code"] == "auth.role-required"
    assert (await http.get("/api/v1/areas/X")).status_code == 404


async def test_an_import_body_is_bounded_and_a_larger_body_elsewhere_is_not_let_through(
    http: httpx.AsyncClient, node: Node,
) -> None:
    limit = node.settings.max_areas_import_bytes
    too_large = await import_areas(http, "X", b" " * (limit + 1))
    assert too_large.status_code == 413 and too_large.json()["code"] == "request.too-large"
    # 3 MiB passes the edge for an import (then is checked), not for any other path.
    big = b" " * (3 * 1024 * 1024) + collection(feature("a"))
    assert (await import_areas(http, "X", big)).status_code == 201
    elsewhere = await http.post("/api/v1/admin/orgs", content=big, headers=ADMIN)
    assert elsewhere.status_code == 413


async def test_reads_refuse_what_names_nothing(http: httpx.AsyncClient) -> None:
    for path in ("/api/v1/areas/NOPE", "/api/v1/areas/INSEE-DEP/99", "/api/v1/areas/INSEE-DEP/0%206",
                 f"/api/v1/areas/{'A' * 300}"):
        answer = await http.get(path)
        assert answer.status_code == 404 and answer.json()["code"] == "area.not-found", path
    assert (await http.get("/api/v1/areas/INSEE-REG/93")).json()["name"] == "Provence-Alpes-Côte d'Azur"


async def test_the_imported_gazetteers_are_bounded_in_schemes_and_points(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("tocsin.api.areas.MAX_IMPORTED_SCHEMES", 2)
    monkeypatch.setattr("tocsin.api.areas.MAX_IMPORTED_POINTS", 12)
    assert (await import_areas(http, "ONE", collection(feature("a")))).status_code == 201
    assert (await import_areas(http, "TWO", collection(feature("a")))).status_code == 201
    third = await import_areas(http, "THREE", collection(feature("a")))
    assert third.status_code == 422 and "2 schemes are imported already; at most 2" in third.json()["detail"]
    more = await import_areas(http, "TWO", collection(feature("a"), feature("b")))
    assert more.status_code == 422 and "would hold 15 points; at most 12" in more.json()["detail"]
    assert (await import_areas(http, "TWO", collection(feature("b")))).status_code == 200  # replaces: still 10
    assert (await http.get("/api/v1/areas/TWO")).json()["areas"][0]["code"] == "b"
    assert (await http.get("/api/v1/areas/TWO", params={"limit": "9" * 5000})).status_code == 200

"""Territories given as gazetteer codes, through real nodes: set through the admin API or the
accounts file, checked with the margin at accept, failing closed when a scheme is removed."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.accounts.conftest import ADMIN_TOKEN, bearer, new_org, post_alert
from tests.areas.conftest import ADMIN, NICE, collection, feature, import_areas, own_node
from tests.e2e.conftest import node_settings
from tests.geo.test_territory import ALPES_MARITIMES, _square_beyond
from tocsin.app import open_node
from tocsin.cluster.nats_server import NatsServer
from tocsin.settings import SettingsError

IN_NICE = "43.70,7.25 43.70,7.27 43.72,7.27 43.72,7.25 43.70,7.25"
MARSEILLE = "43.2,5.3 43.2,5.5 43.4,5.5 43.4,5.3 43.2,5.3"


async def test_an_organisation_of_06_alerts_06_and_1_km_beyond_but_not_3_km(http: httpx.AsyncClient) -> None:
    org = await new_org(http, territory={"areas": ["INSEE-DEP:06"]})
    shown = (await http.get(f"/api/v1/admin/orgs/{org.name}", headers=bearer(ADMIN_TOKEN))).json()
    assert shown["organisation"]["territory"]["areas"] == ["INSEE-DEP:06"]
    assert (await post_alert(http, org.author, org.sender, polygon=IN_NICE)).status_code == 201
    near = _square_beyond(ALPES_MARITIMES, 0, 1.0)
    assert (await post_alert(http, org.author, org.sender, polygon=near)).status_code == 201
    far = await post_alert(http, org.author, org.sender, polygon=_square_beyond(ALPES_MARITIMES, 0, 3.0))
    assert far.status_code == 403 and far.json()["code"] == "policy.outside-territory"
    detail = far.json()["detail"]
    assert "info[0].area[0] ('Paris centre')" in detail and org.name in detail and "INSEE-DEP:06" in detail
    marseille = await post_alert(http, org.author, org.sender, polygon=MARSEILLE)
    assert marseille.status_code == 403


async def test_with_no_margin_1_km_beyond_is_refused(tmp_path: Path, nats_server: NatsServer, areas_bucket: str) -> None:
    async with own_node(tmp_path, nats_server, areas_bucket, territory_margin_m=0.0) as node, \
            httpx.AsyncClient(base_url=node.url, timeout=10) as http:
        org = await new_org(http, territory={"areas": ["INSEE-DEP:06"]})
        near = await post_alert(http, org.author, org.sender, polygon=_square_beyond(ALPES_MARITIMES, 0, 1.0))
        assert near.status_code == 403 and "widened by 0 m" in near.json()["detail"]
        assert (await post_alert(http, org.author, org.sender, polygon=IN_NICE)).status_code == 201


async def test_a_code_no_gazetteer_holds_is_refused_when_the_territory_is_set(http: httpx.AsyncClient) -> None:
    refused = await http.post("/api/v1/admin/orgs", json={"name": "pref-99", "territory": {
        "areas": ["INSEE-DEP:06", "INSEE-DEP:99"]}}, headers=ADMIN)
    assert refused.status_code == 422 and refused.json()["code"] == "accounts.invalid"
    assert "territory.areas[1]: INSEE-DEP has no code '99'" in refused.json()["detail"]
    org = await new_org(http, territory={"areas": ["INSEE-DEP:06"]})
    change = await http.patch(f"/api/v1/admin/orgs/{org.name}", json={"territory": {"areas": ["NOPE:1"]}},
                              headers=ADMIN)
    assert change.status_code == 422 and "territory.areas[0]: NOPE has no code '1'" in change.json()["detail"]
    malformed = await http.patch(f"/api/v1/admin/orgs/{org.name}", json={"territory": {"areas": ["06"]}},
                                 headers=ADMIN)
    assert malformed.status_code == 422 and "SCHEME:CODE" in malformed.json()["detail"]


async def test_a_territory_of_an_imported_scheme_fails_closed_when_it_is_removed(http: httpx.AsyncClient) -> None:
    assert (await import_areas(http, "ZONES-T", collection(feature("nice")))).status_code == 201
    org = await new_org(http, territory={"areas": ["ZONES-T:nice"]})
    assert (await post_alert(http, org.author, org.sender, polygon=IN_NICE)).status_code == 201
    assert (await http.delete("/api/v1/admin/areas/ZONES-T", headers=ADMIN)).status_code == 200
    refused = await post_alert(http, org.author, org.sender, polygon=IN_NICE)
    assert refused.status_code == 403 and "ZONES-T:nice" in refused.json()["detail"]
    # Imported again (wider): the territory holds it again, with the new boundary.
    wider = [[lon - 0.5, lat] if lon < 7.2 else [lon, lat] for lon, lat in NICE]
    assert (await import_areas(http, "ZONES-T", collection(feature("nice", wider)))).status_code == 201
    west = "43.70,6.75 43.70,6.80 43.72,6.80 43.72,6.75 43.70,6.75"
    assert (await post_alert(http, org.author, org.sender, polygon=west)).status_code == 201


async def test_the_accounts_file_gives_territories_by_code_and_refuses_an_unknown_one(
    tmp_path: Path, nats_server: NatsServer, areas_bucket: str,
) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text('[[issuers]]\nname = "pref-x"\nterritory = { areas = ["INSEE-REG:93", "INSEE-DEP:2A"] }\n')
    settings = node_settings(tmp_path / "ok", nats_server, areas_bucket=areas_bucket, accounts_file=str(path))
    async with open_node(settings) as node:
        org = await node.services.accounts.org("pref-x")
        assert org is not None and org.territory is not None and org.territory.areas == ("INSEE-REG:93", "INSEE-DEP:2A")
    path.write_text('[[issuers]]\nname = "pref-y"\nterritory = { areas = ["INSEE-DEP:06", "INSEE-DEP:975"] }\n')
    settings = node_settings(tmp_path / "bad", nats_server, areas_bucket=areas_bucket, accounts_file=str(path))
    with pytest.raises(SettingsError) as refused:
        async with open_node(settings):
            pass
    assert "issuers (pref-y): territory.areas[1]: INSEE-DEP has no code '975'" in str(refused.value)

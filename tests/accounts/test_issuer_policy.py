"""An organisation's alert rate (429 + Retry-After) and territory (403 naming the area)."""

from __future__ import annotations

import httpx

from tests.accounts.conftest import ADMIN_TOKEN, bearer, new_org, ok, post_alert
from tests.samples import PARIS_BOX, alert_xml

# Around Paris (PARIS_BOX lies inside); Lyon is outside.
ILE_DE_FRANCE = "48.5,1.9 48.5,2.9 49.2,2.9 49.2,1.9 48.5,1.9"
LYON_BOX = "45.70,4.80 45.70,4.90 45.80,4.90 45.80,4.80 45.70,4.80"


async def test_an_organisation_over_its_rate_gets_429_with_retry_after(http: httpx.AsyncClient) -> None:
    org = await new_org(http, alerts_per_min=2)
    for _ in range(2):
        assert (await post_alert(http, org.author, org.sender)).status_code == 201
    refused = await post_alert(http, org.author, org.sender)
    assert refused.status_code == 429 and refused.json()["code"] == "policy.issuer-rate-limited"
    assert int(refused.headers["Retry-After"]) >= 1
    other = await new_org(http, alerts_per_min=2)  # counted per organisation
    assert (await post_alert(http, other.author, other.sender)).status_code == 201
    await ok(await http.patch(f"/api/v1/admin/orgs/{org.name}", json={"alerts_per_min": 0}, headers=bearer(ADMIN_TOKEN)))
    assert (await post_alert(http, org.author, org.sender)).status_code == 201  # 0: no limit


async def test_an_area_outside_the_territory_is_refused_naming_it(http: httpx.AsyncClient) -> None:
    org = await new_org(http, territory={"polygons": [ILE_DE_FRANCE], "circles": ["45.75,4.85 20"]})
    assert (await post_alert(http, org.author, org.sender, polygon=PARIS_BOX)).status_code == 201
    assert (await post_alert(http, org.author, org.sender, polygon=LYON_BOX)).status_code == 201  # in the circle
    outside = "43.2,5.3 43.2,5.5 43.4,5.5 43.4,5.3 43.2,5.3"  # Marseille
    refused = await post_alert(http, org.author, org.sender, polygon=outside)
    assert refused.status_code == 403 and refused.json()["code"] == "policy.outside-territory"
    assert "info[0].area[0]" in refused.json()["detail"]
    straddling = "48.8,2.8 48.8,3.1 48.9,3.1 48.9,2.8 48.8,2.8"  # crosses the territory's east edge
    assert (await post_alert(http, org.author, org.sender, polygon=straddling)).status_code == 403


async def test_a_circle_is_inside_only_when_all_of_it_is(http: httpx.AsyncClient) -> None:
    org = await new_org(http, territory={"circles": ["45.75,4.85 20"]})
    inside = await http.post("/api/v1/alerts", content=_circle_alert(org.sender, "45.75,4.85 20"),
                             headers={"Content-Type": "application/cap+xml", **bearer(org.author)})
    assert inside.status_code == 201, inside.text
    # 21 km passes within the default 1.5 km margin (tests/areas test the margin); 22 km not.
    within = await http.post("/api/v1/alerts", content=_circle_alert(org.sender, "45.75,4.85 21"),
                             headers={"Content-Type": "application/cap+xml", **bearer(org.author)})
    assert within.status_code == 201, within.text
    wider = await http.post("/api/v1/alerts", content=_circle_alert(org.sender, "45.75,4.85 22"),
                            headers={"Content-Type": "application/cap+xml", **bearer(org.author)})
    assert wider.status_code == 403 and wider.json()["code"] == "policy.outside-territory"


async def test_a_territory_can_be_lifted(http: httpx.AsyncClient) -> None:
    org = await new_org(http, territory={"polygons": [ILE_DE_FRANCE]})
    assert (await post_alert(http, org.author, org.sender, polygon=LYON_BOX)).status_code == 403
    await ok(await http.patch(f"/api/v1/admin/orgs/{org.name}", json={"territory": None}, headers=bearer(ADMIN_TOKEN)))
    assert (await post_alert(http, org.author, org.sender, polygon=LYON_BOX)).status_code == 201


def _circle_alert(sender: str, circle: str) -> bytes:
    xml = alert_xml(sender=sender)
    start, end = xml.index(b"<polygon>"), xml.index(b"</polygon>") + len(b"</polygon>")
    return xml[:start] + f"<circle>{circle}</circle>".encode() + xml[end:]

"""The reach preview on a real node: budgets, km², refusals as issuing, nothing stored, its bound."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.accounts.conftest import ADMIN_TOKEN, bearer, new_org, ok
from tests.api.preview_drafts import CAP, ISSUER, Text, Zone, draft, node_alone, preview, square
from tests.datafiles import CAP_DATA
from tests.e2e.conftest import ISSUER_TOKEN, http  # noqa: F401 - fixture
from tocsin.api.device_records import Reach
from tocsin.api.preview import warnings
from tocsin.app import Node
from tocsin.cap.parse import parse_xml
from tocsin.cap.render import to_json
from tocsin.cluster.nats_server import NatsServer
from tocsin.geo.extent import EARTH_RADIUS_KM



@pytest.fixture
async def node(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[Node]:
    async with node_alone(tmp_path, nats_server, previews_per_org_per_min=20) as running:
        yield running


def codes(answer: dict[str, Any]) -> list[str]:
    return [w["code"] for w in answer["warnings"]]


# -- Text budgets -----------------------------------------------------------------------


async def test_gsm7_text_counts_extension_characters_twice(http: httpx.AsyncClient) -> None:
    text = Text(headline="Crue: évacuez", description="Prix 5 € [zone]", instruction="Montez à l'étage",
                zones=(Zone(polygons=(square(48.8, 2.25, 0.1),)),))
    answer = await preview(http, draft(text))
    used = answer["budgets"]["infos"][0]["cellBroadcast"]
    screen = "Crue: évacuez\nPrix 5 € [zone]\nMontez à l'étage"
    assert used["encoding"] == "gsm7" and used["ucs2Because"] is None
    assert used["length"] == len(screen) + 3  # €, [ and ] are in the extension table
    assert used["budget"] == 1395 and not used["over"]
    assert answer["budgets"]["infos"][0]["wea"] == {"length": len(screen), "budget": 360, "unit": "characters",
                                                      "over": False}


async def test_a_character_outside_gsm7_forces_ucs2_and_is_named(http: httpx.AsyncClient) -> None:
    text = Text(headline="Alerte", description="Fenêtres fermées", zones=(Zone(polygons=(square(48.8, 2.25, 0.1),)),))
    used = (await preview(http, draft(text)))["budgets"]["infos"][0]["cellBroadcast"]
    assert used["encoding"] == "ucs2" and used["budget"] == 615
    assert used["ucs2Because"] == {"character": "ê", "index": len("Alerte\nFen"), "codePoint": "U+00EA"}
    assert used["length"] == len("Alerte\nFenêtres fermées")


async def test_texts_over_a_budget_are_warned_per_info_and_channel(http: httpx.AsyncClient) -> None:
    zone = Zone(polygons=(square(48.8, 2.25, 0.1),))
    long_fr = Text(headline="Alerte", description="a" * 1400, zones=(zone,))
    short_wea = Text(language="en-GB", headline="Alert", description="b" * 700, zones=(zone,),
                     parameters=(("CMAMlongtext", "Flood: go up."),))
    answer = await preview(http, draft(long_fr, short_wea))
    over = {(w["info"], w["channel"]) for w in answer["warnings"] if w["code"] == "over-budget"}
    assert over == {(0, "cellBroadcast"), (0, "wea")}  # info 1: 706 GSM-7 characters, its WEA text given
    assert answer["budgets"]["infos"][1]["wea"]["length"] == len("Flood: go up.")
    ucs2 = await preview(http, draft(Text(headline="ê", description="c" * 620, zones=(zone,))))
    assert {(w["info"], w["channel"]) for w in ucs2["warnings"] if w["code"] == "over-budget"} == {
        (0, "cellBroadcast"), (0, "wea")}


async def test_a_big_alert_is_over_the_push_budget(http: httpx.AsyncClient) -> None:
    small = await preview(http, draft())
    assert 500 < small["budgets"]["push"]["length"] < 4096 and "over-budget" not in codes(small)
    # The départements as geocodes: resolved, their polygons make the signed alert large.
    zones = tuple(Zone(desc=f"Dép. {code}", geocodes=(("INSEE-DEP", code),)) for code in ("75", "92", "93", "94"))
    big = await preview(http, draft(Text(zones=zones)))
    push = big["budgets"]["push"]
    assert push["length"] > 4096 and push["over"]
    assert {"code": "over-budget", "channel": "push", "info": None,
            "detail": f"the signed alert is {push['length']} bytes; a push payload carries 4096"} in big["warnings"]


# -- km² ----------------------------------------------------------------------------------


async def test_km2_of_a_circle_and_a_square_within_one_percent(http: httpx.AsyncClient) -> None:
    circle = Text(zones=(Zone(circles=("48.85,2.35 10",)),))
    assert (await preview(http, draft(circle)))["area"]["km2"] == pytest.approx(math.pi * 100, rel=0.01)
    # 0.2° by 0.2° from 48.7° N: R² Δλ (sin φ2 - sin φ1), exactly for edges along meridians and parallels.
    expected = EARTH_RADIUS_KM**2 * math.radians(0.2) * (math.sin(math.radians(48.9)) - math.sin(math.radians(48.7)))
    box = Text(zones=(Zone(polygons=(square(48.7, 2.2, 0.2),)),))
    assert (await preview(http, draft(box)))["area"]["km2"] == pytest.approx(expected, rel=0.01)


async def test_overlaps_count_once_across_areas_and_infos(http: httpx.AsyncClient) -> None:
    left, right = square(48.7, 2.2, 0.2), square(48.7, 2.3, 0.2)  # half of each overlaps the other
    one = (await preview(http, draft(Text(zones=(Zone(polygons=(left,)),)))))["area"]["km2"]
    both = Text(zones=(Zone(polygons=(left,)), Zone(polygons=(right,))))
    english = Text(language="en-GB", zones=(Zone(polygons=(left,)),))
    answer = await preview(http, draft(both, english))
    assert answer["area"]["km2"] == pytest.approx(1.5 * one, rel=0.01)
    assert [i["km2"] for i in answer["area"]["infos"]] == pytest.approx([1.5 * one, one], rel=0.01)


async def test_a_france_wide_area_by_geocodes(http: httpx.AsyncClient) -> None:
    regions = ("11", "24", "27", "28", "32", "44", "52", "53", "75", "76", "84", "93", "94")
    zones = tuple(Zone(desc=f"Région {code}", geocodes=(("INSEE-REG", code),)) for code in regions)
    answer = await preview(http, draft(Text(zones=zones)))
    # Metropolitan France is 543,940 km² (IGN); the shipped outlines are simplified.
    assert answer["area"]["km2"] == pytest.approx(543_940, rel=0.01)
    assert all(a["polygon"] for a in answer["alert"]["info"][0]["area"])  # resolved as vetted


async def test_an_area_across_the_antimeridian(http: httpx.AsyncClient) -> None:
    # Fiji's east, 179.5° E to 179.5° W: one degree of longitude, not 359.
    across = Text(zones=(Zone(polygons=(square(-17.0, 179.5, 1.0),)),))
    expected = EARTH_RADIUS_KM**2 * math.radians(1.0) * (math.sin(math.radians(-16.0)) - math.sin(math.radians(-17.0)))
    assert (await preview(http, draft(across)))["area"]["km2"] == pytest.approx(expected, rel=0.01)
    # A circle on it, and a square west of it that overlaps the first: counted once.
    circle = Text(zones=(Zone(circles=("-16.5,180 20",)),))
    assert (await preview(http, draft(circle)))["area"]["km2"] == pytest.approx(math.pi * 400, rel=0.01)
    west = square(-17.0, -180.0, 1.0)  # 180° to 179° W: the eastern half of the first
    both = Text(zones=(Zone(polygons=(square(-17.0, 179.5, 1.0), west)),))
    assert (await preview(http, draft(both)))["area"]["km2"] == pytest.approx(1.5 * expected, rel=0.01)


# -- Refusals as issuing, and nothing stored ----------------------------------------------


async def refused_alike(http: httpx.AsyncClient, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """The preview's refusal, checked to be the one issuing gives."""
    previewed = await http.post("/api/v1/alerts/preview", content=body, headers=headers)
    issued = await http.post("/api/v1/alerts", content=body, headers=headers)
    assert previewed.status_code == issued.status_code and previewed.status_code >= 400, previewed.text
    assert previewed.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = previewed.json()
    assert {k: v for k, v in problem.items() if k != "instance"} == {
        k: v for k, v in issued.json().items() if k != "instance"}
    return problem


async def test_refusals_are_those_of_issuing(http: httpx.AsyncClient) -> None:
    ile_de_france = "48.5,1.9 48.5,2.9 49.2,2.9 49.2,1.9 48.5,1.9"
    org = await new_org(http, territory={"polygons": [ile_de_france]})
    headers = {**CAP, **bearer(org.author)}
    marseille = Text(zones=(Zone(desc="Marseille", polygons=("43.2,5.3 43.2,5.5 43.4,5.5 43.4,5.3 43.2,5.3",)),))
    outside = await refused_alike(http, draft(marseille, sender=org.sender), headers)
    assert outside["code"] == "policy.outside-territory" and "info[0].area[0] ('Marseille')" in outside["detail"]
    unknown = Text(zones=(Zone(desc="Nulle part", geocodes=(("INSEE-DEP", "999"),)),))
    typo = await refused_alike(http, draft(unknown), ISSUER)
    assert typo["code"] == "area.unknown-geocode" and "'999'" in typo["detail"]
    invalid = (CAP_DATA / "invalid" / "bz-nms-missing-sender.xml").read_bytes()
    assert (await refused_alike(http, invalid, ISSUER))["code"].startswith("cap.")
    assert (await refused_alike(http, b"{not json", {**bearer(ISSUER_TOKEN), "Content-Type": "application/json"})
            )["code"] == "cap.not-json"
    assert (await refused_alike(http, draft(), {**bearer(ISSUER_TOKEN), "Content-Type": "text/plain"})
            )["code"] == "request.unsupported-media-type"
    unknown_reference = draft(msg_type="Cancel", references=f"{org.sender},nothing-here,2026-01-01T00:00:00+00:00")
    assert (await refused_alike(http, unknown_reference, ISSUER))["code"] == "policy.reference-unknown"


async def test_tokens_and_roles_as_issuing(http: httpx.AsyncClient) -> None:
    anonymous = await http.post("/api/v1/alerts/preview", content=draft(), headers=CAP)
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "auth.missing-token"
    org = await new_org(http)
    await ok(await http.post("/api/v1/admin/users", json={"name": f"approver-{org.name}", "org": org.name,
                                                          "roles": ["approver"]}, headers=bearer(ADMIN_TOKEN)), 201)
    made = await ok(await http.post("/api/v1/admin/tokens", json={"principal": f"user:approver-{org.name}"},
                                    headers=bearer(ADMIN_TOKEN)), 201)
    problem = await refused_alike(http, draft(sender=org.sender), {**CAP, **bearer(str(made["token"]))})
    assert problem["code"] == "auth.role-required"


async def test_a_preview_stores_nothing(node: Node, http: httpx.AsyncClient) -> None:
    body = draft(identifier="FR-PREVIEW-NOTHING")
    before = (await node.services.store.last_seq(), node.ledger.count(), dict(node.services.pending_cache))
    audit_before = (await http.get("/api/v1/audit", headers=bearer(ADMIN_TOKEN))).json()
    answer = await preview(http, body)
    assert answer["published"] is False and answer["id"]
    as_json = await preview(http, __import__("json").dumps(to_json(parse_xml(body))).encode(),
                            {**bearer(ISSUER_TOKEN), "Content-Type": "application/json"})
    assert as_json["id"] == answer["id"] and as_json["budgets"] == answer["budgets"]
    assert (await node.services.store.last_seq(), node.ledger.count(), dict(node.services.pending_cache)) == before
    assert (await http.get("/api/v1/audit", headers=bearer(ADMIN_TOKEN))).json() == audit_before
    assert (await http.get(f"/api/v1/alerts/{answer['id']}")).status_code == 404
    # Then issued: the same id, stored once.
    issued = await http.post("/api/v1/alerts", content=body, headers=ISSUER)
    assert issued.status_code == 201 and issued.json()["id"] == answer["id"]
    again = await preview(http, body)
    assert again["warnings"][0] == {"code": "already-issued", "seq": issued.json()["seq"], "detail": (
        f"this alert is stored as seq {issued.json()['seq']}; issuing it again returns it (200), nothing new")}
    other = draft(Text(headline="Autre chose", zones=(Zone(polygons=(square(48.8, 2.25, 0.1),)),)),
                  identifier="FR-PREVIEW-NOTHING")
    assert (await refused_alike(http, other, ISSUER))["code"] == "alert.identity-conflict"


async def test_previews_are_bounded_per_organisation_apart_from_alerts(http: httpx.AsyncClient) -> None:
    org = await new_org(http, alerts_per_min=1)
    headers = {**CAP, **bearer(org.author)}
    for _ in range(20):
        assert (await http.post("/api/v1/alerts/preview", content=draft(sender=org.sender), headers=headers)
                ).status_code == 200
    refused = await http.post("/api/v1/alerts/preview", content=draft(sender=org.sender), headers=headers)
    assert refused.status_code == 429 and refused.json()["code"] == "preview.rate-limited"
    assert int(refused.headers["Retry-After"]) >= 1
    # Twenty previews took nothing from its one alert a minute, nor from another organisation's previews.
    assert (await http.post("/api/v1/alerts", content=draft(sender=org.sender), headers=headers)).status_code == 201
    assert (await http.post("/api/v1/alerts/preview", content=draft(), headers=ISSUER)).status_code == 200


async def test_one_preview_at_a_time_per_worker(node: Node, http: httpx.AsyncClient) -> None:
    node.services.previews_running = 1  # another preview's cover is being computed
    busy = await http.post("/api/v1/alerts/preview", content=draft(), headers=ISSUER)
    assert busy.status_code == 503 and busy.json()["code"] == "preview.busy" and busy.headers["Retry-After"] == "1"
    node.services.previews_running = 0
    assert (await http.post("/api/v1/alerts/preview", content=draft(), headers=ISSUER)).status_code == 200
    assert node.services.previews_running == 0


# -- Warnings -----------------------------------------------------------------------------


async def test_warnings_for_nobody_reached_and_an_actual_alert(http: httpx.AsyncClient) -> None:
    answer = await preview(http, draft())
    assert answer["reach"]["devices"] == 0
    assert codes(answer) == ["no-device-reached", "actual-alert"]
    exercise = await preview(http, draft(status="Exercise"))
    assert codes(exercise) == ["no-device-reached"]


async def test_languages_reached_devices_prefer_without_an_info_are_warned(http: httpx.AsyncClient) -> None:
    for languages in (["fr-FR", "en"], ["fr"], ["de-DE"], ["de"], ["it"], []):
        registered = await http.post("/api/v1/devices", json={"points": [{"lat": 48.85, "lon": 2.3}],
                                                               "languages": languages})
        assert registered.status_code == 201, registered.text
    paris = Zone(polygons=(square(48.8, 2.25, 0.1),))
    answer = await preview(http, draft(Text(language="fr", zones=(paris,)), Text(language="de-AT", zones=(paris,))))
    assert answer["reach"]["devices"] == 6
    assert answer["reach"]["byLanguage"] == {"": 1, "de": 1, "de-DE": 1, "fr": 1, "fr-FR": 1, "it": 1}
    assert answer["reach"]["byChannel"] == {"live": 6}
    unserved = [(w["language"], w["devices"]) for w in answer["warnings"] if w["code"] == "language-not-offered"]
    assert unserved == [("it", 1)]  # fr ~ fr-FR, de-AT ~ de and de-DE, as the client picks an info


async def test_the_territory_and_the_area_against_it(http: httpx.AsyncClient) -> None:
    org = await new_org(http, territory={"circles": ["45.75,4.85 1"]})
    headers = {**CAP, **bearer(org.author)}
    small = await http.post("/api/v1/alerts/preview", headers=headers,
                            content=draft(Text(zones=(Zone(circles=("45.75,4.85 0.5",)),)), sender=org.sender))
    assert small.status_code == 200, small.text
    territory = small.json()["territory"]
    assert territory["km2"] == pytest.approx(math.pi, rel=0.01) and territory["ratio"] == pytest.approx(0.25, rel=0.02)
    assert "area-larger-than-territory" not in codes(small.json())


def test_the_territory_warning_names_the_ratio_from_one_and_a_half_times() -> None:
    alert = parse_xml(draft(status="Exercise"))
    reached = Reach(devices=1, by_channel={"live": 1}, by_language={"fr-FR": 1})

    def answer(ratio: float) -> dict[str, Any]:
        return {"territory": {"km2": 10.0, "ratio": ratio}, "area": {"text": f"{10 * ratio:g} km²"},
                "budgets": {"infos": [], "push": {"over": False}}}

    assert warnings(alert, answer(1.49), reached) == []
    assert warnings(alert, answer(3.0), reached) == [{
        "code": "area-larger-than-territory", "ratio": 3.0,
        "detail": "the area is 3.00 times the organisation's territory (30 km² against 10.0 km²)"}]


async def test_follow_ups_reach_where_their_references_went(http: httpx.AsyncClient) -> None:
    for lat, lon in ((48.85, 2.30), (48.86, 2.31), (45.76, 4.84), (43.30, 5.37)):  # Paris twice, Lyon, Marseille
        assert (await http.post("/api/v1/devices", json={"points": [{"lat": lat, "lon": lon}]})).status_code == 201
    paris = Text(zones=(Zone(polygons=(square(48.8, 2.25, 0.1),)),))
    body = draft(paris)
    issued = await http.post("/api/v1/alerts", content=body, headers=ISSUER)
    assert issued.status_code == 201, issued.text
    sent = parse_xml(body)
    reference = f"{sent.sender},{sent.identifier},{sent.sent.isoformat()}"
    lyon = Text(zones=(Zone(polygons=(square(45.7, 4.8, 0.1),)),))
    update = await preview(http, draft(lyon, msg_type="Update", references=reference))
    assert (update["cover"]["from"], update["reach"]["devices"]) == ("areas+references", 3)
    cancel = await preview(http, draft(Text(zones=()), msg_type="Cancel", references=reference))
    assert (cancel["cover"]["from"], cancel["reach"]["devices"], cancel["area"]["km2"]) == ("references", 2, 0)
    marker = (("tocsin:correction", "false-alert"),)
    correction = await preview(http, draft(Text(zones=(), parameters=marker), msg_type="Cancel", references=reference))
    assert (correction["cover"]["from"], correction["reach"]["devices"]) == ("everywhere", 4)

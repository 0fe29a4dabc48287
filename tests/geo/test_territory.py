"""Territories by gazetteer code, widened by the margin in metres (geo/territory.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tocsin.cap.model import Polygon
from tocsin.cap.parse import parse_xml
from tocsin.errors import Rejected
from tocsin.geo.cells import _destination, distance_km
from tocsin.geo.gazetteer import Gazetteer, NamedArea, builtin
from tocsin.geo.territory import Territory, TerritoryInvalid
from tocsin.policy import check_territory

from tests.samples import alert_xml

BUILTIN = Gazetteer(builtin())
ALPES_MARITIMES = BUILTIN["INSEE-DEP", "06"]
IN_LYON = "45.70,4.80 45.70,4.90 45.80,4.90 45.80,4.80 45.70,4.80"


def _outer_vertex(area: NamedArea, bearing: float) -> tuple[float, float]:
    """The vertex furthest north (bearing 0) or east (90) of the area."""
    points = [p for ring in area.polygons for p in ring]
    return max(points, key=lambda p: p[0]) if bearing == 0 else max(points, key=lambda p: p[1])


def _square_beyond(area: NamedArea, bearing: float, km: float) -> str:
    """A 20 m square whose near side is `km` beyond the area's outermost vertex that way."""
    lat, lon = _destination(*_outer_vertex(area, bearing), bearing, km)
    d = 0.01  # km
    corners = [_destination(*_destination(lat, lon, bearing, dy), bearing + 90, dx)
               for dy, dx in ((0, -d), (0, d), (2 * d, d), (2 * d, -d))]
    return " ".join(f"{a:.7f},{b:.7f}" for a, b in [*corners, corners[0]])


def _alert(polygon: str, desc: str = "Vallée") -> object:
    xml = alert_xml(polygon=polygon).replace(b"Paris centre", desc.encode())
    return parse_xml(xml)


def _boundary_km(area: NamedArea, polygon: str) -> float:
    """The polygon's nearest corner's distance to the area's boundary, measured on the sphere
    along the boundary sampled every ~20 m (independent of the territory's projection)."""
    corner = tuple(map(float, polygon.split()[0].split(",")))
    best = float("inf")
    for ring in area.polygons:
        for (a_lat, a_lon), (b_lat, b_lon) in zip(ring, ring[1:]):
            steps = max(1, int(distance_km((a_lat, a_lon), (b_lat, b_lon)) / 0.02))
            for k in range(steps + 1):
                t = k / steps
                point = (a_lat + t * (b_lat - a_lat), a_lon + t * (b_lon - a_lon))
                best = min(best, distance_km(corner, point))  # type: ignore[arg-type]
    return best


@pytest.mark.parametrize("bearing", [0, 90])
def test_a_polygon_1_km_beyond_the_06_border_passes_with_the_default_margin_and_3_km_is_refused(bearing: float) -> None:
    territory = Territory.from_json({"areas": ["INSEE-DEP:06"]})
    near, far = _square_beyond(ALPES_MARITIMES, bearing, 1.0), _square_beyond(ALPES_MARITIMES, bearing, 3.0)
    assert 0.99 < _boundary_km(ALPES_MARITIMES, near) < 1.01
    check_territory(_alert(near), territory, gazetteer=BUILTIN, margin_m=1500, organisation="pref-06")
    with pytest.raises(Rejected) as refused:
        check_territory(_alert(far, "Col de Tende"), territory, gazetteer=BUILTIN, margin_m=1500, organisation="pref-06")
    assert refused.value.problem.code == "policy.outside-territory"
    detail = refused.value.detail
    assert "info[0].area[0] ('Col de Tende')" in detail and "'pref-06'" in detail and "INSEE-DEP:06" in detail
    assert "1500 m" in detail
    with pytest.raises(Rejected):  # no margin: 1 km beyond is outside
        check_territory(_alert(near), territory, gazetteer=BUILTIN, margin_m=0, organisation="pref-06")


@pytest.mark.parametrize("bearing", [0, 90])
def test_the_margin_is_metres_at_the_territory_s_latitude(bearing: float) -> None:
    # At 44 degrees north a degree of longitude is 0.72 of one of latitude: a margin taken
    # in degrees would let 2 km through to the east; in metres, 1.45 km passes, 1.55 km not.
    territory = Territory.from_json({"areas": ["INSEE-DEP:06"]})
    check_territory(_alert(_square_beyond(ALPES_MARITIMES, bearing, 1.45)), territory, gazetteer=BUILTIN, margin_m=1500)
    with pytest.raises(Rejected):
        check_territory(_alert(_square_beyond(ALPES_MARITIMES, bearing, 1.55)), territory, gazetteer=BUILTIN,
                        margin_m=1500)


def test_a_circle_territory_widens_by_the_margin_too() -> None:
    territory = Territory.from_json({"circles": ["45.75,4.85 20"]})
    xml = alert_xml().replace(b"<polygon>48.80,2.25 48.80,2.42 48.90,2.42 48.90,2.25 48.80,2.25</polygon>",
                              b"<circle>45.75,4.85 21.4</circle>")
    check_territory(parse_xml(xml), territory, margin_m=1500)
    with pytest.raises(Rejected):
        check_territory(parse_xml(xml), territory, margin_m=0)


def test_codes_and_shapes_combine() -> None:
    paris = "48.80,2.25 48.80,2.42 48.90,2.42 48.90,2.25 48.80,2.25"
    territory = Territory.from_json({"areas": ["INSEE-DEP:06"], "polygons": [paris]})
    assert territory.as_json()["areas"] == ["INSEE-DEP:06"]
    check_territory(_alert(paris), territory, gazetteer=BUILTIN, margin_m=0)
    check_territory(_alert("43.70,7.25 43.70,7.27 43.72,7.27 43.72,7.25 43.70,7.25"), territory, gazetteer=BUILTIN)
    with pytest.raises(Rejected):  # Marseille: in neither
        check_territory(_alert("43.2,5.3 43.2,5.5 43.4,5.5 43.4,5.3 43.2,5.3"), territory, gazetteer=BUILTIN)
    polygons, _ = territory.shapes(BUILTIN)
    assert polygons[0] == territory.polygons[0] and ALPES_MARITIMES.polygons[0] in polygons


@pytest.mark.parametrize("raw, message", [
    ({"areas": ["INSEE-DEP"]}, "areas[0]"),
    ({"areas": ["INSEE-DEP:0 6"]}, "areas[0]"),
    ({"areas": [":06"]}, "areas[0]"),
    ({"areas": "INSEE-DEP:06"}, "areas must be a list"),
    ({"areas": ["X:1"] * 150 + [f"X:{n}" for n in range(60)]}, "at most 200"),
    ({"regions": []}, "a territory is"),
])
def test_a_territory_s_codes_are_read_strictly(raw: object, message: str) -> None:
    with pytest.raises(TerritoryInvalid, match=message.replace("[", r"\[").replace("]", r"\]")):
        Territory.from_json(raw)


def test_a_removed_scheme_holds_nothing_and_is_logged_and_a_return_is_seen(caplog: pytest.LogCaptureFixture) -> None:
    nice: Polygon = ((43.6, 7.1), (43.6, 7.4), (43.8, 7.4), (43.8, 7.1), (43.6, 7.1))
    gazetteer = Gazetteer()
    gazetteer.put(NamedArea(scheme="ZONES", code="nice", name="Nice", polygons=(nice,)))
    territory = Territory.from_json({"areas": ["ZONES:nice"]})
    inside = _alert("43.70,7.25 43.70,7.27 43.72,7.27 43.72,7.25 43.70,7.25")
    check_territory(inside, territory, gazetteer=gazetteer, margin_m=0)  # builds and caches the union
    gazetteer.remove("ZONES", "nice")
    with caplog.at_level(logging.WARNING, logger="tocsin.geo.territory"), pytest.raises(Rejected):
        check_territory(inside, territory, gazetteer=gazetteer, margin_m=0)
    assert any(getattr(r, "area", None) == "ZONES:nice" for r in caplog.records)
    # Back, elsewhere: the cached union follows the gazetteer, not the first answer.
    elsewhere: Polygon = ((45.0, 5.0), (45.0, 5.2), (45.2, 5.2), (45.2, 5.0), (45.0, 5.0))
    gazetteer.put(NamedArea(scheme="ZONES", code="nice", name="Nice", polygons=(elsewhere,)))
    with pytest.raises(Rejected):
        check_territory(inside, territory, gazetteer=gazetteer, margin_m=0)
    gazetteer.put(NamedArea(scheme="ZONES", code="nice", name="Nice", polygons=(nice,)))
    check_territory(inside, territory, gazetteer=gazetteer, margin_m=0)


def test_without_a_gazetteer_named_areas_hold_nothing() -> None:
    territory = Territory.from_json({"areas": ["INSEE-DEP:06"]})
    with pytest.raises(Rejected):
        check_territory(_alert("43.70,7.25 43.70,7.27 43.72,7.27 43.72,7.25 43.70,7.25"), territory)


async def test_prepare_builds_the_union_once_off_the_loop_and_the_check_then_only_reads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    from tocsin.geo import territory as module

    built: list[int] = []
    real_build = module._build

    def counted(*args: object) -> object:
        built.append(threading.get_ident())
        return real_build(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "_build", counted)
    territory = Territory.from_json({"areas": [f"INSEE-REG:{c}" for c in ("84", "93")]})
    await asyncio.gather(*(module.prepare(territory, BUILTIN, 1500) for _ in range(5)))
    assert len(built) == 1 and built[0] != threading.get_ident()  # one build, in another thread
    check_territory(_alert(IN_LYON), territory, gazetteer=BUILTIN, margin_m=1500)
    assert len(built) == 1  # the check read the cached union
    await module.prepare(territory, BUILTIN, 0)  # another margin: another union
    assert len(built) == 2

"""Every CAP area form, as the cover (server) and the precise check (device) see it: several
shapes, the antimeridian, tiny and country-sized polygons, crossing and touching rings."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from tocsin.cap.model import Area, Circle, Polygon
from tocsin.errors import Rejected
from tocsin.geo.cells import Crossing, TooTangled, cell_for_point, cover_for, covers_point, self_crossing
from tocsin.geo.gazetteer import Gazetteer, builtin
from tocsin.policy import check_polygons

from tests.client.cap_samples import alert, info

METROPOLITAN_REGIONS = ("11", "24", "27", "28", "32", "44", "52", "53", "75", "76", "84", "93", "94")


def ring(*points: tuple[float, float]) -> Polygon:
    return tuple((float(lat), float(lon)) for lat, lon in (*points, points[0]))


def square(lat: float, lon: float, side_m: float) -> Polygon:
    """A square of `side_m` metres with its south-west corner at (lat, lon)."""
    dlat = side_m / 111_195.0
    dlon = dlat / math.cos(math.radians(lat))
    return ring((lat, lon), (lat, lon + dlon), (lat + dlat, lon + dlon), (lat + dlat, lon))


def covered(areas: tuple[Area, ...], *points: tuple[float, float]) -> list[bool]:
    """Per point: the device's precise check says inside, and the server's cover holds its
    cell (a point inside that the cover misses would never receive the alert)."""
    cover = cover_for(areas)
    return [covers_point(areas, lat, lon) and cover.touches(cell_for_point(lat, lon)) for lat, lon in points]


# Several shapes in several areas --------------------------------------------------------

NICE = (43.7102, 7.2620)
MARSEILLE = (43.2965, 5.3698)
LYON = (45.7640, 4.8357)
TOULOUSE = (43.6047, 1.4442)
BREST = (48.3904, -4.4861)


def test_several_areas_with_several_polygons_and_circles_cover_every_shape() -> None:
    areas = (
        Area(area_desc="Côte", polygons=(square(43.70, 7.25, 3000), square(43.29, 5.36, 3000)),
             circles=(Circle(lat=LYON[0], lon=LYON[1], radius_km=5.0),)),
        Area(area_desc="Sud-Ouest", circles=(Circle(lat=TOULOUSE[0], lon=TOULOUSE[1], radius_km=2.0),
                                             Circle(lat=BREST[0], lon=BREST[1], radius_km=1.0))),
    )
    assert covered(areas, NICE, MARSEILLE, LYON, TOULOUSE, BREST) == [True] * 5
    # Far from each: not inside, whatever the cover says.
    assert not any(covers_point(areas, lat, lon) for lat, lon in ((45.0, 1.0), (47.0, 3.0), (44.5, 6.0)))


def test_circle_edge_inside_and_just_outside() -> None:
    area = (Area(area_desc="c", circles=(Circle(lat=45.0, lon=5.0, radius_km=10.0),)),)
    per_km = 1 / 111.195
    assert covered(area, (45.0 + 9.99 * per_km, 5.0)) == [True]
    assert not covers_point(area, 45.0 + 10.01 * per_km, 5.0)


# The antimeridian ---------------------------------------------------------------------

FIJI = ring((-16.0, 179.0), (-16.0, -179.0), (-18.0, -179.0), (-18.0, 179.0))


def test_polygon_across_the_antimeridian_covers_both_sides() -> None:
    areas = (Area(area_desc="Fiji", polygons=(FIJI,)),)
    assert covered(areas, (-17.0, 179.5), (-17.0, -179.5), (-17.0, 180.0), (-17.0, -180.0)) == [True] * 4
    # The wrong way round (the rest of the world) is not inside.
    assert not any(covers_point(areas, -17.0, lon) for lon in (0.0, 178.0, -178.0, 90.0))
    assert len(cover_for(areas).expand()) < 2000  # ~47,000 km² in ~36 km² cells, not the globe


def test_circle_across_the_antimeridian() -> None:
    areas = (Area(area_desc="c", circles=(Circle(lat=-17.0, lon=179.9, radius_km=30.0),)),)
    assert covered(areas, (-17.0, 179.7), (-17.0, -179.9)) == [True, True]
    assert not covers_point(areas, -17.0, -179.0)


# Tiny and country-sized ---------------------------------------------------------------


def test_twenty_metre_square_holds_the_cell_of_a_device_inside_it() -> None:
    tiny = square(43.7102, 7.2620, 20)
    areas = (Area(area_desc="20 m", polygons=(tiny,)),)
    inside = (43.7102 + 10 / 111_195.0, 7.2620 + 10 / (111_195.0 * math.cos(math.radians(43.7102))))
    assert covered(areas, inside) == [True]
    assert not covers_point(areas, inside[0] + 20 / 111_195.0, inside[1])  # 10 m past its north edge
    assert len(cover_for(areas).expand()) <= 3


def _france() -> tuple[Area, ...]:
    gazetteer = Gazetteer(builtin())
    polygons = tuple(p for code in METROPOLITAN_REGIONS for p in gazetteer[("INSEE-REG", code)].polygons)
    return (Area(area_desc="France métropolitaine", polygons=polygons),)


def test_metropolitan_france_holds_every_device_inside_it() -> None:
    france = _france()
    cover = cover_for(france)
    grid = [(41.0 + 0.1 * i, -5.5 + 0.1 * j) for i in range(111) for j in range(150)]
    inside = [point for point in grid if covers_point(france, *point)]
    assert len(inside) > 5000  # ~550,000 km² at ~0.1° x 0.1°
    missed = [point for point in inside if not cover.touches(cell_for_point(*point))]
    assert missed == []
    for town in (NICE, MARSEILLE, LYON, TOULOUSE, BREST, (48.8566, 2.3522), (42.6977, 9.4503)):
        assert covered(france, town) == [True]
    assert not any(covers_point(france, *p) for p in ((51.5074, -0.1278), (40.4168, -3.7038), (46.2044, 6.1432)))


def test_big_hand_drawn_polygon() -> None:
    hexagon = ring((51.2, 2.5), (49.0, 8.3), (43.3, 7.7), (42.3, 3.1), (43.4, -1.8), (48.5, -4.8))
    areas = (Area(area_desc="hexagone", polygons=(hexagon,)),)
    cover = cover_for(areas)
    points = [(42.5 + 0.05 * i, -4.5 + 0.05 * j) for i in range(170) for j in range(250)]
    inside = [p for p in points if covers_point(areas, *p)]
    assert len(inside) > 10_000
    assert all(cover.touches(cell_for_point(*p)) for p in inside)


# Crossing and touching rings -----------------------------------------------------------

BOW_TIE = ring((45.0, 5.0), (45.1, 5.1), (45.0, 5.1), (45.1, 5.0))


def test_bow_tie_crosses_where_its_edges_meet() -> None:
    found = self_crossing(BOW_TIE)
    assert found == Crossing(first=0, second=2, at=pytest.approx((45.05, 5.05)))  # type: ignore[arg-type]


def test_bow_tie_across_the_antimeridian_is_unwrapped_before_the_check() -> None:
    found = self_crossing(ring((-17.0, 179.5), (-16.0, -179.5), (-17.0, -179.5), (-16.0, 179.5)))
    assert found is not None and found.at == pytest.approx((-16.5, 180.0))
    assert self_crossing(FIJI) is None  # across it, but simple


@pytest.mark.parametrize(
    "touching",
    [
        # Two lobes sharing a vertex, visited twice (the second lobe the same way round).
        ring((45.0, 5.0), (45.0, 5.1), (45.1, 5.1), (45.0, 5.0), (45.0, 4.9), (44.9, 4.9)),
        # Two lobes meeting at a vertex the other way round (an hourglass drawn as two V's).
        ring((45.0, 5.0), (45.1, 5.1), (45.0, 5.2), (45.2, 5.2), (45.1, 5.1), (45.2, 5.0)),
        # A vertex on another edge.
        ring((45.0, 5.0), (45.0, 5.4), (45.4, 5.4), (45.0, 5.2), (45.4, 5.0)),
        # A spike drawn out and back.
        ring((45.0, 5.0), (45.0, 5.2), (45.2, 5.2), (45.3, 5.3), (45.2, 5.2), (45.2, 5.0)),
        # Degenerate: on one line, or one point.
        ring((45.0, 5.0), (45.0, 5.1), (45.0, 5.2)),
        ((45.0, 5.0),) * 4,
    ],
)
def test_a_ring_that_only_touches_itself_is_not_crossing(touching: Polygon) -> None:
    assert self_crossing(touching) is None


def test_touching_lobes_are_both_inside_for_the_cover_and_the_device() -> None:
    lobes = ring((45.0, 5.0), (45.0, 5.1), (45.1, 5.1), (45.0, 5.0), (45.0, 4.9), (44.9, 4.9))
    areas = (Area(area_desc="lobes", polygons=(lobes,)),)
    assert covered(areas, (45.02, 5.07), (44.98, 4.93)) == [True, True]
    assert not covers_point(areas, 45.08, 4.92)


def test_crossing_beside_touching_is_found_whichever_comes_first() -> None:
    # A touching lobe first, then a bow tie: GEOS reports only the touch here; the edges tell.
    mixed = ring((45.0, 5.0), (45.0, 4.9), (44.9, 4.9), (45.0, 5.0), (45.1, 5.1), (45.0, 5.1), (45.1, 5.0))
    found = self_crossing(mixed)
    assert found is not None and (found.first, found.second) == (3, 5)


def test_policy_refuses_a_bow_tie_naming_the_area_and_the_crossing() -> None:
    good = Area(area_desc="Nice", polygons=(square(43.70, 7.25, 3000),))
    bad = Area(area_desc="Noeud", polygons=(square(43.0, 5.0, 100), BOW_TIE))
    value = alert(info(), replace(info("en-US"), areas=(good, bad)))
    with pytest.raises(Rejected) as refused:
        check_polygons(value)
    assert refused.value.problem.code == "area.self-intersecting" and refused.value.problem.status == 422
    assert refused.value.detail == (
        "info[1].area[1] ('Noeud') polygon[1] crosses itself: the edge from point 0 to 1 crosses "
        "the edge from point 2 to 3 at 45.05,5.05"
    )
    check_polygons(alert())  # a simple ring passes



@pytest.mark.parametrize(
    "tangled",
    [
        ((45.0, 5.0),) * 50_000,  # one point repeated: every pair of edges meets
        tuple((45.0, 5.0 + 0.001 * (i % 2)) for i in range(20_000)) + ((45.0, 5.0),),  # a zigzag on one line
    ],
    ids=["one-point", "zigzag"],
)
def test_a_degenerate_ring_is_refused_before_its_pairs_of_edges_are_built(tangled: Polygon) -> None:
    # n² pairs of meeting edges (billions at 50,000 points) would hold the loop for minutes
    # and take gigabytes; the check stops at a bound linear in the points.
    with pytest.raises(TooTangled):
        self_crossing(tangled)
    value = alert(replace(info(), areas=(Area(area_desc="Pelote", polygons=(tangled,)),)))
    with pytest.raises(Rejected) as refused:
        check_polygons(value)
    assert refused.value.problem.code == "area.self-intersecting"
    assert refused.value.detail.startswith("info[0].area[0] ('Pelote') polygon[0]: more than ")

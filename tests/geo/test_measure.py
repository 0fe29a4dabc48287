"""The true km² of areas: circles, boxes, unions, the antimeridian, France."""

from __future__ import annotations

import math

import pytest

from tocsin.cap.model import Circle
from tocsin.geo.extent import EARTH_RADIUS_KM, circle_km2
from tocsin.geo.gazetteer import builtin
from tocsin.geo.measure import km2_text, shapes_km2


def box(south: float, west: float, north: float, east: float) -> tuple[tuple[float, float], ...]:
    return ((south, west), (south, east), (north, east), (north, west), (south, west))


def box_km2(south: float, north: float, width_deg: float) -> float:
    return EARTH_RADIUS_KM**2 * math.radians(width_deg) * (math.sin(math.radians(north)) - math.sin(math.radians(south)))


def test_a_box_is_exact_and_a_circle_within_a_thousandth() -> None:
    assert shapes_km2((box(48.0, 2.0, 49.0, 3.0),), ()) == pytest.approx(box_km2(48.0, 49.0, 1.0), rel=1e-9)
    for radius in (0.1, 10.0, 500.0):
        circle = Circle(lat=45.0, lon=5.0, radius_km=radius)
        assert shapes_km2((), (circle,)) == pytest.approx(circle_km2(circle), rel=1e-3)


def test_overlaps_count_once_and_disjoint_shapes_add_up() -> None:
    a, b = box(0.0, 0.0, 1.0, 1.0), box(0.0, 0.5, 1.0, 1.5)
    assert shapes_km2((a, b), ()) == pytest.approx(1.5 * shapes_km2((a,), ()), rel=1e-9)
    inner = Circle(lat=0.5, lon=0.5, radius_km=10.0)
    assert shapes_km2((a,), (inner,)) == pytest.approx(shapes_km2((a,), ()), rel=1e-9)
    far = Circle(lat=40.0, lon=40.0, radius_km=10.0)
    assert shapes_km2((a,), (far,)) == pytest.approx(shapes_km2((a,), ()) + circle_km2(far), rel=1e-4)


def test_the_antimeridian() -> None:
    across = ((-17.0, 179.5), (-17.0, -179.5), (-16.0, -179.5), (-16.0, 179.5), (-17.0, 179.5))
    assert shapes_km2((across,), ()) == pytest.approx(box_km2(-17.0, -16.0, 1.0), rel=1e-9)
    west = box(-17.0, -180.0, -16.0, -179.0)  # overlaps its eastern half
    assert shapes_km2((across, west), ()) == pytest.approx(box_km2(-17.0, -16.0, 1.5), rel=1e-9)
    on_it = Circle(lat=0.0, lon=180.0, radius_km=50.0)
    assert shapes_km2((), (on_it,)) == pytest.approx(circle_km2(on_it), rel=1e-3)
    also = Circle(lat=0.0, lon=-180.0, radius_km=50.0)  # the same circle, named from the west
    assert shapes_km2((), (on_it, also)) == pytest.approx(circle_km2(on_it), rel=1e-3)


def test_a_circle_around_a_pole_counts_its_cap() -> None:
    polar = Circle(lat=89.0, lon=0.0, radius_km=300.0)
    assert shapes_km2((), (polar,)) == pytest.approx(circle_km2(polar))


def test_metropolitan_france_and_a_departement() -> None:
    areas = builtin()
    regions = tuple(p for a in areas if a.scheme == "INSEE-REG" for p in a.polygons)
    departements = tuple(p for a in areas if a.scheme == "INSEE-DEP" for p in a.polygons)
    # IGN: 543,940 km²; the régions and the départements tile the same land.
    assert shapes_km2(regions, ()) == pytest.approx(543_940, rel=0.01)
    assert shapes_km2(departements, ()) == pytest.approx(shapes_km2(regions, ()), rel=1e-3)
    alpes_maritimes = next(a for a in areas if (a.scheme, a.code) == ("INSEE-DEP", "06"))
    assert shapes_km2(alpes_maritimes.polygons, ()) == pytest.approx(4_299, rel=0.02)


def test_km2_for_people() -> None:
    assert [km2_text(x) for x in (0.0, 0.02834, 78.54, 4275.9, 547_497.6)] == [
        "0 km²", "0.0283 km²", "78.5 km²", "4,276 km²", "547,498 km²"]


def test_degenerate_and_self_touching_outlines_count_what_they_hold() -> None:
    assert shapes_km2((((1.0, 1.0), (1.0, 1.0), (1.0, 1.0), (1.0, 1.0)),), ()) == 0.0
    bowtie = ((0.0, 0.0), (1.0, 1.0), (0.0, 1.0), (1.0, 0.0), (0.0, 0.0))  # two triangles, as devices check it
    assert shapes_km2((bowtie,), ()) == pytest.approx(box_km2(0.0, 1.0, 1.0) / 2, rel=1e-3)
    assert shapes_km2((), ()) == 0.0

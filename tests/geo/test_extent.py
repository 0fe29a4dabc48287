"""Extent estimates are cheap upper bounds; long outlines are covered through an enclosing
simplified outline, never missing a cell the exact cover has."""

from __future__ import annotations

import math

import pytest

from tocsin.cap.model import Circle
from tocsin.geo import cells
from tocsin.geo.cells import cover_of_shapes
from tocsin.geo.extent import EARTH_SURFACE_KM2, circle_km2, polygon_km2


def test_a_circle_counts_for_its_cap_and_never_more_than_the_earth() -> None:
    assert circle_km2(Circle(lat=0, lon=0, radius_km=10)) == pytest.approx(math.pi * 100, rel=1e-3)
    assert 1.7e8 < circle_km2(Circle(lat=48.85, lon=2.35, radius_km=8000)) < 1.9e8
    assert circle_km2(Circle(lat=0, lon=0, radius_km=1e9)) == pytest.approx(EARTH_SURFACE_KM2)


def test_a_self_crossing_polygon_counts_for_its_box() -> None:
    bow_tie = ((0.0, 0.0), (10.0, 10.0), (0.0, 10.0), (10.0, 0.0), (0.0, 0.0))  # signed area 0
    assert polygon_km2(bow_tie) == pytest.approx(polygon_km2(((0, 0), (0, 10), (10, 10), (10, 0), (0, 0))))
    assert polygon_km2(bow_tie) > 1e6


def test_a_polygon_across_the_antimeridian_is_measured_the_short_way() -> None:
    across = ((-10.0, 179.0), (-10.0, -179.0), (-12.0, -179.0), (-12.0, 179.0), (-10.0, 179.0))
    assert polygon_km2(across) < 60_000


def _wiggly_ring(points: int) -> tuple[tuple[float, float], ...]:
    ring = [
        (45.0 + (0.5 + 0.05 * math.sin(40 * t)) * math.sin(t), 5.0 + (0.7 + 0.05 * math.sin(40 * t)) * math.cos(t))
        for t in (2 * math.pi * i / points for i in range(points))
    ]
    return (*ring, ring[0])


def test_a_long_outline_is_covered_through_a_simpler_one_that_misses_no_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    ring = _wiggly_ring(3000)
    simplified = cover_of_shapes((ring,), ()).expand()
    cover_of_shapes.cache_clear()
    monkeypatch.setattr(cells, "_SIMPLIFY_ABOVE", 10**9)
    exact = cover_of_shapes((ring,), ()).expand()
    cover_of_shapes.cache_clear()
    assert exact <= simplified
    assert len(simplified) <= len(exact) * 1.1  # a few cells along the edge, no more

"""Areas to coarse cells (conservative, compacted) and the client's precise check."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import h3
import pytest
from shapely.geometry import Point, shape

from tests.datafiles import GEO_DATA
from tocsin.cap.model import Area, Circle, Polygon, ValuePair
from tocsin.geo.cells import (
    CELL_RESOLUTION,
    Cover,
    cell_for_point,
    cover_for,
    covers_point,
    distance_km,
    normalize_cell,
)

REGIONS = GEO_DATA / "regions-version-simplifiee.geojson"

PARIS = (48.8566, 2.3522)
LYON = (45.7640, 4.8357)


def ring(*points: tuple[float, float]) -> Polygon:
    """A closed (lat, lon) ring, as CAP writes it."""
    return (*points, points[0])


PARIS_BOX = ring((48.80, 2.22), (48.80, 2.47), (48.92, 2.47), (48.92, 2.22))


def area(*polygons: Polygon, circles: tuple[Circle, ...] = ()) -> Area:
    return Area(area_desc="test", polygons=polygons, circles=circles)


def test_cell_for_point_is_at_service_resolution() -> None:
    cell = cell_for_point(*PARIS)
    assert h3.get_resolution(cell) == CELL_RESOLUTION == 6


def test_normalize_cell_takes_the_parent_of_finer_cells() -> None:
    fine = h3.latlng_to_cell(*PARIS, 9)
    assert normalize_cell(fine) == cell_for_point(*PARIS)
    assert normalize_cell(cell_for_point(*PARIS)) == cell_for_point(*PARIS)


@pytest.mark.parametrize("bad", ["", "nope", "8f", "86ffffffffffff", h3.latlng_to_cell(*PARIS, 5)])
def test_normalize_cell_refuses_invalid_or_coarser_cells(bad: str) -> None:
    with pytest.raises(ValueError, match="cell"):
        normalize_cell(bad)


def test_polygon_around_paris_covers_paris_not_lyon() -> None:
    areas = [area(PARIS_BOX)]
    cover = cover_for(areas)
    assert covers_point(areas, *PARIS)
    assert cover.touches(cell_for_point(*PARIS))
    assert not covers_point(areas, *LYON)
    assert not cover.touches(cell_for_point(*LYON))


def test_points_just_inside_edges_are_in_a_covered_cell() -> None:
    areas = [area(PARIS_BOX)]
    cover = cover_for(areas)
    rng = random.Random(6)
    eps = 1e-6
    for _ in range(2000):
        t = rng.random()
        lat, lon = 48.80 + t * 0.12, 2.22 + t * 0.25
        for point in ((48.80 + eps, lon), (48.92 - eps, lon), (lat, 2.22 + eps), (lat, 2.47 - eps)):
            assert covers_point(areas, *point)
            assert cover.touches(cell_for_point(*point)), point


def test_polygon_smaller_than_a_cell_is_covered() -> None:
    tiny = ring((48.8500, 2.3500), (48.8500, 2.3510), (48.8508, 2.3510))
    cover = cover_for([area(tiny)])
    inside = (48.8502, 2.3508)
    assert covers_point([area(tiny)], *inside)
    assert cover.touches(cell_for_point(*inside))
    assert len(cover.expand()) >= 1


def test_polygon_straddling_cell_edges_covers_every_cell_it_touches() -> None:
    # A thin sliver along a meridian crosses many cells without holding any cell centre.
    sliver = ring((48.0, 2.3500), (49.0, 2.3500), (49.0, 2.3501), (48.0, 2.3501))
    cover = cover_for([area(sliver)])
    for i in range(1000):
        point = (48.0 + i / 1000, 2.35005)
        assert cover.touches(cell_for_point(*point))


def test_circle_covers_points_within_radius_only() -> None:
    circle = Circle(lat=PARIS[0], lon=PARIS[1], radius_km=10.0)
    areas = [area(circles=(circle,))]
    cover = cover_for(areas)
    rng = random.Random(7)
    for _ in range(2000):
        lat = PARIS[0] + rng.uniform(-0.2, 0.2)
        lon = PARIS[1] + rng.uniform(-0.3, 0.3)
        inside = distance_km(PARIS, (lat, lon)) <= 10.0
        assert covers_point(areas, lat, lon) is inside
        if inside:
            assert cover.touches(cell_for_point(lat, lon))
    assert not cover.touches(cell_for_point(*LYON))


@pytest.mark.parametrize("lat", [0.0, 45.0, 70.0])
@pytest.mark.parametrize("radius_km", [0.5, 25.0, 300.0])
def test_circle_cover_holds_points_near_its_rim(lat: float, radius_km: float) -> None:
    circle = Circle(lat=lat, lon=10.0, radius_km=radius_km)
    cover = cover_for([area(circles=(circle,))])
    for i in range(360):
        point = _destination_point(lat, 10.0, float(i), radius_km * 0.999)
        assert cover.touches(cell_for_point(*point)), (point, radius_km)


def _destination_point(lat: float, lon: float, bearing: float, km: float) -> tuple[float, float]:
    from tocsin.geo.cells import _destination

    return _destination(lat, lon, bearing, km)


def test_geocode_only_areas_give_an_empty_cover_and_no_match() -> None:
    only_codes = Area(area_desc="Paris", geocodes=(ValuePair(value_name="INSEE", value="75056"),))
    cover = cover_for([only_codes])
    assert cover.is_empty
    assert not cover.touches(cell_for_point(*PARIS))
    assert not covers_point([only_codes], *PARIS)


def test_polygon_across_the_antimeridian_covers_both_sides() -> None:
    fiji = ring((-17.0, 179.0), (-17.0, -179.0), (-19.0, -179.0), (-19.0, 179.0))
    areas = [area(fiji)]
    cover = cover_for(areas)
    for point in ((-18.0, 179.9), (-18.0, -179.9), (-17.5, 179.2)):
        assert covers_point(areas, *point)
        assert cover.touches(cell_for_point(*point))
    assert not covers_point(areas, -18.0, 0.0)
    assert not cover.touches(cell_for_point(-18.0, 0.0))
    assert len(cover.expand()) < 5000


def test_circle_around_a_pole_does_not_crash() -> None:
    cover_for([area(circles=(Circle(lat=89.9, lon=0.0, radius_km=50.0),))])
    assert covers_point([area(circles=(Circle(lat=89.9, lon=0.0, radius_km=50.0),))], 90.0, 0.0)


def test_touches_accepts_finer_cells_and_refuses_garbage() -> None:
    cover = cover_for([area(PARIS_BOX)])
    assert cover.touches(h3.latlng_to_cell(*PARIS, 10))
    with pytest.raises(ValueError):
        cover.touches("not a cell")
    with pytest.raises(ValueError):
        cover.touches(h3.latlng_to_cell(*PARIS, 4))


def _region(name: str) -> list[Polygon]:
    """The exterior rings of a région, as CAP (lat, lon) polygons."""
    data: dict[str, Any] = json.loads(REGIONS.read_text(encoding="utf-8"))
    feature = next(f for f in data["features"] if f["properties"]["nom"] == name)
    geometry = feature["geometry"]
    polygons = geometry["coordinates"] if geometry["type"] == "MultiPolygon" else [geometry["coordinates"]]
    return [tuple((lat, lon) for lon, lat in polygon[0]) for polygon in polygons]


@pytest.fixture(scope="module")
def occitanie() -> tuple[list[Area], Cover]:
    areas = [area(*_region("Occitanie"))]
    return areas, cover_for(areas)


def test_large_region_cover_is_compacted(occitanie: tuple[list[Area], Cover]) -> None:
    _, cover = occitanie
    expanded = cover.expand()
    assert len(cover.cells) < len(expanded) / 3
    assert {h3.get_resolution(c) for c in cover.cells} > {CELL_RESOLUTION}


def test_large_region_cover_touches_every_point_inside(occitanie: tuple[list[Area], Cover]) -> None:
    areas, cover = occitanie
    outline = shape({"type": "Polygon", "coordinates": [[(lon, lat) for lat, lon in areas[0].polygons[0]]]})
    west, south, east, north = outline.bounds
    rng = random.Random(76)
    checked = 0
    while checked < 3000:
        lon, lat = rng.uniform(west, east), rng.uniform(south, north)
        if outline.contains(Point(lon, lat)):
            checked += 1
            assert covers_point(areas, lat, lon)
            assert cover.touches(cell_for_point(lat, lon)), (lat, lon)
    assert not cover.touches(cell_for_point(*PARIS))


def test_touches_is_fast(occitanie: tuple[list[Area], Cover]) -> None:
    _, cover = occitanie
    rng = random.Random(1)
    cells = [cell_for_point(rng.uniform(41, 51), rng.uniform(-5, 9)) for _ in range(10_000)]
    started = time.perf_counter()
    hits = sum(cover.touches(cell) for cell in cells)
    elapsed = time.perf_counter() - started
    assert 0 < hits < len(cells)
    assert elapsed < 0.05, f"{elapsed * 1000:.1f} ms for 10,000 cells"


def test_cover_is_a_value() -> None:
    a, b = cover_for([area(PARIS_BOX)]), cover_for([area(PARIS_BOX)])
    assert a == b and hash(a) == hash(b)
    assert Cover.of(a.expand()) == a

"""The true surface of an alert's areas in km²: the union of its polygons and circles on the sphere.

Not geo/extent.py's estimate (a bounding box, an upper bound for limits): the reach preview
tells an author how much land the alert covers, overlaps counted once. Shapes are drawn as
devices check them (geo/cells.py): a polygon with straight edges in (lon, lat), an edge
spanning more than 180° of longitude crossing the antimeridian; a circle as the points within
its radius on the sphere, traced by CIRCLE_VERTICES points on its boundary.

The union is taken in the (lon, lat) plane on a cylinder: every shape is also placed one turn
east and west, and the union is cut to one turn, so shapes that meet across the antimeridian
overlap as they do on the Earth. The surface of the result is then exact for its straight
edges: the integral of R² cos(lat) over the region, by Green's theorem one closed form per edge.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import shapely
from shapely.geometry import GeometryCollection, MultiPolygon
from shapely.geometry import Polygon as ShapelyPolygon
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from tocsin.geo.cells import _destination, _planar, distance_km
from tocsin.geo.extent import EARTH_RADIUS_KM, circle_km2

if TYPE_CHECKING:
    from tocsin.cap.model import Area, Circle, Polygon

# A circle's boundary traced by this many points: the chords lose about (2π/n)²/6 of the
# surface, 0.003 % at 720.
CIRCLE_VERTICES = 720
_TURN = box(-180.0, -90.0, 180.0, 90.0)


def areas_km2(areas: Iterable[Area]) -> float:
    """The surface of the union of every polygon and circle of `areas` (0 when none)."""
    areas = tuple(areas)
    polygons = dict.fromkeys(p for area in areas for p in area.polygons)
    circles = dict.fromkeys(c for area in areas for c in area.circles)
    return shapes_km2(tuple(polygons), tuple(circles))


@functools.lru_cache(maxsize=64)
def shapes_km2(polygons: tuple[Polygon, ...], circles: tuple[Circle, ...]) -> float:
    """The surface of the union of the shapes; cached (a territory is measured at each preview).

    A circle that holds a pole cannot be drawn in the (lon, lat) plane: it counts for its
    exact spherical cap, added to the rest (its overlap with other shapes counted twice).
    """
    planar: list[BaseGeometry] = []
    polar = 0.0
    for polygon in polygons:
        drawn = _planar(polygon)
        if drawn is not None:
            planar.append(drawn[0])
    for circle in circles:
        if _holds_pole(circle):
            polar += circle_km2(circle)
        else:
            planar.append(_circle_shape(circle))
    if not planar:
        return polar
    copies = [shapely.transform(s, lambda xy, dx=dx: xy + (dx, 0.0)) for s in planar for dx in (-360.0, 0.0, 360.0)]
    union = shapely.intersection(shapely.union_all(copies), _TURN)
    return _surface_km2(union) + polar


def _holds_pole(circle: Circle) -> bool:
    return min(distance_km((circle.lat, circle.lon), (90.0, 0.0)),
               distance_km((circle.lat, circle.lon), (-90.0, 0.0))) <= circle.radius_km


def _circle_shape(circle: Circle) -> BaseGeometry:
    """The circle as a ring of points on its boundary, longitudes made continuous (one
    across the antimeridian goes past ±180 and is brought back by the cylinder's copies)."""
    points: list[tuple[float, float]] = []
    for i in range(CIRCLE_VERTICES):
        lat, lon = _destination(circle.lat, circle.lon, 360.0 * i / CIRCLE_VERTICES, max(circle.radius_km, 0.0))
        if points:
            lon += 360.0 * round((points[-1][0] - lon) / 360.0)
        points.append((lon, lat))
    shape = ShapelyPolygon(points)
    return shape if shape.is_valid else shapely.make_valid(shape)


def _surface_km2(geometry: BaseGeometry) -> float:
    """The spherical surface of planar (lon, lat) polygons: exteriors less their holes."""
    total = 0.0
    for part in _polygons(geometry):
        total += abs(_ring_integral(np.asarray(part.exterior.coords)))
        total -= sum(abs(_ring_integral(np.asarray(hole.coords))) for hole in part.interiors)
    return max(total, 0.0)


def _polygons(geometry: BaseGeometry) -> Iterator[ShapelyPolygon]:
    """The polygons of a geometry, at any depth of collections (lines and points hold no surface)."""
    for part in shapely.get_parts(geometry):
        if isinstance(part, ShapelyPolygon):
            if not part.is_empty:
                yield part
        elif isinstance(part, (MultiPolygon, GeometryCollection)):
            yield from _polygons(part)


def _ring_integral(xy: np.ndarray) -> float:
    """R² ∮ sin(lat) dlon around a closed ring of (lon, lat) degrees, edges straight in the plane.

    Along an edge lat = φ1 + (φ2 - φ1) t and lon = λ1 + (λ2 - λ1) t, so the integral is
    Δλ (cos φ1 - cos φ2) / Δφ, or Δλ sin φ1 on an edge of constant latitude.
    """
    lon, lat = np.radians(xy[:, 0]), np.radians(xy[:, 1])
    dlon, dlat = np.diff(lon), np.diff(lat)
    flat = np.abs(dlat) < 1e-12
    safe = np.where(flat, 1.0, dlat)
    edge = np.where(flat, dlon * np.sin(lat[:-1]), dlon * (np.cos(lat[:-1]) - np.cos(lat[1:])) / safe)
    return float(EARTH_RADIUS_KM**2 * edge.sum())


def km2_text(km2: float) -> str:
    """A surface for people: at least 3 significant figures (0.0283 km², 78.5 km², 547,498 km²)."""
    if km2 <= 0.0:
        return "0 km²"
    digits = max(0, 2 - math.floor(math.log10(km2)))
    return f"{round(km2, digits):,.{digits}f} km²"

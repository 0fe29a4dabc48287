"""An issuer organisation's territory: the CAP polygons and circles its alerts must stay in.

The territory is the admin's (bounded when it is set: MAX_SHAPES, MAX_POINTS); the alert
is bounded by `policy.check_limits` before it is compared, so one check costs at most a
union of the territory's shapes (cached) and one `covers` per shape of the alert.
Comparison is planar in (lon, lat), as devices draw CAP polygons; a territory circle counts
as the 64-gon inscribed in it and an alert circle as the 64-gon around it, so an area is
never judged inside when part of it is outside. An alert circle inside a territory circle
is compared exactly on the sphere.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import shapely
from shapely.geometry import Polygon as ShapelyPolygon
from shapely.geometry.base import BaseGeometry

from tocsin.cap.model import Alert, Circle, Polygon
from tocsin.cap.shapes import format_circle, format_polygon, read_circle, read_polygon
from tocsin.geo.cells import _CIRCLE_VERTICES, _circle_ring, _destination, distance_km

# What an admin may draw as one organisation's territory.
MAX_SHAPES = 200
MAX_POINTS = 20_000


class TerritoryInvalid(ValueError):
    """A territory that cannot be read or is larger than MAX_SHAPES / MAX_POINTS."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Territory:
    """Polygons and circles; an area is inside when the union of them covers it."""

    polygons: tuple[Polygon, ...] = ()
    circles: tuple[Circle, ...] = ()

    def as_json(self) -> dict[str, list[str]]:
        """CAP texts: "lat,lon lat,lon ..." polygons and "lat,lon radius_km" circles."""
        return {"polygons": [format_polygon(p) for p in self.polygons],
                "circles": [format_circle(c) for c in self.circles]}

    @classmethod
    def from_json(cls, data: object) -> Territory:
        """Read a territory as an admin or the accounts file gives it.

        Raises:
            TerritoryInvalid: naming the shape that cannot be read, or the bound passed.
        """
        if not isinstance(data, dict) or set(data) - {"polygons", "circles"}:
            raise TerritoryInvalid("a territory is {polygons: [...], circles: [...]} of CAP texts")
        polygons: list[Polygon] = []
        circles: list[Circle] = []
        for n, text in enumerate(_texts(data.get("polygons"), "polygons")):
            polygon, issues = read_polygon(text)
            if issues:
                raise TerritoryInvalid(f"polygons[{n}]: {issues[0][1]}")
            polygons.append(polygon)
        for n, text in enumerate(_texts(data.get("circles"), "circles")):
            circle, issues = read_circle(text)
            if circle is None or issues:
                raise TerritoryInvalid(f"circles[{n}]: {issues[0][1] if issues else 'unreadable'}")
            circles.append(circle)
        if len(polygons) + len(circles) > MAX_SHAPES or sum(map(len, polygons)) > MAX_POINTS:
            raise TerritoryInvalid(f"at most {MAX_SHAPES} shapes and {MAX_POINTS} points")
        return cls(polygons=tuple(polygons), circles=tuple(circles))

    @classmethod
    def decode(cls, data: object) -> Territory | None:
        """A stored territory, fail-closed: None only for an explicit null (no territory: the
        organisation may alert anywhere); anything unreadable is an empty territory, which
        holds no area."""
        if data is None:
            return None
        try:
            return cls.from_json(data)
        except TerritoryInvalid:
            return cls()

    def outside(self, alert: Alert) -> str | None:
        """The path and description of the first drawn area not within the territory, or None."""
        shape = _union(self)
        for i, info in enumerate(alert.infos):
            for j, area in enumerate(info.areas):
                inside = all(shape is not None and shape.covers(_planar(p)) for p in area.polygons) and all(
                    self._holds_circle(c, shape) for c in area.circles
                )
                if not inside:
                    return f"info[{i}].area[{j}] ({area.area_desc!r})"
        return None

    def _holds_circle(self, circle: Circle, shape: BaseGeometry | None) -> bool:
        if any(distance_km((t.lat, t.lon), (circle.lat, circle.lon)) + circle.radius_km <= t.radius_km
               for t in self.circles):
            return True
        ring = [(lon, lat) for lat, lon in _circle_ring(circle)]
        return shape is not None and bool(shape.covers(ShapelyPolygon(ring)))


def _texts(raw: object, name: str) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
        raise TerritoryInvalid(f"{name} must be a list of CAP texts")
    return raw


def _planar(polygon: Polygon) -> BaseGeometry:
    shape: BaseGeometry = ShapelyPolygon([(lon, lat) for lat, lon in polygon])
    return shape if shape.is_valid else shapely.make_valid(shape)


@functools.lru_cache(maxsize=256)
def _union(territory: Territory) -> BaseGeometry | None:
    """The territory as one prepared planar shape (cached: it changes only with the record)."""
    parts = [_planar(p) for p in territory.polygons]
    for c in territory.circles:
        ring = [_destination(c.lat, c.lon, 360.0 * k / _CIRCLE_VERTICES, c.radius_km) for k in range(_CIRCLE_VERTICES)]
        parts.append(ShapelyPolygon([(lon, lat) for lat, lon in ring]))
    if not parts:
        return None
    shape = shapely.union_all(parts)
    shapely.prepare(shape)
    return shape

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

from collections import OrderedDict
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
        where: list[str] = []
        shapes: list[BaseGeometry] = []
        for i, info in enumerate(alert.infos):
            for j, area in enumerate(info.areas):
                path = f"info[{i}].area[{j}] ({area.area_desc!r})"
                for polygon in area.polygons:
                    where.append(path)
                    shapes.append(_planar(polygon))
                for circle in area.circles:
                    if not self._circles_hold(circle):
                        where.append(path)
                        shapes.append(ShapelyPolygon([(lon, lat) for lat, lon in _circle_ring(circle)]))
        if not shapes:
            return None
        if shape is None:
            return where[0]
        inside = shapely.covers(shape, shapes)  # one vectorised pass over the alert's shapes
        return next((w for w, ok in zip(where, inside) if not ok), None)

    def shapes(self) -> tuple[tuple[Polygon, ...], tuple[Circle, ...]]:
        """Every polygon and circle the territory holds (for its extent, the reach preview)."""
        return self.polygons, self.circles

    def _circles_hold(self, circle: Circle) -> bool:
        return any(distance_km((t.lat, t.lon), (circle.lat, circle.lon)) + circle.radius_km <= t.radius_km
                   for t in self.circles)


def _texts(raw: object, name: str) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
        raise TerritoryInvalid(f"{name} must be a list of CAP texts")
    return raw


def _planar(polygon: Polygon) -> BaseGeometry:
    shape: BaseGeometry = ShapelyPolygon([(lon, lat) for lat, lon in polygon])
    return shape if shape.is_valid else shapely.make_valid(shape)


# Unions by territory object (decoded once per record change, accounts/book.py): keyed by
# identity, since hashing a 20,000-point territory costs more than the check; each entry
# holds its territory, so that its id cannot be reused while cached.
_UNIONS: OrderedDict[int, tuple[Territory, BaseGeometry | None]] = OrderedDict()
_UNIONS_MAX = 256


def _union(territory: Territory) -> BaseGeometry | None:
    """The territory as one prepared planar shape (cached: it changes only with the record)."""
    cached = _UNIONS.get(id(territory))
    if cached is not None and cached[0] is territory:
        _UNIONS.move_to_end(id(territory))
        return cached[1]
    parts = [_planar(p) for p in territory.polygons]
    for c in territory.circles:
        ring = [_destination(c.lat, c.lon, 360.0 * k / _CIRCLE_VERTICES, c.radius_km) for k in range(_CIRCLE_VERTICES)]
        parts.append(ShapelyPolygon([(lon, lat) for lat, lon in ring]))
    shape = shapely.union_all(parts) if parts else None
    if shape is not None:
        shapely.prepare(shape)
    _UNIONS[id(territory)] = (territory, shape)
    if len(_UNIONS) > _UNIONS_MAX:
        _UNIONS.popitem(last=False)
    return shape

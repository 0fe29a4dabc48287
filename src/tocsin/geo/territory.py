"""An issuer organisation's territory: the named areas, CAP polygons and circles its alerts
must stay in, widened by the deployment's margin.

The territory is the admin's (bounded when it is set: MAX_SHAPES, MAX_POINTS); the alert
is bounded by `policy.check_limits` before it is compared, so one check costs at most a
union of the territory's shapes (cached) and one `covers` per shape of the alert.
Comparison is planar in (lon, lat), as devices draw CAP polygons; a territory circle counts
as the 64-gon inscribed in it and an alert circle as the 64-gon around it, so an area is
never judged inside when part of it is outside. An alert circle inside a territory circle
is compared exactly on the sphere.

Named areas ("INSEE-DEP:06") are looked up in the node's gazetteer at each check: one that
the gazetteer no longer holds (its scheme removed) holds nothing, and is logged. The
margin widens every part in metres: each part is cut into bands of one degree of latitude
and each band buffered in a plane whose longitudes are scaled by the cosine of the band's
mean latitude, where a degree of either axis is about the same length (error under 1 %
of the margin below 60 degrees of latitude).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass

import shapely
import shapely.affinity
from shapely.geometry import Polygon as ShapelyPolygon
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from tocsin.cap.model import Alert, Circle, Polygon
from tocsin.cap.shapes import format_circle, format_polygon, read_circle, read_polygon
from tocsin.geo.cells import _CIRCLE_VERTICES, _circle_ring, _destination, distance_km
from tocsin.geo.extent import EARTH_RADIUS_KM
from tocsin.geo.gazetteer import CODE_TEXT, SCHEME_TEXT, Gazetteer, NamedArea

log = logging.getLogger(__name__)

# What an admin may draw as one organisation's territory (named areas count as shapes).
MAX_SHAPES = 200
MAX_POINTS = 20_000
# Metres in a degree of latitude (and of longitude at the equator) on the mean sphere.
METRES_PER_DEGREE = math.pi * EARTH_RADIUS_KM * 1000.0 / 180.0


class TerritoryInvalid(ValueError):
    """A territory that cannot be read or is larger than MAX_SHAPES / MAX_POINTS."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Territory:
    """Named areas, polygons and circles; an area is inside when the union of them, widened
    by the margin, covers it."""

    polygons: tuple[Polygon, ...] = ()
    circles: tuple[Circle, ...] = ()
    # Gazetteer codes, "SCHEME:CODE" ("INSEE-DEP:06"), resolved at each check.
    areas: tuple[str, ...] = ()

    def as_json(self) -> dict[str, list[str]]:
        """CAP texts: "lat,lon lat,lon ..." polygons and "lat,lon radius_km" circles; and the
        "SCHEME:CODE" areas when it has any."""
        data = {"polygons": [format_polygon(p) for p in self.polygons],
                "circles": [format_circle(c) for c in self.circles]}
        if self.areas:
            data["areas"] = list(self.areas)
        return data

    def named(self) -> tuple[tuple[str, str], ...]:
        """Each area as (scheme, code)."""
        return tuple((scheme, code) for scheme, _, code in (a.partition(":") for a in self.areas))

    def describe(self) -> str:
        """The territory in a few words, for a refusal ("areas INSEE-DEP:06; 2 polygons")."""
        parts = []
        if self.areas:
            shown = ", ".join(self.areas[:10])
            parts.append(f"areas {shown}" + (f" and {len(self.areas) - 10} more" if len(self.areas) > 10 else ""))
        if self.polygons:
            parts.append(f"{len(self.polygons)} polygon{'s' * (len(self.polygons) > 1)}")
        if self.circles:
            parts.append(f"{len(self.circles)} circle{'s' * (len(self.circles) > 1)}")
        return "; ".join(parts) or "nothing"

    @classmethod
    def from_json(cls, data: object) -> Territory:
        """Read a territory as an admin or the accounts file gives it.

        Raises:
            TerritoryInvalid: naming the shape that cannot be read, or the bound passed.
        """
        if not isinstance(data, dict) or set(data) - {"areas", "polygons", "circles"}:
            raise TerritoryInvalid(
                'a territory is {areas: ["SCHEME:CODE", ...], polygons: [...], circles: [...]} of texts'
            )
        areas: list[str] = []
        for n, text in enumerate(_texts(data.get("areas"), "areas")):
            scheme, colon, code = text.partition(":")
            if not (colon and SCHEME_TEXT.fullmatch(scheme) and CODE_TEXT.fullmatch(code)):
                raise TerritoryInvalid(f"areas[{n}]: {text!r:.80} is not SCHEME:CODE (such as INSEE-DEP:06)")
            areas.append(text)
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
        if len(areas) + len(polygons) + len(circles) > MAX_SHAPES or sum(map(len, polygons)) > MAX_POINTS:
            raise TerritoryInvalid(f"at most {MAX_SHAPES} areas and shapes, and {MAX_POINTS} points")
        return cls(polygons=tuple(polygons), circles=tuple(circles), areas=tuple(dict.fromkeys(areas)))

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

    def outside(self, alert: Alert, gazetteer: Gazetteer | None = None, margin_m: float = 0.0) -> str | None:
        """The path and description of the first drawn area not within the territory (its
        named areas looked up in `gazetteer`) widened by `margin_m` metres, or None."""
        shape = _union(self, gazetteer, margin_m)
        margin_km = margin_m / 1000.0
        where: list[str] = []
        shapes: list[BaseGeometry] = []
        for i, info in enumerate(alert.infos):
            for j, area in enumerate(info.areas):
                path = f"info[{i}].area[{j}] ({area.area_desc!r})"
                for polygon in area.polygons:
                    where.append(path)
                    shapes.append(_planar(polygon))
                for circle in area.circles:
                    if not self._circles_hold(circle, margin_km):
                        where.append(path)
                        shapes.append(ShapelyPolygon([(lon, lat) for lat, lon in _circle_ring(circle)]))
        if not shapes:
            return None
        if shape is None:
            return where[0]
        inside = shapely.covers(shape, shapes)  # one vectorised pass over the alert's shapes
        return next((w for w, ok in zip(where, inside) if not ok), None)

    def shapes(self, gazetteer: Gazetteer | None = None) -> tuple[tuple[Polygon, ...], tuple[Circle, ...]]:
        """Every polygon and circle the territory holds (for its extent, the reach preview):
        with a gazetteer, the polygons of its named areas too (those it holds)."""
        if gazetteer is None or not self.areas:
            return self.polygons, self.circles
        named = [ring for area in _named(self, gazetteer) if area is not None for ring in area.polygons]
        return self.polygons + tuple(dict.fromkeys(named)), self.circles

    def _circles_hold(self, circle: Circle, margin_km: float) -> bool:
        return any(distance_km((t.lat, t.lon), (circle.lat, circle.lon)) + circle.radius_km <= t.radius_km + margin_km
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


def _named(territory: Territory, gazetteer: Gazetteer | None) -> tuple[NamedArea | None, ...]:
    """The territory's named areas as the gazetteer holds them now (None: not held)."""
    return tuple(gazetteer.lookup(*pair) if gazetteer is not None else None for pair in territory.named())


def widened(part: BaseGeometry, margin_m: float) -> BaseGeometry:
    """`part` (planar lon, lat) grown by `margin_m` metres, band by band of latitude."""
    if margin_m <= 0 or part.is_empty:
        return part
    min_lon, min_lat, max_lon, max_lat = part.bounds
    bands = [part] if max_lat - min_lat < 1 else [
        part.intersection(box(min_lon - 1, south, max_lon + 1, south + 1))
        for south in range(math.floor(min_lat), math.ceil(max_lat))
    ]
    pieces = []
    for band in bands:
        if band.is_empty:
            continue
        b_south, b_north = band.bounds[1], band.bounds[3]
        scale = max(math.cos(math.radians((b_south + b_north) / 2)), 0.01)
        flat = shapely.affinity.scale(band, xfact=scale, yfact=1.0, origin=(0.0, 0.0))
        grown = flat.buffer(margin_m / METRES_PER_DEGREE, quad_segs=8)
        pieces.append(shapely.affinity.scale(grown, xfact=1.0 / scale, yfact=1.0, origin=(0.0, 0.0)))
    return shapely.union_all(pieces) if pieces else part


# Unions by territory object (decoded once per record change, accounts/book.py) and margin:
# keyed by identity, since hashing a 20,000-point territory costs more than the check. Each
# entry holds its territory, so that its id cannot be reused while cached, and the named
# areas it was built from: a gazetteer change (an import, a removal) replaces the NamedArea
# objects, so the union is built again when, and only when, one of its areas changed.
_Key = tuple[int, float]
_Named = tuple[NamedArea | None, ...]
_UNIONS: OrderedDict[_Key, tuple[Territory, _Named, BaseGeometry | None]] = OrderedDict()
_UNIONS_MAX = 256
# Unions being built off the loop (`prepare`), so that concurrent requests build one.
_BUILDING: dict[_Key, tuple[Territory, _Named, asyncio.Future[BaseGeometry | None]]] = {}


def _same(a: _Named, b: _Named) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


def _cached(key: _Key, territory: Territory, named: _Named) -> tuple[bool, BaseGeometry | None]:
    """(found, the union) for this territory built from these named areas."""
    cached = _UNIONS.get(key)
    if cached is None or cached[0] is not territory or not _same(cached[1], named):
        return False, None
    _UNIONS.move_to_end(key)
    return True, cached[2]


def _keep(key: _Key, territory: Territory, named: _Named, shape: BaseGeometry | None) -> None:
    _UNIONS[key] = (territory, named, shape)
    if len(_UNIONS) > _UNIONS_MAX:
        _UNIONS.popitem(last=False)


def _build(territory: Territory, named: _Named, margin_m: float) -> BaseGeometry | None:
    """The territory as one prepared planar shape, widened by the margin (pure: it may run
    in a thread)."""
    parts = [_planar(p) for p in territory.polygons]
    for text, area in zip(territory.areas, named):
        if area is None:
            log.warning("a territory names an area the gazetteer does not hold: it holds nothing there",
                        extra={"area": text})
            continue
        parts.extend(_planar(ring) for ring in area.polygons)
    parts = [widened(part, margin_m) for part in parts]
    for c in territory.circles:
        radius_km = c.radius_km + margin_m / 1000.0
        ring = [_destination(c.lat, c.lon, 360.0 * k / _CIRCLE_VERTICES, radius_km) for k in range(_CIRCLE_VERTICES)]
        parts.append(ShapelyPolygon([(lon, lat) for lat, lon in ring]))
    shape = shapely.union_all(parts) if parts else None
    if shape is not None:
        shapely.prepare(shape)
    return shape


def _union(territory: Territory, gazetteer: Gazetteer | None = None, margin_m: float = 0.0) -> BaseGeometry | None:
    """The territory's widened union (cached: it changes only with the record, its named
    areas and the margin); built here when `prepare` has not built it."""
    key, named = (id(territory), margin_m), _named(territory, gazetteer)
    found, shape = _cached(key, territory, named)
    if found:
        return shape
    shape = _build(territory, named, margin_m)
    _keep(key, territory, named, shape)
    return shape


async def prepare(territory: Territory, gazetteer: Gazetteer | None = None, margin_m: float = 0.0) -> None:
    """Build the territory's widened union off the event loop unless it is cached, so that
    the check that follows only reads it: a large territory by code (every département of a
    full-resolution file) takes seconds to widen, once per change."""
    key, named = (id(territory), margin_m), _named(territory, gazetteer)
    if _cached(key, territory, named)[0]:
        return
    building = _BUILDING.get(key)
    if building is None or building[0] is not territory or not _same(building[1], named):
        future = asyncio.ensure_future(asyncio.to_thread(_build, territory, named, margin_m))
        building = (territory, named, future)
        _BUILDING[key] = building

        def done(_: object, mine: tuple[Territory, _Named, asyncio.Future[BaseGeometry | None]] = building) -> None:
            if _BUILDING.get(key) is mine:
                del _BUILDING[key]

        future.add_done_callback(done)
    shape = await asyncio.shield(building[2])
    _keep(key, territory, named, shape)

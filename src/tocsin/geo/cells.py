"""Alert areas -> coarse H3 cells for targeting, and the client's precise point-in-area check.

The server only ever sees cells at CELL_RESOLUTION, never a precise position; the client
makes the final check against the alert's polygons and circles before it shows anything.

Longitudes: a polygon edge that spans more than 180° of longitude is taken to cross the
antimeridian (as H3 does), both for the cover and for the precise check. Areas that enclose a
pole are not supported: they do not crash, but their cover may miss cells near the pole.

A ring that crosses itself is refused at accept (`self_crossing`, policy.check_polygons); one
that only touches itself is accepted, and both the cover and the precise check take all of
its lobes.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import h3
import numpy as np
import shapely
from shapely.geometry import Polygon as ShapelyPolygon

from tocsin.geo.extent import EARTH_RADIUS_KM as _EARTH_RADIUS_KM

if TYPE_CHECKING:
    from tocsin.cap.model import Area, Circle, Polygon

log = logging.getLogger(__name__)

# H3 resolution 6: ~36 km² cells, coarse enough that the server never learns a precise
# position, fine enough that an alert for a town does not wake a whole département.
CELL_RESOLUTION = 6

# A circle becomes a polygon of this many vertices for the cover.
_CIRCLE_VERTICES = 64
# The vertices sit outside the circle so that every chord stays outside it: R / cos(pi/n),
# plus 1% because H3 draws polygon edges straight in lat/lng, not along great circles.
_CIRCLE_MARGIN = 1.01 / math.cos(math.pi / _CIRCLE_VERTICES)
# A ring with more points than this is covered through a simplified outline around it: the
# overlap cover costs about cells x edges (a real 41,000-point outline took 5-10 s), and an
# outline within _OUTLINE_TOLERANCE_DEG (~200 m, far below a cell's ~3.7 km edge) of a ring
# buffered by twice that encloses the ring, so the cover stays conservative.
_SIMPLIFY_ABOVE = 1000
_OUTLINE_TOLERANCE_DEG = 0.002

LatLon = tuple[float, float]

# H3 index layout (h3geo.org/docs/library/index/cell): resolution in bits 52-55, then one
# 3-bit digit per resolution 1..15, digit r at bit 3 * (15 - r); unused digits are 7.
_RES_SHIFT = 52
_RES_CLEAR = ~(0xF << _RES_SHIFT)


def _digits_fill(res: int) -> int:
    """The bits that set every digit finer than `res` to 7 (unused)."""
    return sum(7 << (3 * (15 - r)) for r in range(res + 1, 16))


_PARENT_BITS = tuple((r << _RES_SHIFT) | _digits_fill(r) for r in range(CELL_RESOLUTION + 1))


def cell_for_point(lat: float, lon: float) -> str:
    """The cell at CELL_RESOLUTION that holds the point."""
    return str(h3.latlng_to_cell(lat, lon, CELL_RESOLUTION))


def normalize_cell(cell: str) -> str:
    """The cell's ancestor at CELL_RESOLUTION.

    Raises:
        ValueError: `cell` is not a valid H3 cell, or is coarser than CELL_RESOLUTION.
    """
    if not isinstance(cell, str) or not h3.is_valid_cell(cell):
        raise ValueError(f"{cell!r} is not a valid H3 cell")
    res = h3.get_resolution(cell)
    if res < CELL_RESOLUTION:
        raise ValueError(
            f"cell {cell} is at resolution {res}, coarser than the service's {CELL_RESOLUTION}"
        )
    return cell if res == CELL_RESOLUTION else str(h3.cell_to_parent(cell, CELL_RESOLUTION))


@dataclass(frozen=True, slots=True, kw_only=True)
class Cover:
    """The compacted set of cells that an alert's areas touch; conservative by design."""

    cells: frozenset[str] = frozenset()
    # Per resolution, the compacted cells as integers: `touches` walks a few ancestors.
    _levels: tuple[tuple[int, frozenset[int]], ...] = field(
        init=False, repr=False, compare=False, default=()
    )

    def __post_init__(self) -> None:
        by_res: dict[int, set[int]] = {}
        for cell in self.cells:
            res = h3.get_resolution(cell)
            if res > CELL_RESOLUTION:
                raise ValueError(f"cover cell {cell} is finer than resolution {CELL_RESOLUTION}")
            by_res.setdefault(res, set()).add(int(cell, 16))
        levels = tuple((res, frozenset(ints)) for res, ints in sorted(by_res.items()))
        object.__setattr__(self, "_levels", levels)

    @classmethod
    def of(cls, cells: Iterable[str]) -> Cover:
        """Compact `cells` (each at CELL_RESOLUTION or coarser) into a Cover."""
        return cls(cells=frozenset(str(c) for c in h3.compact_cells(list(set(cells)))))

    @classmethod
    def carried(cls, cells: Iterable[str]) -> Cover | None:
        """A cover computed elsewhere (its cells as stored), or None when a cell is not a
        valid H3 cell at or above CELL_RESOLUTION: then the caller computes it."""
        chosen = frozenset(cells)
        if not all(h3.is_valid_cell(cell) for cell in chosen):
            return None
        try:
            return cls(cells=chosen)
        except ValueError:  # finer than CELL_RESOLUTION
            return None

    @property
    def is_empty(self) -> bool:
        """True when no area had a polygon or circle (geocodes only)."""
        return not self.cells

    def touches(self, cell: str) -> bool:
        """Whether the cell (made CELL_RESOLUTION) or one of its ancestors is in the cover.

        Raises:
            ValueError: `cell` is not a valid H3 cell at or below CELL_RESOLUTION.
        """
        try:
            index = int(cell, 16)
        except (TypeError, ValueError):
            raise ValueError(f"{cell!r} is not a valid H3 cell") from None
        if (index >> _RES_SHIFT) & 0xF != CELL_RESOLUTION:
            index = int(normalize_cell(cell), 16)
        bare = index & _RES_CLEAR
        for res, members in self._levels:
            if (bare | _PARENT_BITS[res]) in members:
                return True
        return False

    def expand(self) -> frozenset[str]:
        """Every cell of the cover at CELL_RESOLUTION (may be large for a big area)."""
        return frozenset(str(c) for c in h3.uncompact_cells(list(self.cells), CELL_RESOLUTION))


@dataclass(slots=True)
class CoverTally:
    """How many covers this process computed (a cached or carried cover is not counted)."""

    computed: int = 0


tally = CoverTally()


def distinct_shapes(areas: Iterable[Area]) -> tuple[tuple[Polygon, ...], tuple[Circle, ...]]:
    """The polygons and circles of `areas`, each once (an alert in eight languages repeats
    the same area eight times)."""
    polygons = dict.fromkeys(polygon for area in areas for polygon in area.polygons)
    circles = dict.fromkeys(circle for area in areas for circle in area.circles)
    return tuple(polygons), tuple(circles)


def cover_for(areas: Iterable[Area]) -> Cover:
    """Every cell at CELL_RESOLUTION that intersects a polygon or circle of `areas`."""
    return cover_of_shapes(*distinct_shapes(areas))


@functools.lru_cache(maxsize=128)
def cover_of_shapes(polygons: tuple[Polygon, ...], circles: tuple[Circle, ...]) -> Cover:
    """Cached: areas recur (the probes' area every few seconds, an Update or Cancel
    repeating its alert's area)."""
    tally.computed += 1
    cells: set[str] = set()
    for polygon in polygons:
        cells.update(_ring_cells(polygon))
    for circle in circles:
        cells.update(_ring_cells(_circle_ring(circle)))
    return Cover.of(cells)


def _ring_cells(ring: Sequence[LatLon]) -> set[str]:
    """Cells that overlap the ring, plus the cells of its vertices (for degenerate rings)."""
    points = list(ring)
    if len(points) > 1 and points[0] == points[-1]:
        points.pop()
    cells = {cell_for_point(lat, lon) for lat, lon in points}
    if len(points) >= 3:
        try:
            shape = h3.LatLngPoly(_outline(points))
            found = h3.h3shape_to_cells_experimental(shape, CELL_RESOLUTION, contain="overlap")
        except (h3.H3BaseException, ValueError) as exc:
            log.warning("polygon not covered", extra={"points": len(points), "error": str(exc)})
        else:
            cells.update(str(c) for c in found)
    return cells


def _outline(points: list[LatLon]) -> list[LatLon]:
    """The ring itself, or for a long ring that does not cross the antimeridian a simplified
    outline that encloses it (see _SIMPLIFY_ABOVE)."""
    if len(points) <= _SIMPLIFY_ABOVE or any(abs(b[1] - a[1]) > 180.0 for a, b in zip(points, points[1:])):
        return points
    shape = ShapelyPolygon([(lon, lat) for lat, lon in points])
    wider = shape.buffer(2 * _OUTLINE_TOLERANCE_DEG).simplify(_OUTLINE_TOLERANCE_DEG)
    if not isinstance(wider, ShapelyPolygon) or wider.is_empty:
        return points
    return [(lat, lon) for lon, lat in wider.exterior.coords[:-1]]


def _circle_ring(circle: Circle) -> list[LatLon]:
    """A polygon around the circle (vertices on a geodesic circle just outside it)."""
    radius_km = max(circle.radius_km, 0.0) * _CIRCLE_MARGIN
    return [
        _destination(circle.lat, circle.lon, 360.0 * i / _CIRCLE_VERTICES, radius_km)
        for i in range(_CIRCLE_VERTICES)
    ]


def _destination(lat: float, lon: float, bearing_deg: float, distance_km: float) -> LatLon:
    """The point `distance_km` from (lat, lon) along `bearing_deg`, on a sphere."""
    phi1, lam1 = math.radians(lat), math.radians(lon)
    theta, delta = math.radians(bearing_deg), distance_km / _EARTH_RADIUS_KM
    sin_phi2 = math.sin(phi1) * math.cos(delta) + math.cos(phi1) * math.sin(delta) * math.cos(theta)
    phi2 = math.asin(max(-1.0, min(1.0, sin_phi2)))
    y = math.sin(theta) * math.sin(delta) * math.cos(phi1)
    x = math.cos(delta) - math.sin(phi1) * sin_phi2
    lam2 = lam1 + math.atan2(y, x)
    lon2 = (math.degrees(lam2) + 540.0) % 360.0 - 180.0
    return (math.degrees(phi2), lon2)


def distance_km(a: LatLon, b: LatLon) -> float:
    """The great-circle distance between two (lat, lon) points."""
    phi1, phi2 = math.radians(a[0]), math.radians(b[0])
    dphi, dlam = phi2 - phi1, math.radians(b[1] - a[1])
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlam / 2) ** 2
    return 2 * _EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def covers_point(areas: Iterable[Area], lat: float, lon: float) -> bool:
    """Whether (lat, lon) lies in a polygon or circle of `areas` (boundary included)."""
    for area in areas:
        for circle in area.circles:
            if distance_km((circle.lat, circle.lon), (lat, lon)) <= circle.radius_km:
                return True
        for polygon in area.polygons:
            if _polygon_covers(polygon, lat, lon):
                return True
    return False


def _polygon_covers(ring: Polygon, lat: float, lon: float) -> bool:
    """Planar lat/lng point-in-polygon, as H3 draws polygons, antimeridian aware."""
    planar = _planar(ring)
    if planar is None:
        return False
    shape, crosses = planar
    x = _unwrap(lon) if crosses else lon
    return bool(shapely.covers(shape, shapely.Point(x, lat)))


@functools.lru_cache(maxsize=256)
def _planar(ring: Polygon) -> tuple[ShapelyPolygon, bool] | None:
    """The ring as a prepared shapely polygon in (lon, lat), and whether it was unwrapped.

    Cached: a client checks the same alert's rings for each of its places, and again on
    replays; a région's outline has thousands of points.
    """
    xy, crosses = _planar_xy(ring)
    if len(xy) < 3:
        return None
    shape = ShapelyPolygon(xy)
    if not shape.is_valid:
        # A ring that touches itself (accepted: see self_crossing), or a crossing one that an
        # older node let through: keep its area rather than show nothing.
        shape = shapely.make_valid(shape)
    shapely.prepare(shape)
    return shape, crosses


def _planar_xy(ring: Sequence[LatLon]) -> tuple[list[tuple[float, float]], bool]:
    """The ring as (lon, lat) points, unwrapped to [0, 360) when an edge crosses the
    antimeridian, and whether it was."""
    crosses = any(abs(b[1] - a[1]) > 180.0 for a, b in zip(ring, ring[1:]))
    return [(_unwrap(p_lon) if crosses else p_lon, p_lat) for p_lat, p_lon in ring], crosses


@dataclass(frozen=True, slots=True, kw_only=True)
class Crossing:
    """Where a ring crosses itself: edge `first` (from point `first` to point `first + 1`)
    and the later edge `second`, at `at` (lat, lon)."""

    first: int
    second: int
    at: LatLon


def self_crossing(ring: Polygon) -> Crossing | None:
    """The first place where two edges of the ring cross, or None.

    A crossing is two edges whose interiors meet at one point inside both (a bow tie). A
    ring that only touches itself (a vertex visited twice, a vertex on another edge, an edge
    run back along itself) is not crossing: the area it bounds is still clear (its lobes),
    and the cover and the device's check both take every lobe (see _planar). Plane
    geometry in (lon, lat), as H3 and the device's check draw the ring, after unwrapping
    a ring across the antimeridian.

    Costs O(n log n) in C, never a Python loop per point: GEOS's validity check first (a
    simple ring ends there); else the pairs of edges whose boxes meet (an R-tree), kept when
    each edge's ends are not strictly on one side of the other (numpy, with a margin for
    rounding), and GEOS's exact `crosses` decides on those few.

    Raises:
        TooTangled: a degenerate ring whose edges run over one another by the thousand
            (its pairs of meeting edges are bounded before they are built).
    """
    xy, crosses = _planar_xy(ring)
    if len(xy) < 4 or xy[0] != xy[-1]:
        return None
    if ShapelyPolygon(xy).is_valid:
        return None
    points = np.asarray(xy, dtype=float)
    edges = shapely.linestrings(np.stack([points[:-1], points[1:]], axis=1))
    first, second = _meeting_edges(edges)
    a, b, c, d = points[first], points[first + 1], points[second], points[second + 1]
    straddle = _straddles(a, b, c, d) & _straddles(c, d, a, b)
    first, second = first[straddle], second[straddle]
    crossed = shapely.crosses(edges[first], edges[second])
    if not crossed.any():
        return None
    pairs = sorted(zip(first[crossed].tolist(), second[crossed].tolist()))
    i, j = pairs[0]
    x, y = shapely.get_coordinates(shapely.intersection(edges[i], edges[j]))[0]
    lon = float(x) - 360.0 if crosses and x > 180.0 else float(x)
    return Crossing(first=i, second=j, at=(float(y), lon))


class TooTangled(ValueError):
    """A ring whose edges' boxes meet far more often than any drawn outline's (thousands of
    edges run over one another: a degenerate ring); the check stopped before it cost more."""

    def __init__(self, pairs: int) -> None:
        super().__init__(f"more than {pairs} pairs of its edges meet (its edges run over one another)")
        self.pairs = pairs


# Edges queried against the R-tree at a time, and the pairs of meeting edges a ring may
# have per edge: a drawn outline has a few (its neighbours); a ring of one point repeated,
# or a zigzag along one line, has n² (50,000 points: 2.5 billion pairs, gigabytes and
# minutes), so the count is bounded before the pairs are built.
_QUERY_CHUNK = 64
_PAIRS_PER_EDGE = 16
_PAIRS_FLOOR = 10_000


def _meeting_edges(edges: Any) -> tuple[Any, Any]:
    """The pairs (i, j), i < j, of non-adjacent edges whose boxes meet.

    Raises:
        TooTangled: more than _PAIRS_PER_EDGE per edge (plus _PAIRS_FLOOR) would be built;
            memory and time stay linear in the ring's points.
    """
    count = len(edges)
    budget = _PAIRS_PER_EDGE * count + _PAIRS_FLOOR
    tree = shapely.STRtree(edges)
    firsts, seconds = [], []
    found = 0
    for start in range(0, count, _QUERY_CHUNK):
        # At most _QUERY_CHUNK x count pairs at once (a few MB at the largest alert).
        local, second = tree.query(edges[start:start + _QUERY_CHUNK])
        first = local + start
        # Each pair once, without the neighbours (they share an end, never cross).
        keep = (first < second) & (second - first != 1) & ~((first == 0) & (second == count - 1))
        found += int(keep.sum())
        if found > budget:
            raise TooTangled(budget)
        firsts.append(first[keep])
        seconds.append(second[keep])
    return np.concatenate(firsts), np.concatenate(seconds)


# Orientations within this of zero count as "on the line" for the straddle filter: far above
# the rounding of products of coordinates up to 360 (~1e-13), far below any real crossing.
_ORIENTATION_MARGIN = 1e-9


def _straddles(a: Any, b: Any, c: Any, d: Any) -> Any:
    """Per row: whether c and d are not both strictly on one side of the line a-b."""
    side_c = _orientation(a, b, c)
    side_d = _orientation(a, b, d)
    return ~(((side_c > _ORIENTATION_MARGIN) & (side_d > _ORIENTATION_MARGIN))
             | ((side_c < -_ORIENTATION_MARGIN) & (side_d < -_ORIENTATION_MARGIN)))


def _orientation(a: Any, b: Any, c: Any) -> Any:
    """Twice the signed area of each triangle (a, b, c), rows of (x, y)."""
    return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])


def _unwrap(lon: float) -> float:
    """Longitude in [0, 360), so that a ring across the antimeridian is contiguous."""
    return lon + 360.0 if lon < 0 else lon

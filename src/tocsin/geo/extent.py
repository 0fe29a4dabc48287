"""What an area's shapes would cost to cover, estimated from their coordinates alone.

Estimates are upper bounds that take microseconds: a polygon counts for its bounding box
(a self-crossing outline cannot hide its size behind a signed area of zero), a circle for
the spherical cap it draws. They are checked before any cell is computed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tocsin.cap.model import Circle, Polygon

# Mean Earth radius (IUGG); the same as geo/cells.py uses for distances.
EARTH_RADIUS_KM = 6371.0088
_KM_PER_DEGREE = math.pi * EARTH_RADIUS_KM / 180.0
EARTH_SURFACE_KM2 = 4.0 * math.pi * EARTH_RADIUS_KM**2


def circle_km2(circle: Circle) -> float:
    """The surface of the spherical cap the circle draws (at most the whole Earth)."""
    angle = min(max(circle.radius_km, 0.0) / EARTH_RADIUS_KM, math.pi)
    return 2.0 * math.pi * EARTH_RADIUS_KM**2 * (1.0 - math.cos(angle))


def polygon_km2(ring: Polygon) -> float:
    """The surface of the polygon's bounding box in lat/lng (antimeridian aware), measured
    at its latitude nearest the equator so that it never falls short."""
    if not ring:
        return 0.0
    lats = [lat for lat, _ in ring]
    lons = [lon for _, lon in ring]
    if any(abs(b[1] - a[1]) > 180.0 for a, b in zip(ring, ring[1:])):
        lons = [lon + 360.0 if lon < 0 else lon for lon in lons]  # as geo/cells.py draws it
    low, high = min(lats), max(lats)
    nearest = 0.0 if low <= 0.0 <= high else min(abs(low), abs(high))
    width_km = (max(lons) - min(lons)) * _KM_PER_DEGREE * math.cos(math.radians(nearest))
    return min((high - low) * _KM_PER_DEGREE * width_km, EARTH_SURFACE_KM2)

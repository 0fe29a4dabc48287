"""CAP polygon and circle texts: reading them, checking them, writing them (CAP 1.2 §3.2.4)."""

from __future__ import annotations

import re

from tocsin.cap.datatypes import exact_float, format_decimal
from tocsin.cap.model import Circle, Polygon
from tocsin.errors import (
    CAP_CIRCLE_INVALID,
    CAP_COORDINATE_OUT_OF_RANGE,
    CAP_POLYGON_MALFORMED,
    CAP_POLYGON_NOT_CLOSED,
    CAP_POLYGON_TOO_FEW_POINTS,
    Problem,
)

# A problem found in a shape: the catalog entry and what exactly is wrong.
Issue = tuple[Problem, str]

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)", re.ASCII)


# CAP 1.2 §3.2.4: a polygon is "a whitespace-delimited list of [WGS 84] coordinate pairs", a
# circle "a central point given as a [WGS 84] coordinate pair followed by a space character
# and a radius value in kilometers"; a pair is latitude,longitude in decimal degrees, so a
# latitude beyond +-90 or a longitude beyond +-180 is no WGS 84 point, and a radius is not
# negative. These are the checks below: CAP rules, not tocsin policy.


def _point(pair: str) -> tuple[float, float] | None:
    lat, comma, lon = pair.partition(",")
    if not comma or not _NUMBER.fullmatch(lat) or not _NUMBER.fullmatch(lon):
        return None
    return (exact_float(lat), exact_float(lon))


def _range_issues(points: Polygon) -> list[Issue]:
    return [
        (CAP_COORDINATE_OUT_OF_RANGE, f"point {index} ({lat},{lon}) lies outside -90..90, -180..180")
        for index, (lat, lon) in enumerate(points)
        if not (-90 <= lat <= 90 and -180 <= lon <= 180)
    ]


def read_polygon(text: str) -> tuple[Polygon, list[Issue]]:
    """The points of a CAP polygon ("lat,lon lat,lon ...") and every problem found in it."""
    pairs = text.split()
    points: list[tuple[float, float]] = []
    for index, pair in enumerate(pairs):
        point = _point(pair)
        if point is None:
            return (), [(CAP_POLYGON_MALFORMED, f"point {index} {pair!r} is not lat,lon in decimal degrees")]
        points.append(point)
    polygon: Polygon = tuple(points)
    issues = _range_issues(polygon)
    # CAP 1.2 §3.2.4: four or more pairs, the first and last identical.
    if len(polygon) < 4:
        issues.append((CAP_POLYGON_TOO_FEW_POINTS, f"{len(polygon)} points, at least 4 are needed"))
    if polygon and polygon[0] != polygon[-1]:
        issues.append((CAP_POLYGON_NOT_CLOSED, f"first point {pairs[0]} differs from last point {pairs[-1]}"))
    return polygon, issues


def read_circle(text: str) -> tuple[Circle | None, list[Issue]]:
    """The circle in a CAP circle text ("lat,lon radius", radius in km) and its problems."""
    parts = text.split()
    center = _point(parts[0]) if len(parts) == 2 else None
    if center is None or not _NUMBER.fullmatch(parts[1]):
        return None, [(CAP_CIRCLE_INVALID, f"{text.strip()!r} is not 'lat,lon radius'")]
    circle = Circle(lat=center[0], lon=center[1], radius_km=exact_float(parts[1]))
    issues = _range_issues((center,))
    if circle.radius_km < 0:
        issues.append((CAP_CIRCLE_INVALID, f"radius {parts[1]} km is negative"))
    return circle, issues


def format_point(lat: float, lon: float) -> str:
    """`lat,lon` in decimal degrees."""
    return f"{format_decimal(lat)},{format_decimal(lon)}"


def format_polygon(polygon: Polygon) -> str:
    """The CAP polygon text of `polygon`."""
    return " ".join(format_point(lat, lon) for lat, lon in polygon)


def format_circle(circle: Circle) -> str:
    """The CAP circle text of `circle`."""
    return f"{format_point(circle.lat, circle.lon)} {format_decimal(circle.radius_km)}"


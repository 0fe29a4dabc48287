"""The places a device follows: a name and a precise point each, kept on the device only.

The node is told the coarse cell (geo/cells.py CELL_RESOLUTION, ~36 km²) of each place and
never a point; the device then makes the final point-in-area check itself (decide.py), so
an alert reaches every device whose cell its area touches and is shown only where one of
the device's places lies inside one of its polygons or circles (docs/privacy.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tocsin.geo.cells import cell_for_point

# At most this many places per device: SAIP lets a user follow 8; each place is one cell,
# and a node registers at most max_device_cells (64 by default) per device.
MAX_PLACES = 20
# A place's name is for the person (it is shown with the alert), never sent to a node.
MAX_NAME_CHARS = 60


@dataclass(frozen=True, slots=True, kw_only=True)
class Place:
    """A point the device follows; `name` says which one an alert is for."""

    name: str
    lat: float
    lon: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lat) and math.isfinite(self.lon)
                and -90 <= self.lat <= 90 and -180 <= self.lon <= 180):
            raise ValueError(f"{self.name or 'a place'}: {self.lat},{self.lon} is not lat,lon in range")
        if len(self.name) > MAX_NAME_CHARS:
            raise ValueError(f"a place's name has at most {MAX_NAME_CHARS} characters")

    @property
    def point(self) -> tuple[float, float]:
        return (self.lat, self.lon)


def parse_place(text: str) -> Place:
    """`NAME=LAT,LON` or `LAT,LON` (then named by its coordinates).

    Raises:
        ValueError: not that form, or out of range.
    """
    name, equals, point = text.rpartition("=")
    lat_text, comma, lon_text = point.partition(",")
    try:
        lat, lon = float(lat_text), float(lon_text)
    except ValueError:
        raise ValueError(f"{text!r}: expected NAME=LAT,LON or LAT,LON") from None
    if not comma:
        raise ValueError(f"{text!r}: expected NAME=LAT,LON or LAT,LON")
    return Place(name=name.strip() if equals else point.strip(), lat=lat, lon=lon)


def as_places(given: Iterable[Place | tuple[float, float]]) -> tuple[Place, ...]:
    """Places as given, (lat, lon) pairs named by their coordinates; at most MAX_PLACES.

    Raises:
        ValueError: none, too many, or one out of range.
    """
    places = tuple(
        item if isinstance(item, Place) else Place(name=f"{item[0]},{item[1]}", lat=float(item[0]), lon=float(item[1]))
        for item in given
    )
    if not places:
        raise ValueError("a watcher needs at least one place")
    if len(places) > MAX_PLACES:
        raise ValueError(f"{len(places)} places; a device follows at most {MAX_PLACES}")
    return places


def cells_of(places: Sequence[Place]) -> tuple[str, ...]:
    """The coarse cells to register for: one per place, each once, sorted (no order that
    would tell which place was saved first)."""
    return tuple(sorted({cell_for_point(place.lat, place.lon) for place in places}))

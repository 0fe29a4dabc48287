"""Which entries a gazetteer area's feed shows: the alerts that name it, or reach into it.

An entry is in the feed of a named area (docs/areas.md) when one of its areas names it by
geocode (`valueName` = scheme, `value` = code), or when its cells (the alert's H3 cover,
resolution 6, compacted; an Update or Cancel without area has those of what it references)
overlap the area's own cover: the same coarse, conservative rule that decides which devices
an alert reaches, so a feed of 06 shows what a device in 06 may have been sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import h3

from tocsin.cap.model import Area
from tocsin.feeds.window import FeedEntry
from tocsin.geo.cells import CELL_RESOLUTION, Cover, cover_for
from tocsin.geo.gazetteer import NamedArea


@dataclass(frozen=True, slots=True, kw_only=True)
class AreaCover:
    """A named area's cover, and every ancestor of its cells (an entry cell there holds one)."""

    area: NamedArea
    cover: Cover
    ancestors: frozenset[str]

    @property
    def size(self) -> int:
        return len(self.cover.cells) + len(self.ancestors)


def area_cover(area: NamedArea) -> AreaCover:
    """The area's cover (CPU: call it off the event loop for a large area)."""
    cover = cover_for([Area(area_desc=area.name, polygons=area.polygons)])
    ancestors = {str(h3.cell_to_parent(cell, res)) for cell in cover.cells for res in range(h3.get_resolution(cell) + 1)}
    return AreaCover(area=area, cover=cover, ancestors=frozenset(ancestors))


def overlaps(cells: Iterable[str], area: AreaCover) -> bool:
    """Whether compacted cells and the area's cover share ground: a cell of one is, or lies
    in, a cell of the other."""
    for cell in cells:
        if cell in area.ancestors:  # an area cell lies in this one (or is it)
            return True
        if area.cover.touches(str(h3.cell_to_center_child(cell, CELL_RESOLUTION))):  # this one lies in an area cell
            return True
    return False


def in_area(entry: FeedEntry, area: AreaCover) -> bool:
    """Whether the area's feed shows this entry."""
    named = area.area
    return (named.scheme, named.code) in entry.geocodes or overlaps(entry.cells, area)

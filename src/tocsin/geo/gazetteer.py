"""Named areas: gazetteers that turn a CAP geocode into polygons a device can check.

A gazetteer is a scheme (the CAP geocode `valueName`, such as `INSEE-DEP`) and its areas by
code. At accept, an area given by geocodes alone is resolved: the polygons of each named
area are added to it (its geocodes stay), so the CAP that devices receive and verify carries
every shape a device needs for its own point-in-area check. A polygon with holes counts as
its outer ring (CAP polygons have no holes): the area then includes the hole, which errs on
the side of reaching a device.

Every node holds the same gazetteers: the built-in ones (package data, `builtin()`) and the
imported ones mirrored from the areas bucket (docs/areas.md).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from tocsin.cap.model import Alert, Area, Polygon
from tocsin.errors import UNKNOWN_GEOCODE, Rejected
from tocsin.geo.cells import TooTangled, self_crossing

# The gazetteers tocsin ships: scheme -> (package data file, code property, name property).
BUILTIN = {
    "INSEE-DEP": ("departements-version-simplifiee.geojson", "code", "nom"),
    "INSEE-REG": ("regions-version-simplifiee.geojson", "code", "nom"),
}
BUILTIN_ATTRIBUTION = (
    "IGN ADMIN EXPRESS COG 2018 (boundaries) and INSEE Code officiel géographique 2018 (codes and "
    "names), Licence Ouverte / Open Licence (Etalab), via gregoiredavid/france-geojson"
)

# What one named area and one scheme may hold (an import past these is refused whole).
# One named area is one record of the areas bucket, so it must fit one NATS message:
# nats-server's max_payload is 1 MiB unless configured, and the bucket's max value size is
# MAX_RECORD_BYTES. A point takes at most 44 bytes as stored ("[-89.12345678901234,
# -179.1234567890123], "), so 20,000 points fit with room for the name and the brackets;
# the record's exact size is checked too (`checked`). The largest area of the full
# France files (région 53 Bretagne, 114 islands) has 11,249 points.
MAX_POLYGONS_PER_AREA = 500
MAX_POINTS_PER_AREA = 20_000
MAX_RECORD_BYTES = 1_000_000
MAX_AREAS_PER_SCHEME = 50_000
# What every node holds in memory of the imported gazetteers (about 64 bytes a point:
# 130 MB at the bound; the full France départements file is 193,161 points, 12 MB).
MAX_IMPORTED_SCHEMES = 100
MAX_IMPORTED_POINTS = 2_000_000
# A scheme is a CAP valueName and a code a CAP value, restricted to what is safe in a key
# (`key_for` encodes the '.' they may hold).
SCHEME_TEXT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
CODE_TEXT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class GazetteerInvalid(ValueError):
    """A named area that cannot be read or passes a bound; the message names it."""


def _key_part(text: str) -> str:
    """`text` with every character a NATS key may not hold, and '.', as =XX (hex)."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "_-") else f"={ord(c):02X}" for c in text)


def key_for(scheme: str, code: str) -> str:
    """The areas bucket key of one named area: "<scheme>.<code>", each part with its '.'
    written =2E, so that the one '.' left separates them ("INSEE.X"/"1" and "INSEE"/"X.1"
    never share a key) and the key is a valid NATS KV key."""
    return f"{_key_part(scheme)}.{_key_part(code)}"


def scheme_prefix(scheme: str) -> str:
    """The key prefix of every area of `scheme` in the areas bucket."""
    return f"{_key_part(scheme)}."


@dataclass(frozen=True, slots=True, kw_only=True)
class NamedArea:
    """One area of a gazetteer: its outer rings as CAP polygons ((lat, lon), closed)."""

    scheme: str
    code: str
    name: str
    polygons: tuple[Polygon, ...]

    @property
    def points(self) -> int:
        return sum(map(len, self.polygons))

    def as_json(self) -> dict[str, Any]:
        """The stored form: polygons as [[lat, lon], ...] rings, exact floats."""
        return {"scheme": self.scheme, "code": self.code, "name": self.name,
                "polygons": [[list(point) for point in ring] for ring in self.polygons]}

    @classmethod
    def from_json(cls, data: object) -> NamedArea:
        """Read a stored named area.

        Raises:
            GazetteerInvalid: not the stored form, or past a bound.
        """
        if not isinstance(data, dict):
            raise GazetteerInvalid("a named area is a JSON object")
        scheme, code, name = data.get("scheme"), data.get("code"), data.get("name")
        if not isinstance(scheme, str) or not SCHEME_TEXT.fullmatch(scheme):
            raise GazetteerInvalid(f"scheme {scheme!r:.70} is not a scheme name")
        if not isinstance(code, str) or not CODE_TEXT.fullmatch(code):
            raise GazetteerInvalid(f"{scheme}: code {code!r:.70} is not a code")
        if not isinstance(name, str) or len(name) > 200:
            raise GazetteerInvalid(f"{scheme} {code}: name must be a text of at most 200 characters")
        rings = data.get("polygons")
        if not isinstance(rings, list):
            raise GazetteerInvalid(f"{scheme} {code}: polygons must be a list")
        polygons = tuple(_ring(ring, f"{scheme} {code}: polygons[{n}]", lat_lon=True) for n, ring in enumerate(rings))
        return checked(cls(scheme=scheme, code=code, name=name, polygons=polygons))


def checked(area: NamedArea) -> NamedArea:
    """The area if it is within the bounds of one named area.

    Raises:
        GazetteerInvalid: naming the area and the bound.
    """
    if not area.polygons:
        raise GazetteerInvalid(f"{area.scheme} {area.code}: no polygon")
    if len(area.polygons) > MAX_POLYGONS_PER_AREA or area.points > MAX_POINTS_PER_AREA:
        raise GazetteerInvalid(
            f"{area.scheme} {area.code}: {len(area.polygons)} polygons and {area.points} points; "
            f"at most {MAX_POLYGONS_PER_AREA} and {MAX_POINTS_PER_AREA}"
        )
    size = len(record(area))
    if size > MAX_RECORD_BYTES:
        raise GazetteerInvalid(f"{area.scheme} {area.code}: {size} bytes as stored; at most {MAX_RECORD_BYTES}")
    for n, ring in enumerate(area.polygons):
        # Refused here, not at each alert: an alert by this code would meet 422 area.self-intersecting.
        try:
            crossing = self_crossing(ring)
        except TooTangled as exc:
            raise GazetteerInvalid(f"{area.scheme} {area.code}: polygon {n}: {exc}") from None
        if crossing is not None:
            raise GazetteerInvalid(
                f"{area.scheme} {area.code}: polygon {n} crosses itself (edges {crossing.first} and "
                f"{crossing.second}, at {crossing.at[0]:.6f},{crossing.at[1]:.6f})"
            )
    return area


def record(area: NamedArea) -> bytes:
    """The area as the bucket stores it (JSON as store/jetstream.py `KvRecords.put` writes it)."""
    return json.dumps(area.as_json()).encode()


def _number(value: object, bound: float, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -bound <= value <= bound:
        raise GazetteerInvalid(f"{where}: {value!r:.40} is not a coordinate within -{bound:g}..{bound:g}")
    return float(value)


def _ring(raw: object, where: str, *, lat_lon: bool) -> Polygon:
    """A closed ring of at least 4 points; GeoJSON gives [lon, lat], the stored form [lat, lon]."""
    if not isinstance(raw, list) or len(raw) > MAX_POINTS_PER_AREA:
        raise GazetteerInvalid(f"{where}: a ring is a list of at most {MAX_POINTS_PER_AREA} points")
    points: list[tuple[float, float]] = []
    for n, point in enumerate(raw):
        if not isinstance(point, list) or len(point) < 2:
            raise GazetteerInvalid(f"{where}[{n}]: a point is a list of two numbers")
        first, second = point[0], point[1]
        lat, lon = (first, second) if lat_lon else (second, first)
        points.append((_number(lat, 90, f"{where}[{n}]"), _number(lon, 180, f"{where}[{n}]")))
    if len(points) < 4 or points[0] != points[-1]:
        raise GazetteerInvalid(f"{where}: a ring needs at least 4 points, the last the same as the first")
    return tuple(points)


def from_geojson(document: object, *, scheme: str, code_property: str, name_property: str | None) -> list[NamedArea]:
    """The named areas of a GeoJSON FeatureCollection of Polygon and MultiPolygon features.

    Raises:
        GazetteerInvalid: naming the first feature that cannot be read, a duplicate code, or
            a bound passed; nothing is returned in part.
    """
    if not SCHEME_TEXT.fullmatch(scheme):
        raise GazetteerInvalid(f"scheme {scheme!r:.70} must be letters, digits, '_', '.', '-' (at most 64)")
    if not isinstance(document, dict) or document.get("type") != "FeatureCollection":
        raise GazetteerInvalid("the file is not a GeoJSON FeatureCollection")
    features = document.get("features")
    if not isinstance(features, list) or len(features) > MAX_AREAS_PER_SCHEME:
        raise GazetteerInvalid(f"features must be a list of at most {MAX_AREAS_PER_SCHEME}")
    areas: dict[str, NamedArea] = {}
    for n, feature in enumerate(features):
        where = f"features[{n}]"
        if not isinstance(feature, dict) or not isinstance(feature.get("properties"), dict):
            raise GazetteerInvalid(f"{where}: a feature with properties")
        properties = feature["properties"]
        code = properties.get(code_property)
        if isinstance(code, int) and not isinstance(code, bool):
            code = str(code)
        if not isinstance(code, str) or not CODE_TEXT.fullmatch(code):
            raise GazetteerInvalid(f"{where}: property {code_property!r} is {code!r:.70}, not a code")
        where = f"{where} ({scheme} {code})"
        if code in areas:
            raise GazetteerInvalid(f"{where}: code {code} appears twice")
        name = properties.get(name_property, code) if name_property else code
        if not isinstance(name, str):
            raise GazetteerInvalid(f"{where}: property {name_property!r} is not a text")
        areas[code] = checked(NamedArea(scheme=scheme, code=code, name=name[:200],
                                        polygons=_geometry(feature.get("geometry"), where)))
    return list(areas.values())


def _geometry(geometry: object, where: str) -> tuple[Polygon, ...]:
    if not isinstance(geometry, dict) or geometry.get("type") not in ("Polygon", "MultiPolygon"):
        raise GazetteerInvalid(f"{where}: the geometry must be a Polygon or MultiPolygon")
    coordinates = geometry.get("coordinates")
    polygons = [coordinates] if geometry["type"] == "Polygon" else coordinates
    if not isinstance(polygons, list) or len(polygons) > MAX_POLYGONS_PER_AREA:
        raise GazetteerInvalid(f"{where}: at most {MAX_POLYGONS_PER_AREA} polygons")
    outer: list[Polygon] = []
    for n, polygon in enumerate(polygons):
        if not isinstance(polygon, list) or not polygon:
            raise GazetteerInvalid(f"{where}: polygon {n} has no ring")
        outer.append(_ring(polygon[0], f"{where} polygon {n}", lat_lon=False))  # holes left out
    return tuple(outer)


class Gazetteer(Mapping[tuple[str, str], NamedArea]):
    """Named areas by (scheme, code): the built-in ones (given at construction) and those
    mirrored from the bucket (`put`, `remove`: gazetteer_mirror.py).

    Lookups are dict reads; each scheme's count is kept, so that `schemes()` (read at every
    accept) costs a copy of a few entries, not a pass over every area.
    """

    def __init__(self, areas: Iterable[NamedArea] = ()) -> None:
        self._areas: dict[tuple[str, str], NamedArea] = {}
        self._by_scheme: dict[str, dict[str, NamedArea]] = {}
        for area in areas:
            self.put(area)
        # What the node was built with; an import never replaces these (docs/areas.md).
        self.builtin_schemes = frozenset(self._by_scheme)

    def __getitem__(self, key: tuple[str, str]) -> NamedArea:
        return self._areas[key]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._areas)

    def __len__(self) -> int:
        return len(self._areas)

    def put(self, area: NamedArea) -> None:
        self._areas[(area.scheme, area.code)] = area
        self._by_scheme.setdefault(area.scheme, {})[area.code] = area

    def remove(self, scheme: str, code: str) -> None:
        self._areas.pop((scheme, code), None)
        codes = self._by_scheme.get(scheme)
        if codes is not None:
            codes.pop(code, None)
            if not codes:
                del self._by_scheme[scheme]

    def lookup(self, scheme: str, code: str) -> NamedArea | None:
        return self._areas.get((scheme, code))

    def schemes(self) -> dict[str, int]:
        """Each scheme held, with how many areas it has."""
        return {scheme: len(codes) for scheme, codes in sorted(self._by_scheme.items())}

    def knows(self, scheme: str) -> bool:
        return scheme in self._by_scheme

    def areas_of(self, scheme: str) -> list[NamedArea]:
        """The scheme's areas, by code."""
        return [area for _, area in sorted(self._by_scheme.get(scheme, {}).items())]

    def source(self, scheme: str) -> str:
        """"built-in" (shipped with tocsin) or "imported" (from the areas bucket)."""
        return "built-in" if scheme in self.builtin_schemes else "imported"


@functools.cache
def builtin() -> tuple[NamedArea, ...]:
    """The gazetteers tocsin ships (read once per process from the package data)."""
    areas: list[NamedArea] = []
    folder = resources.files("tocsin.geo") / "data"
    for scheme, (name, code_property, name_property) in BUILTIN.items():
        document = json.loads((folder / name).read_text(encoding="utf-8"))
        areas.extend(from_geojson(document, scheme=scheme, code_property=code_property, name_property=name_property))
    return tuple(areas)


def resolve(alert: Alert, gazetteer: Gazetteer) -> Alert:
    """The alert with each area that has geocodes but no polygon or circle given the
    polygons of its named areas (geocodes of schemes the gazetteer does not hold are kept
    and resolve nothing: policy then refuses an area left unlocatable). Idempotent: an area
    that already has shapes is left as it is.

    Raises:
        Rejected: 422 area.unknown-geocode naming the area, the scheme and the code, for a
            code the gazetteer's scheme does not have (in any area: a typo is refused).
    """
    schemes = gazetteer.schemes()
    changed = False
    infos = []
    for i, info in enumerate(alert.infos):
        areas = []
        for j, area in enumerate(info.areas):
            resolved = _resolved(area, gazetteer, schemes, f"info[{i}].area[{j}]")
            changed = changed or resolved is not area
            areas.append(resolved)
        infos.append(dataclasses.replace(info, areas=tuple(areas)))
    return dataclasses.replace(alert, infos=tuple(infos)) if changed else alert


def _resolved(area: Area, gazetteer: Gazetteer, schemes: Mapping[str, int], path: str) -> Area:
    named: list[NamedArea] = []
    for k, geocode in enumerate(area.geocodes):
        if geocode.value_name not in schemes:
            continue
        found = gazetteer.lookup(geocode.value_name, geocode.value.strip())
        if found is None:
            raise Rejected(
                UNKNOWN_GEOCODE,
                f"{path}.geocode[{k}] ({area.area_desc!r}): {geocode.value_name} has no code {geocode.value.strip()!r:.70}",
            )
        named.append(found)
    if area.polygons or area.circles or not named:
        return area
    polygons = dict.fromkeys(ring for found in named for ring in found.polygons)
    return dataclasses.replace(area, polygons=tuple(polygons))

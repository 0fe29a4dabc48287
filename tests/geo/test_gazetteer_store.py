"""Named areas as the areas bucket stores them: keys, record bounds, the fail-closed mirror."""

from __future__ import annotations

import math

import itertools
import json
import logging
import re

import pytest

from tocsin.geo.gazetteer import (
    MAX_POINTS_PER_AREA,
    MAX_RECORD_BYTES,
    Gazetteer,
    GazetteerInvalid,
    NamedArea,
    builtin,
    checked,
    from_geojson,
    key_for,
    record,
)
from tocsin.geo.gazetteer_mirror import AreasMirror

# nats-py's own rule for a key (nats/js/kv.py), with its no leading or trailing '.'.
NATS_KEY = re.compile(r"^[-/_=\.a-zA-Z0-9]+$")
SQUARE = [[7.0, 43.0], [7.1, 43.0], [7.1, 43.1], [7.0, 43.1], [7.0, 43.0]]


def _area(scheme: str = "ZONES", code: str = "a", ring: object = None) -> dict[str, object]:
    return {"scheme": scheme, "code": code, "name": code,
            "polygons": [ring if ring is not None else [[lat, lon] for lon, lat in SQUARE]]}


def test_keys_are_valid_nats_keys_and_never_shared() -> None:
    texts = ["A", "A.B", "B", "B.C", "1", "A.B.C", "x-y_z", "06", "2A"]
    keys = {}
    for scheme, code in itertools.product(texts, texts):
        key = key_for(scheme, code)
        assert NATS_KEY.fullmatch(key) and not key.startswith(".") and not key.endswith("."), key
        assert key.count(".") == 1
        assert keys.setdefault(key, (scheme, code)) == (scheme, code), key
    assert key_for("INSEE-DEP", "06") == "INSEE-DEP.06"
    assert key_for("INSEE.X", "1") != key_for("INSEE", "X.1")


def test_every_builtin_area_fits_a_record() -> None:
    sizes = [len(record(area)) for area in builtin()]
    assert len(sizes) == 96 + 13 and max(sizes) < MAX_RECORD_BYTES


def test_the_point_bound_keeps_a_record_within_one_nats_message() -> None:
    # The widest coordinates a float prints: the record of the largest allowed area fits.
    # Distinct points around a circle (a ring of one point repeated is refused as tangled).
    steps = MAX_POINTS_PER_AREA - 1
    ring = [(-45.12345678901234 + 10 * math.sin(2 * math.pi * i / steps),
             -100.1234567890123 + 10 * math.cos(2 * math.pi * i / steps)) for i in range(steps)]
    area = NamedArea(scheme="S" * 64, code="C" * 64, name="é" * 200, polygons=(tuple(ring) + (ring[0],),))
    assert len(record(area)) <= MAX_RECORD_BYTES < 1024 * 1024
    checked(area)
    too_many = NamedArea(scheme="S", code="C", name="n", polygons=(tuple(ring) + (ring[0], ring[0]),))
    with pytest.raises(GazetteerInvalid, match="S C: 1 polygons and 20001 points"):
        checked(too_many)


@pytest.mark.parametrize("feature, message", [
    ({"type": "Feature", "properties": {"nom": "x"}, "geometry": {"type": "Polygon", "coordinates": [SQUARE]}},
     r"features\[0\]: property 'code' is None"),
    ({"type": "Feature", "properties": {"code": "a"}, "geometry": {"type": "Point", "coordinates": [7, 43]}},
     r"features\[0\] \(Z a\): the geometry must be a Polygon"),
    ({"type": "Feature", "properties": {"code": "a"}, "geometry": {"type": "Polygon", "coordinates": [SQUARE[:3]]}},
     r"features\[0\] \(Z a\) polygon 0: a ring needs at least 4 points"),
    ({"type": "Feature", "properties": {"code": "a"},
      "geometry": {"type": "Polygon", "coordinates": [[[700, 43], *SQUARE[1:4], [700, 43]]]}},
     r"features\[0\] \(Z a\) polygon 0\[0\]: 43 .* -180..180|not a coordinate"),
    ({"type": "Feature", "properties": {"code": "a.b c"}, "geometry": {"type": "Polygon", "coordinates": [SQUARE]}},
     r"not a code"),
    # A bow tie ([lon, lat]): every alert by its code would be refused, so the import is.
    ({"type": "Feature", "properties": {"code": "bow"},
      "geometry": {"type": "Polygon", "coordinates": [[[5, 45], [5.1, 45.1], [5.1, 45], [5, 45.1], [5, 45]]]}},
     r"Z bow: polygon 0 crosses itself \(edges 0 and 2"),
])
def test_an_import_names_the_feature_it_cannot_read(feature: dict[str, object], message: str) -> None:
    with pytest.raises(GazetteerInvalid, match=message):
        from_geojson({"type": "FeatureCollection", "features": [feature]}, scheme="Z", code_property="code",
                     name_property="nom")


def test_a_duplicate_code_is_refused_naming_both() -> None:
    feature = {"type": "Feature", "properties": {"code": "a"}, "geometry": {"type": "Polygon", "coordinates": [SQUARE]}}
    with pytest.raises(GazetteerInvalid, match=r"features\[1\] \(Z a\): code a appears twice"):
        from_geojson({"type": "FeatureCollection", "features": [feature, feature]}, scheme="Z",
                     code_property="code", name_property=None)


HOSTILE: list[tuple[str, object]] = [
    ("ZONES.a", None),
    ("ZONES.a", []),
    ("ZONES.a", "not an area"),
    ("ZONES.a", {**_area(), "polygons": "x"}),
    ("ZONES.a", {**_area(), "polygons": []}),
    ("ZONES.a", {**_area(), "polygons": [[[1, 2], [3, 4]]]}),
    ("ZONES.a", {**_area(), "polygons": [[[91, 0], [0, 0], [0, 1], [91, 0]]]}),
    ("ZONES.a", {**_area(), "polygons": [[[True, 0], [0, 0], [0, 1], [True, 0]]]}),
    ("ZONES.a", {**_area(), "polygons": [[[0, 0]] * (MAX_POINTS_PER_AREA + 1)]}),
    ("ZONES.a", {**_area(), "name": 7}),
    ("ZONES.a", {**_area(), "name": "n" * 201}),
    ("ZONES.a", _area(code="b")),  # under another area's key
    ("ZONES.a", _area(scheme="ZONES", code="a b")),
    ("INSEE-DEP.06", _area(scheme="INSEE-DEP", code="06")),  # a built-in scheme: not replaced
]


@pytest.mark.parametrize("key, value", HOSTILE)
def test_the_mirror_skips_and_logs_a_record_it_must_not_use(key: str, value: object,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    gazetteer = Gazetteer(builtin())
    before = gazetteer.lookup("INSEE-DEP", "06")
    mirror = AreasMirror(gazetteer)
    mirror["ZONES.a"] = _area()  # a good one first: a bad record in its place removes it
    assert gazetteer.lookup("ZONES", "a") is not None
    with caplog.at_level(logging.WARNING, logger="tocsin.geo.gazetteer_mirror"):
        mirror[key] = value  # type: ignore[assignment]
    assert any(r.message == "areas mirror skipped a record" for r in caplog.records)
    if key == "ZONES.a":
        assert gazetteer.lookup("ZONES", "a") is None and "ZONES.a" not in mirror
    assert gazetteer.lookup("INSEE-DEP", "06") is before  # the built-in stays as shipped
    assert gazetteer.lookup("ZONES", "b") is None


def test_the_mirror_follows_puts_and_deletes() -> None:
    gazetteer = Gazetteer()
    mirror = AreasMirror(gazetteer)
    mirror[key_for("Z.1", "a.b")] = json.loads(json.dumps(_area("Z.1", "a.b")))
    assert gazetteer.schemes() == {"Z.1": 1} and gazetteer.source("Z.1") == "imported"
    assert list(mirror) == ["Z=2E1.a=2Eb"] and mirror["Z=2E1.a=2Eb"]["code"] == "a.b"
    mirror.pop("Z=2E1.a=2Eb", None)
    assert gazetteer.schemes() == {} and not gazetteer.knows("Z.1") and len(mirror) == 0


def test_the_mirror_holds_at_most_max_imported_points(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("tocsin.geo.gazetteer_mirror.MAX_IMPORTED_POINTS", 12)
    gazetteer = Gazetteer()
    mirror = AreasMirror(gazetteer)
    mirror["ZONES.a"] = _area("ZONES", "a")
    mirror["ZONES.b"] = _area("ZONES", "b")
    assert mirror.points == 10
    with caplog.at_level(logging.WARNING, logger="tocsin.geo.gazetteer_mirror"):
        mirror["ZONES.c"] = _area("ZONES", "c")  # 15 points: past the bound, skipped
    assert gazetteer.lookup("ZONES", "c") is None and mirror.points == 10
    assert "more than 12 points" in caplog.records[-1].error  # type: ignore[attr-defined]
    mirror["ZONES.a"] = _area("ZONES", "a")  # the same area again: replaces itself, still fits
    assert mirror.points == 10 and gazetteer.lookup("ZONES", "a") is not None
    del mirror["ZONES.b"]
    mirror["ZONES.c"] = _area("ZONES", "c")
    assert mirror.points == 10 and gazetteer.schemes() == {"ZONES": 2}

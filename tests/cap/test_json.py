"""The JSON form obeys exactly the XML rules; a JSON value of the wrong type has a path too."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.cap.capdata import CAP_DATA, minimal
from tocsin.cap.parse import parse_json, parse_xml
from tocsin.cap.render import to_json
from tocsin.errors import CapInvalid


def _base() -> dict[str, Any]:
    document = minimal(area_extra="<polygon>10,10 10,11 11,11 10,10</polygon><geocode><valueName>FIPS</valueName>"
                       "<value>1</value></geocode><altitude>10</altitude>")
    return to_json(parse_xml(document))


def _found(obj: object) -> set[tuple[str, str]]:
    with pytest.raises(CapInvalid) as caught:
        parse_json(obj)
    return {(v.problem.code, v.path) for v in caught.value.violations}


def test_json_form_uses_cap_names() -> None:
    wire = _base()
    assert wire["msgType"] == "Alert"
    area = wire["info"][0]["area"][0]
    assert area == {
        "areaDesc": "Here", "polygon": ["10.0,10.0 10.0,11.0 11.0,11.0 10.0,10.0"],
        "geocode": [{"valueName": "FIPS", "value": "1"}], "altitude": 10.0,
    }
    assert json.loads(json.dumps(wire)) == wire


def test_references_are_a_list_and_the_cap_string_is_accepted() -> None:
    path = CAP_DATA / "valid" / "us-nws-hurricane-warning-update-multipolygon.xml"
    alert = parse_xml(path.read_bytes())
    wire = to_json(alert)
    assert isinstance(wire["references"], list) and len(wire["references"]) == len(alert.references)
    assert parse_json({**wire, "references": " ".join(wire["references"])}) == alert


def _mutated(path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    wire = copy.deepcopy(_base())
    target: Any = wire
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return wire


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("identifier",), 12, ("cap.json-type", "identifier")),
        (("info",), {"event": "x"}, ("cap.json-type", "info")),
        (("info", 0, "category"), "Met", ("cap.json-type", "info[0].category")),
        (("info", 0, "category"), ["Met", 3], ("cap.json-type", "info[0].category[1]")),
        (("info", 0, "area", 0, "altitude"), "10", ("cap.json-type", "info[0].area[0].altitude")),
        (("info", 0, "area", 0, "altitude"), True, ("cap.json-type", "info[0].area[0].altitude")),
        (("info", 0, "area", 0, "geocode", 0), ["FIPS", "1"], ("cap.json-type", "info[0].area[0].geocode[0]")),
        (("addresses",), ["a", 1], ("cap.json-type", "addresses[1]")),
        (("info", 0, "urgency"), "Soon", ("cap.enum", "info[0].urgency")),
        (("info", 0, "area", 0, "polygon"), ["10,10 10,11 11,11"], ("cap.polygon-too-few-points", "info[0].area[0].polygon[0]")),
        (("info", 0, "area", 0, "nonsense"), "x", ("cap.unknown-element", "info[0].area[0].nonsense")),
        (("sent",), "2024-05-01T10:00:00Z", ("cap.datetime", "sent")),
        (("msgType",), "Cancel", ("cap.references-required", "references")),
        (("note",), "bell \x07", ("cap.invalid-character", "note")),
        (("extensions",), ["<x:Foo xmlns:x='urn:x'/>"], ("cap.unknown-element", "Foo")),
        (("extensions",), ["<!DOCTYPE a []><a/>"], ("cap.doctype-forbidden", "extensions[0]")),
    ],
)
def test_json_violation_has_a_code_and_path(path: tuple[str | int, ...], value: object, expected: tuple[str, str]) -> None:
    assert expected in _found(_mutated(path, value))


def test_missing_required_field_is_reported() -> None:
    wire = _base()
    del wire["sender"]
    assert ("cap.required", "sender") in _found(wire)


def test_null_is_the_same_as_absent() -> None:
    assert parse_json({**_base(), "note": None}) == parse_json(_base())


def test_not_an_object_is_refused() -> None:
    assert _found(["alert"]) == {("cap.json-type", "alert")}

"""The real-world fixtures in tests/data: valid ones parse and round-trip, invalid ones fail the right rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lxml import etree

from tests.cap.capdata import CAP_DATA, INVALID, VALID, codes, schema_violations, violations_of, xsd_accepts
from tocsin.cap.parse import parse_json, parse_stored, parse_xml
from tocsin.cap.render import to_json, to_xml
from tocsin.errors import CapInvalid


def test_the_fixtures_are_there() -> None:
    assert len(VALID) >= 25 and len(INVALID) >= 10


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_fixture_parses_and_round_trips_through_xml(path: Path) -> None:
    alert = parse_xml(path.read_bytes())
    rendered = to_xml(alert)
    assert rendered.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    assert parse_xml(rendered) == alert
    assert to_xml(parse_xml(rendered)) == rendered


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_a_stored_rendering_reads_back_without_the_checks_as_with_them(path: Path) -> None:
    rendered = to_xml(parse_xml(path.read_bytes()))
    assert parse_stored(rendered) == parse_xml(rendered)


# Invalid documents the model can still hold, so `parse_stored` builds them: tocsin never
# stores one, because accept runs every check (here: an Update with empty references).
BUILD_WITHOUT_CHECKS = {"ca-eccc-update-empty-references.xml"}


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_a_stored_payload_that_does_not_build_is_still_refused_with_its_rule(path: Path) -> None:
    data = path.read_bytes()
    if path.name in BUILD_WITHOUT_CHECKS:
        assert parse_stored(data).identifier
        return
    with pytest.raises(CapInvalid) as refused:
        parse_stored(data)
    assert codes(refused.value.violations) == codes(violations_of(data))


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_fixture_round_trips_through_json(path: Path) -> None:
    alert = parse_xml(path.read_bytes())
    wire = json.loads(json.dumps(to_json(alert)))
    assert parse_json(wire) == alert


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_rendered_fixture_passes_the_official_xsd(path: Path) -> None:
    assert xsd_accepts(to_xml(parse_xml(path.read_bytes())))


def test_latin1_fixture_is_read_with_its_declared_encoding() -> None:
    data = (CAP_DATA / "valid" / "us-usgs-earthquake-iso-8859-1.xml").read_bytes()
    assert b"ISO-8859-1" in data[:100].upper()
    alert = parse_xml(data)
    assert alert.infos[0].headline == "EQ 4.6 Usulut\u00e1n, Usulut\u00e1n, El Salvador - PRELIMINARY REPORT"
    assert "Usulut\u00e1n" in to_xml(alert).decode("utf-8")


def test_signature_is_kept_and_written_back() -> None:
    alert = parse_xml((CAP_DATA / "valid" / "bz-nms-small-craft-caution-signed.xml").read_bytes())
    assert len(alert.extensions) == 1
    assert alert.extensions[0].startswith('<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#">')
    root = etree.fromstring(to_xml(alert))
    assert root[-1].tag == "{http://www.w3.org/2000/09/xmldsig#}Signature"


# Why each invalid fixture is invalid: invalid/PROVENANCE.md, "Fails:".
EXPECTED = {
    "bz-nms-missing-sender.xml": ("cap.required", "sender"),
    "ca-eccc-update-empty-references.xml": ("cap.references-required", "references"),
    "cm-meteo-cameroon-missing-status.xml": ("cap.required", "status"),
    "oasis-spec-cap10-thunderstorm.xml": ("cap.wrong-namespace", "alert"),
    "se-smhi-alerts-collection-root.xml": ("cap.wrong-root", "alert"),
    "synthetic-google-missing-scope.xml": ("cap.required", "scope"),
    "synthetic-google-xxe-doctype.xml": ("cap.doctype-forbidden", "alert"),
    "us-nws-blizzard-warning-cap11.xml": ("cap.wrong-namespace", "alert"),
    "us-nws-flood-warning-cap11-empty-values.xml": ("cap.wrong-namespace", "alert"),
    "us-usgs-earthquake-cap11-signed.xml": ("cap.wrong-namespace", "alert"),
}


def test_every_invalid_fixture_has_an_expectation() -> None:
    assert {path.name for path in INVALID} == set(EXPECTED)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_fixture_is_refused_for_the_rule_it_breaks(path: Path) -> None:
    code, where = EXPECTED[path.name]
    found = {(v.problem.code, v.path) for v in violations_of(path.read_bytes())}
    assert (code, where) in found


def test_cap11_refusal_names_both_namespaces() -> None:
    [violation] = violations_of((CAP_DATA / "invalid" / "us-nws-blizzard-warning-cap11.xml").read_bytes())
    assert "urn:oasis:names:tc:emergency:cap:1.1" in violation.detail
    assert "urn:oasis:names:tc:emergency:cap:1.2" in violation.detail


@pytest.mark.parametrize("path", VALID + INVALID, ids=lambda p: p.name)
def test_schema_verdict_agrees_with_the_official_xsd(path: Path) -> None:
    data = path.read_bytes()
    if b"<!DOCTYPE" in data:
        assert codes(violations_of(data)) == {"cap.doctype-forbidden"}
        return
    assert (not schema_violations(data)) == xsd_accepts(data)

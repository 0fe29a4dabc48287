"""Hostile XML is refused fast, with a clear code, reading no file and no network."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from lxml import etree

from tests.cap.capdata import CAP, codes, minimal, violations_of
from tocsin.cap.parse import parse_xml
from tocsin.errors import CapInvalid

BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE alert [\n <!ENTITY lol "lol">\n'
    + b"".join(
        b' <!ENTITY lol%d "%s">\n' % (level, (b"&lol%d;" % (level - 1) if level > 1 else b"&lol;") * 10)
        for level in range(1, 10)
    )
    + b']>\n<alert xmlns="' + CAP.encode() + b'"><identifier>&lol9;</identifier></alert>'
)


def _external_entity(system_id: str) -> bytes:
    return (
        f'<?xml version="1.0"?>\n<!DOCTYPE alert [<!ENTITY x SYSTEM "{system_id}">]>\n'
        f'<alert xmlns="{CAP}"><identifier>&x;</identifier></alert>'
    ).encode()


@pytest.fixture()
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text("TOP-SECRET-MARKER")
    return path


@pytest.fixture()
def no_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything reaches the XML parser."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the document reached the XML parser")

    monkeypatch.setattr(etree, "fromstring", refuse)


def _refused_fast(document: bytes, *, max_bytes: int = 1_048_576) -> CapInvalid:
    started = time.perf_counter()
    with pytest.raises(CapInvalid) as caught:
        parse_xml(document, max_bytes=max_bytes)
    assert time.perf_counter() - started < 0.5
    return caught.value


@pytest.mark.usefixtures("no_parsing")
@pytest.mark.parametrize(
    "document",
    [
        BILLION_LAUGHS,
        _external_entity("file:///etc/passwd"),
        _external_entity("http://127.0.0.1:9/evil"),
        b'<?xml version="1.0"?><!DOCTYPE alert SYSTEM "http://127.0.0.1:9/cap.dtd"><alert xmlns="' + CAP.encode() + b'"/>',
        b'<!-- hi --><?pi x?>\n<!DOCTYPE alert [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p"> %p;]><alert/>',
        "\ufeff<?xml version='1.0' encoding='UTF-16'?><!DOCTYPE alert []><alert/>".encode("utf-16"),
    ],
    ids=["billion-laughs", "file-entity", "http-entity", "external-dtd", "parameter-entity", "utf16-doctype"],
)
def test_doctype_is_refused_before_parsing(document: bytes) -> None:
    refusal = _refused_fast(document)
    assert codes(refusal.violations) == {"cap.doctype-forbidden"}


def test_external_entity_file_is_never_read(secret_file: Path) -> None:
    refusal = _refused_fast(_external_entity(secret_file.as_uri()))
    assert codes(refusal.violations) == {"cap.doctype-forbidden"}
    assert "TOP-SECRET-MARKER" not in str(refusal.violations)


def test_doctype_hidden_behind_a_long_prolog_is_still_refused(secret_file: Path) -> None:
    padding = b"<!--" + b"x" * 70_000 + b"-->"
    document = padding + _external_entity(secret_file.as_uri()).split(b"?>", 1)[1]
    refusal = _refused_fast(document)
    assert codes(refusal.violations) == {"cap.doctype-forbidden"}
    assert "TOP-SECRET-MARKER" not in str(refusal.violations)


@pytest.mark.usefixtures("no_parsing")
def test_oversized_input_is_refused_before_parsing() -> None:
    huge = minimal() + b" " * (50 * 1024 * 1024)
    refusal = _refused_fast(huge)
    assert codes(refusal.violations) == {"cap.too-large"}
    assert refusal.problem.status == 413


def test_limit_is_configurable() -> None:
    assert codes(_refused_fast(minimal(), max_bytes=100).violations) == {"cap.too-large"}


@pytest.mark.parametrize(
    "document",
    [b"<a>" * 100_000 + b"</a>" * 100_000, b"not xml at all", b"", b"<alert", b"<a>&undefined;</a>", b"\x00\x01"],
    ids=["deep-nesting", "text", "empty", "truncated", "undefined-entity", "binary"],
)
def test_garbage_is_refused_as_not_xml(document: bytes) -> None:
    assert codes(_refused_fast(document).violations) == {"cap.not-xml"}


def test_xinclude_is_not_processed(secret_file: Path) -> None:
    include = f'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="{secret_file.as_uri()}" parse="text"/>'
    found = violations_of(minimal(alert_extra=include))
    assert codes(found) == {"cap.unknown-element"}
    assert "TOP-SECRET-MARKER" not in str(found)

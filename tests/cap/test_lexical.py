"""Lexical types (xs:anyURI, xs:dateTime with the CAP pattern, ...) judged as libxml2 judges them."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests.cap.capdata import minimal, schema_violations, xsd_accepts
from tocsin.cap.datatypes import BadValue, format_datetime, format_decimal, format_list, read_datetime, read_list

URI_ALPHABET = "aZ09:/?#[]@!$&'()*+,;=%-._~ <>\"{}|\\^`éAF"


def _fuzzed_uris(count: int) -> list[str]:
    rng = random.Random(1202)  # fixed seed: the same strings on every run
    pieces = ["http://", "//", "a:", "%4", "%41", "[::1]", ":80", "#", "?", "/", "@", "x"]
    uris = []
    for _ in range(count):
        parts = [rng.choice(pieces) if rng.random() < 0.4 else rng.choice(URI_ALPHABET) for _ in range(rng.randint(0, 8))]
        uris.append("".join(parts))
    return uris


@pytest.mark.parametrize("batch", range(4))
def test_uri_verdict_equals_the_xsd_on_fuzzed_values(batch: int) -> None:
    disagreements = []
    for uri in _fuzzed_uris(2000)[batch * 500:(batch + 1) * 500]:
        escaped = uri.replace("&", "&amp;").replace("<", "&lt;")
        document = minimal(info_extra=f"<web>{escaped}</web>")
        if xsd_accepts(document) == bool(schema_violations(document)):
            disagreements.append(uri)
    assert not disagreements


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T10:00:00+02:00", datetime(2024, 5, 1, 8, 0, tzinfo=UTC)),
        ("2024-05-01T10:00:00-00:00", datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
        ("2024-12-31T24:00:00+00:00", datetime(2025, 1, 1, 0, 0, tzinfo=UTC)),
        (" 2024-05-01T10:00:00+02:00\n", datetime(2024, 5, 1, 8, 0, tzinfo=UTC)),
    ],
)
def test_cap_datetimes_are_read_as_aware_instants(text: str, expected: datetime) -> None:
    moment = read_datetime(text)
    assert moment == expected and moment.tzinfo is not None


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("2024-05-01T10:00:00", "cap.datetime"),
        ("2024-05-01T10:00:00Z", "cap.datetime"),
        ("2024-05-01T10:00:00.5+00:00", "cap.datetime"),
        ("2024-13-01T10:00:00+00:00", "cap.datetime-invalid"),
        ("2023-02-29T10:00:00+00:00", "cap.datetime-invalid"),
        ("2024-01-01T10:00:00+14:30", "cap.datetime-invalid"),
    ],
)
def test_bad_datetimes_are_refused_with_their_reason(text: str, code: str) -> None:
    with pytest.raises(BadValue) as caught:
        read_datetime(text)
    assert caught.value.problem.code == code


def test_datetimes_render_with_their_own_offset_never_z() -> None:
    paris = timezone(timedelta(hours=2))
    assert format_datetime(datetime(2024, 5, 1, 10, 0, tzinfo=paris)) == "2024-05-01T10:00:00+02:00"
    assert format_datetime(datetime(2024, 5, 1, 10, 0, tzinfo=UTC)) == "2024-05-01T10:00:00+00:00"
    assert format_datetime(datetime(2024, 5, 1, 10, 0, tzinfo=timezone(timedelta(hours=-5, minutes=-30)))).endswith(
        "-05:30"
    )


def test_decimals_render_without_exponent() -> None:
    assert format_decimal(1e-05) == "0.00001"
    assert format_decimal(1e20) == "100000000000000000000"
    assert format_decimal(-3.5) == "-3.5"


def test_quoted_lists_round_trip() -> None:
    items = ("a@b.org", "Two Words", "x")
    assert read_list(format_list(items)) == items
    assert read_list('  a  "b c"\td ') == ("a", "b c", "d")
    for broken in ('"open', 'a"b', '"a"b'):
        with pytest.raises(BadValue):
            read_list(broken)

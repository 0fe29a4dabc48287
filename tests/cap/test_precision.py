"""Coordinates keep their precision end to end: the decimal an issuer writes in a polygon,
circle, altitude or ceiling is the number in the CAP that devices receive and verify."""

from __future__ import annotations

import math
import random
import re
from decimal import Decimal

import pytest

from tocsin.cap.compose import simple_alert
from tocsin.cap.datatypes import ExactFloat, exact_float, format_decimal
from tocsin.cap.parse import parse_xml
from tocsin.cap.render import to_xml
from tocsin.cap.shapes import format_polygon, read_polygon

DECIMALS = [
    "0", "-0", "0.0", "-0.0", "+0", "7", "-7", "180", "-180", "90", "+45.5", "45.", ".5", "-.5",
    "43.7102", "43.71020", "007.2620", "43.1234567", "-43.12345678", "7.123456789", "1.0000001",
    "0.0000001", "-0.00000001", "179.9999999", "-179.99999999999", "89.999999999999",
    "43.123456789012345", "0.30000000000000004", "89.999999999999999", "1.00000000000000000001",
    "-0.000000000000000000000000001", "12345678901234567890.5", "100000000000000000000000",
]


def same_number(a: str, b: str) -> bool:
    return Decimal(a) == Decimal(b)


@pytest.mark.parametrize("text", DECIMALS)
def test_every_decimal_renders_back_as_the_same_number(text: str) -> None:
    number = exact_float(text)
    assert same_number(format_decimal(number), text)
    assert float(format_decimal(number)) == float(text)  # and the same double for geometry
    assert "e" not in format_decimal(number).lower()


def test_negative_zero_keeps_its_sign() -> None:
    assert format_decimal(exact_float("-0")) == "-0.0"
    assert math.copysign(1.0, exact_float("-0.000")) == -1.0


def test_only_decimals_a_double_cannot_hold_carry_their_text() -> None:
    assert type(exact_float("43.1234567")) is float
    assert type(exact_float("0.30000000000000004")) is float  # a double's shortest form
    held = exact_float("89.999999999999999")
    assert isinstance(held, ExactFloat) and held == 90.0 and format_decimal(held) == "89.999999999999999"


def test_random_decimals_of_up_to_fifteen_digits_are_plain_floats_that_round_trip() -> None:
    rng = random.Random(12)
    for _ in range(20_000):
        places = rng.randint(0, 13)
        text = f"{rng.uniform(-180, 180):.{places}f}"
        number = exact_float(text)
        assert type(number) is float and same_number(format_decimal(number), text), text


def test_random_doubles_round_trip() -> None:
    rng = random.Random(7)
    for _ in range(20_000):
        number = rng.uniform(-180, 180) * 10 ** -rng.randint(0, 12)
        assert float(format_decimal(number)) == number


POLYGON = ("43.71020000,7.26200000 -0,7.1234567 43.123456789012345,-0.0000001 "
           "89.999999999999999,7 43.71020000,7.26200000")


def numbers(text: str) -> list[Decimal]:
    return [Decimal(n) for n in re.findall(r"[+-]?[\d.]+", text)]


def test_polygon_circle_altitude_and_ceiling_of_a_cap_come_back_with_the_same_numbers() -> None:
    xml = simple_alert(identifier="P-1", sender="s@example.org", polygon=POLYGON)
    xml = xml.replace(b"</polygon>", b"</polygon><circle>-16.99999999999999999,179.12345678 1.0000000000000000001</circle>"
                      b"<altitude>1234.567890123456789</altitude><ceiling>99999.5</ceiling>")
    sent = parse_xml(xml)
    received = parse_xml(to_xml(sent))  # what devices get: the CAP rendered from the parse
    area = received.infos[0].areas[0]
    assert numbers(format_polygon(area.polygons[0])) == numbers(POLYGON)
    circle = area.circles[0]
    assert [Decimal(format_decimal(v)) for v in (circle.lat, circle.lon, circle.radius_km)] == [
        Decimal("-16.99999999999999999"), Decimal("179.12345678"), Decimal("1.0000000000000000001")]
    assert Decimal(format_decimal(area.altitude or 0)) == Decimal("1234.567890123456789")
    assert area.ceiling == 99999.5
    assert to_xml(received) == to_xml(sent)  # and again, unchanged


def test_read_polygon_keeps_every_decimal() -> None:
    polygon, issues = read_polygon(POLYGON)
    assert issues == []
    assert numbers(format_polygon(polygon)) == numbers(POLYGON)

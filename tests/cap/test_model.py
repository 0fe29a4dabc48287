"""The model's values and rendering: identity, expiry, hashing, and what cannot be written."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, replace
from datetime import UTC, datetime, timedelta

import pytest

from tests.cap.capdata import xsd_accepts
from tocsin.cap.model import (
    Alert, Area, Category, Certainty, Circle, Info, MsgType, Reference, Resource, ResponseType, Scope, Severity,
    Status, Urgency, ValuePair,
)
from tocsin.cap.parse import parse_json, parse_xml
from tocsin.cap.render import to_json, to_xml
from tocsin.errors import CapInvalid

SENT = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def _info(expires: datetime | None, **changes: object) -> Info:
    base = Info(
        categories=(Category.MET, Category.CBRNE), event="Storm", response_types=(ResponseType.NONE,),
        urgency=Urgency.IMMEDIATE, severity=Severity.SEVERE, certainty=Certainty.LIKELY, expires=expires,
        areas=(Area(area_desc="A", polygons=(((1e-05, 2.0), (1.0, 2.0), (1.0, 3.0), (1e-05, 2.0)),),
                    circles=(Circle(lat=1.0, lon=2.0, radius_km=0.5),), geocodes=(ValuePair(value_name="n", value="v"),),
                    altitude=100.0, ceiling=1e20),),
        resources=(Resource(resource_desc="map", mime_type="image/png", size=10, uri="http://x/y.png"),),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def _alert(*infos: Info, **changes: object) -> Alert:
    base = Alert(identifier="ID-1", sender="a@b.org", sent=SENT, status=Status.ACTUAL, msg_type=MsgType.ALERT,
                 scope=Scope.PUBLIC, infos=infos)
    return replace(base, **changes)  # type: ignore[arg-type]


def test_enum_values_are_the_cap_strings() -> None:
    assert (ResponseType.ALL_CLEAR.value, ResponseType.NONE.value) == ("AllClear", "None")
    assert [c.value for c in Certainty] == ["Observed", "Likely", "Possible", "Unlikely", "Unknown"]
    assert len(Category) == 12 and len(ResponseType) == 9


def test_identity_is_sender_and_identifier() -> None:
    assert _alert().identity == ("a@b.org", "ID-1")


def test_expires_is_the_latest_info_expiry() -> None:
    early, late = SENT + timedelta(hours=1), SENT + timedelta(hours=3)
    assert _alert(_info(early), _info(late)).expires == late
    assert _alert(_info(early), _info(None)).expires is None
    assert _alert().expires is None


def test_values_are_frozen_hashable_and_equal_by_value() -> None:
    one, two = _alert(_info(SENT + timedelta(hours=1))), _alert(_info(SENT + timedelta(hours=1)))
    assert one == two and hash(one) == hash(two) and len({one, two}) == 1
    with pytest.raises(FrozenInstanceError):
        one.identifier = "x"  # type: ignore[misc]
    assert _info(None).language == "en-US"


def _built() -> Alert:
    return _alert(
        _info(SENT + timedelta(hours=1)), addresses=("a@b", "Two Words"), codes=("c1",), incidents=("i-1",),
        references=(Reference(sender="a@b.org", identifier="ID-0", sent=SENT - timedelta(hours=1)),),
        msg_type=MsgType.UPDATE, note="n & <m>",
    )


def test_built_alert_renders_and_round_trips() -> None:
    alert = _built()
    rendered = to_xml(alert)
    assert b"2024-05-01T10:00:00+00:00" in rendered and b"0.00001,2.0" in rendered
    assert parse_xml(rendered) == alert
    assert parse_json(to_json(alert)) == alert
    assert to_xml(alert) == rendered


def test_built_alert_renders_what_the_xsd_accepts() -> None:
    assert xsd_accepts(to_xml(_built()))


@pytest.mark.parametrize(
    ("alert", "code", "path"),
    [
        (_alert(sent=datetime(2024, 5, 1, 10, 0)), "cap.datetime", "sent"),
        (_alert(sent=SENT.replace(microsecond=5)), "cap.datetime", "sent"),
        (_alert(_info(datetime(2024, 5, 1, 12, 0))), "cap.datetime", "info[0].expires"),
        (_alert(note="\x00"), "cap.invalid-character", "note"),
        (_alert(extensions=("<x xmlns='urn:other'/>",)), "cap.unknown-element", "x"),
    ],
)
def test_alert_that_cannot_be_valid_cap_is_not_rendered(alert: Alert, code: str, path: str) -> None:
    with pytest.raises(CapInvalid) as caught:
        to_xml(alert)
    assert (code, path) in {(v.problem.code, v.path) for v in caught.value.violations}

"""A device tells a relayed alert from its own authorities' ones: the mark in the signed
CAP, read by the client, shown on the watcher's line and in its JSON."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.samples import alert_xml
from tocsin.cap.parse import parse_xml, parse_stored
from tocsin.cap.render import to_xml
from tocsin.client.display import make_display, terminal_line
from tocsin.sources.model import Source
from tocsin.sources.relay import mark, relayed_from

WEATHER = Source(name="weather", url="https://alerts.weather.example/feed.atom")


def _shown(cap: bytes):  # type: ignore[no-untyped-def]
    alert = parse_stored(cap)
    return make_display(alert, alert.infos[0], alert_id="a", seq=1, node="http://n", now=datetime.now(UTC))


def test_a_relayed_alert_is_shown_as_coming_from_its_source() -> None:
    relayed = to_xml(mark(parse_xml(alert_xml(identifier="R-1")), WEATHER))
    assert b"<code>tocsin-relayed:weather</code>" in relayed
    shown = _shown(relayed)
    assert "[relayed from weather: prefecture-75@interieur.gouv.fr R-1," in terminal_line(shown)
    assert shown.as_json()["relayed_from"] == "weather"


def test_an_alert_of_this_deployment_says_nothing_of_the_kind() -> None:
    shown = _shown(alert_xml(identifier="H-1"))
    assert "relayed" not in terminal_line(shown) and shown.as_json()["relayed_from"] is None


def test_a_source_cannot_pose_as_another_source() -> None:
    posing = mark(parse_xml(alert_xml(identifier="F-1")), Source(name="other", url="http://o.example/f"))
    assert relayed_from(posing) == "other"
    again = mark(posing, WEATHER)  # what "other" claimed is dropped; the relaying source's name is put
    assert again.codes.count("tocsin-relayed:weather") == 1 and relayed_from(again) == "weather"
    assert "tocsin-relayed:other" not in again.codes

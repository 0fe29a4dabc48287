"""The places a device follows: parsed, bounded, turned into coarse cells only, and each
alert checked against them precisely and shown once however many of them it holds."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tocsin.cap.model import Area, Circle, MsgType, Reference
from tocsin.client.decide import Kind, Subscription, Verdict, decide
from tocsin.client.display import make_display, terminal_line
from tocsin.client.places import MAX_PLACES, Place, as_places, cells_of, parse_place
from tocsin.client.state import Shown, Standing
from tocsin.client.watch import Watcher
from tocsin.geo.cells import cell_for_point
from tocsin.settings import Settings

from tests.samples import EIGHT_PLACES as EIGHT

from .cap_samples import NOW, alert, info


def test_parse_place_forms() -> None:
    assert parse_place("Nice=43.70,7.27") == Place(name="Nice", lat=43.70, lon=7.27)
    assert parse_place(" Gare = de Lyon=48.8443,2.3744") == Place(name="Gare = de Lyon", lat=48.8443, lon=2.3744)
    assert parse_place("45.76,4.83") == Place(name="45.76,4.83", lat=45.76, lon=4.83)
    for bad in ("Nice", "Nice=43.7", "Nice=91,7", "Nice=43,181", "Nice=nan,7", "Nice=43,inf", "=,"):
        with pytest.raises(ValueError):
            parse_place(bad)
    with pytest.raises(ValueError):
        Place(name="x" * 61, lat=0, lon=0)


def test_places_are_bounded() -> None:
    assert len(as_places([(45.0, 5.0)] * MAX_PLACES)) == MAX_PLACES
    with pytest.raises(ValueError, match=f"at most {MAX_PLACES}"):
        as_places([(45.0, 5.0)] * (MAX_PLACES + 1))
    with pytest.raises(ValueError):
        as_places([])
    with pytest.raises(ValueError):
        Watcher(["http://a"], [(45.0, 5.0)] * (MAX_PLACES + 1), trust_on_first_use=True)


def test_the_cells_of_every_place_fit_one_registration() -> None:
    cells = cells_of(EIGHT)
    assert cells == tuple(sorted({cell_for_point(p.lat, p.lon) for p in EIGHT}))
    assert len(cells) == 7  # École and Parents share a cell: asked for once
    many = as_places([(41.0 + 0.5 * n, -4.0 + 0.6 * n) for n in range(MAX_PLACES)])
    assert len(cells_of(many)) == MAX_PLACES <= Settings().max_device_cells


def test_the_watcher_keeps_points_on_the_device_and_registers_cells() -> None:
    watcher = Watcher(["http://a"], EIGHT, trust_on_first_use=True)
    assert watcher.cells == cells_of(EIGHT)
    assert watcher.subscription.names == tuple(p.name for p in EIGHT)


SUBSCRIPTION = Subscription(places=tuple(p.point for p in EIGHT), names=tuple(p.name for p in EIGHT))


@pytest.mark.parametrize("place", EIGHT, ids=lambda p: p.name)
def test_an_alert_for_any_of_eight_places_is_shown_naming_it(place: Place) -> None:
    value = alert(replace(info(), areas=(Area(area_desc=place.name, circles=(Circle(lat=place.lat, lon=place.lon, radius_km=0.5),)),)))
    decision = decide(value, SUBSCRIPTION, {}, NOW)
    assert decision.is_shown and place.name in decision.places


def test_an_alert_over_several_places_is_one_decision_naming_them_all() -> None:
    lyon = Area(area_desc="Lyon", circles=(Circle(lat=45.76, lon=4.834, radius_km=3),))
    nice = Area(area_desc="Nice", polygons=(((43.6, 7.1), (43.6, 7.4), (43.8, 7.4), (43.8, 7.1), (43.6, 7.1)),))
    value = alert(replace(info(), areas=(lyon, nice)))
    decision = decide(value, SUBSCRIPTION, {}, NOW)
    assert decision.is_shown and decision.places == ("Parents", "École", "Nice")
    shown = {value.identity: Shown(expires=NOW.replace(year=2026), standing=Standing.CURRENT, fingerprint=decision.fingerprint, sent=value.sent)}
    # Received again (another node, a replay): never shown twice.
    assert decide(value, SUBSCRIPTION, shown, NOW).verdict is Verdict.DUPLICATE
    # Its Update is shown once, as an update of the one display.
    update = replace(value, identifier="A-2", msg_type=MsgType.UPDATE,
                     references=(Reference(sender=value.sender, identifier=value.identifier, sent=value.sent),))
    decided = decide(update, SUBSCRIPTION, shown, NOW)
    assert (decided.kind, decided.replaces, decided.places) == (Kind.UPDATE, (value.identity,), ("Parents", "École", "Nice"))
    shown[update.identity] = Shown(expires=NOW.replace(year=2026), standing=Standing.CURRENT, sent=update.sent)
    assert decide(update, SUBSCRIPTION, shown, NOW).verdict is Verdict.DUPLICATE


def test_an_alert_near_but_outside_every_place_is_not_shown() -> None:
    # Within the cell of Nice (the device receives it) but 2 km east of it.
    value = alert(replace(info(), areas=(Area(area_desc="Est", circles=(Circle(lat=43.7102, lon=7.2870, radius_km=0.5),)),)))
    assert decide(value, SUBSCRIPTION, {}, NOW).verdict is Verdict.OUT_OF_AREA


def test_the_display_names_the_places_it_is_for() -> None:
    value = alert()
    decision = decide(value, Subscription(places=((48.8566, 2.3522), (48.86, 2.35)), names=("Maison", "Bureau")), {}, NOW)
    shown = make_display(value, decision.info, alert_id="al_1", seq=1, node="http://a", now=NOW, places=decision.places)
    assert shown.as_json()["places"] == ["Maison", "Bureau"]
    assert "(for Maison, Bureau) [" in terminal_line(shown)

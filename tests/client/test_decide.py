"""Which alerts a device shows, and in which language."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from tocsin.audience import DEFAULT_LIFETIME
from tocsin.cap.model import Area, MsgType, Reference, ValuePair
from tocsin.client.decide import Subscription, Verdict, decide, pick_info

from .cap_samples import LYON, LYON_BOX, NOW, PARIS, alert, info

PARISIAN = Subscription(places=(PARIS,), languages=("fr", "en"))


def test_alert_in_area_is_shown_in_preferred_language() -> None:
    decision = decide(alert(info("en-US", headline="Flood"), info("fr-FR")), PARISIAN, {}, NOW)
    assert decision.is_shown
    assert decision.info is not None and decision.info.language == "fr-FR"


def test_alert_elsewhere_is_not_shown() -> None:
    assert decide(alert(), Subscription(places=(LYON,)), {}, NOW).verdict is Verdict.OUT_OF_AREA


def test_any_place_in_area_is_enough() -> None:
    audience = Subscription(places=(LYON, PARIS))
    assert decide(alert(), audience, {}, NOW).is_shown


def test_info_for_another_area_is_not_picked() -> None:
    value = alert(info("fr-FR", box=LYON_BOX, headline="Lyon"), info("en-US", headline="Paris"))
    decision = decide(value, PARISIAN, {}, NOW)
    assert decision.info is not None and decision.info.headline == "Paris"


def test_geocode_only_area_is_not_shown() -> None:
    only_codes = replace(info(), areas=(Area(area_desc="x", geocodes=(ValuePair(value_name="a", value="b"),)),))
    assert decide(alert(only_codes), PARISIAN, {}, NOW).verdict is Verdict.OUT_OF_AREA


def test_expired_alert_is_never_shown_even_if_received_late() -> None:
    late = alert(info(expires=NOW - timedelta(seconds=1)))
    assert decide(late, PARISIAN, {}, NOW).verdict is Verdict.EXPIRED
    assert decide(alert(info(expires=NOW)), PARISIAN, {}, NOW).verdict is Verdict.EXPIRED


def test_alert_without_expiry_lasts_the_default_lifetime() -> None:
    value = alert(info(expires=None), sent=NOW - DEFAULT_LIFETIME + timedelta(minutes=1))
    assert decide(value, PARISIAN, {}, NOW).is_shown
    assert decide(value, PARISIAN, {}, value.sent + DEFAULT_LIFETIME).verdict is Verdict.EXPIRED
    assert decide(value, PARISIAN, {}, NOW).is_shown
    assert decide(value, PARISIAN, {}, NOW + timedelta(minutes=2)).verdict is Verdict.EXPIRED


def test_alert_already_shown_is_not_shown_again() -> None:
    value = alert()
    seen = {value.identity: NOW + timedelta(hours=1)}
    assert decide(value, PARISIAN, seen, NOW).verdict is Verdict.DUPLICATE
    assert decide(alert(identifier="A-2"), PARISIAN, seen, NOW).is_shown


def test_cancel_without_info_is_shown_only_to_who_saw_its_target() -> None:
    target = alert()
    cancel = replace(
        alert(identifier="A-1-cancel"),
        msg_type=MsgType.CANCEL,
        infos=(),
        references=(Reference(sender=target.sender, identifier=target.identifier, sent=target.sent),),
    )
    assert decide(cancel, PARISIAN, {target.identity: NOW}, NOW).is_shown
    assert decide(cancel, PARISIAN, {}, NOW).verdict is Verdict.OUT_OF_AREA


@pytest.mark.parametrize(
    ("languages", "expected"),
    [
        (("fr",), "fr-FR"),
        (("FR-fr",), "fr-FR"),
        (("de", "en"), "en-US"),
        (("en-GB",), "en-US"),
        (("es-ES", "en-US"), "es"),
        (("de",), "en-US"),  # no match: the first info
        ((), "en-US"),
    ],
)
def test_language_choice(languages: tuple[str, ...], expected: str) -> None:
    infos = (info("en-US"), info("fr-FR"), info("es"))
    picked = pick_info(infos, languages)
    assert picked is not None and picked.language == expected


def test_exact_language_wins_over_prefix_match() -> None:
    infos = (info("fr-CA"), info("fr-FR"))
    picked = pick_info(infos, ("fr-FR",))
    assert picked is not None and picked.language == "fr-FR"

"""Which alerts a device shows, and in which language."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from tocsin.audience import DEFAULT_LIFETIME, Audience
from tocsin.cap.model import Alert, Area, Info, MsgType, Reference, Status, ValuePair
from tocsin.client.decide import COALESCE_WINDOW, Kind, Subscription, Verdict, decide, pick_info
from tocsin.client.state import Shown, Standing
from tocsin.correction import CORRECTION_PARAMETER, CORRECTION_VALUE

from .cap_samples import LYON, LYON_BOX, NOW, PARIS, PARIS_BOX, alert, info

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
    shown = {value.identity: Shown(expires=NOW + timedelta(hours=1))}
    assert decide(value, PARISIAN, shown, NOW).verdict is Verdict.DUPLICATE
    assert decide(alert(identifier="A-2"), PARISIAN, shown, NOW).is_shown


def follow_up(target: Alert, msg_type: MsgType, *infos: Info, identifier: str = "A-1-next") -> Alert:
    refs = (Reference(sender=target.sender, identifier=target.identifier, sent=target.sent),)
    return replace(alert(identifier=identifier), msg_type=msg_type, infos=infos, references=refs)


SHOWN = Shown(expires=NOW + timedelta(hours=1))
NO_AREA = replace(info(), areas=())


@pytest.mark.parametrize("infos", [(), (NO_AREA,)])
def test_cancel_without_area_is_shown_only_to_who_saw_its_target(infos: tuple[Info, ...]) -> None:
    target = alert()
    cancel = follow_up(target, MsgType.CANCEL, *infos)
    decision = decide(cancel, PARISIAN, {target.identity: SHOWN}, NOW)
    assert decision.is_shown and (decision.kind, decision.replaces) == (Kind.CANCEL, (target.identity,))
    # Judged by its references, never as out of area; and elsewhere too (it showed the target).
    assert decide(cancel, PARISIAN, {}, NOW).verdict is Verdict.UNRELATED
    assert decide(cancel, Subscription(places=(LYON,)), {target.identity: SHOWN}, NOW).is_shown


def test_cancel_of_an_alert_never_shown_is_not_shown_even_in_its_area() -> None:
    assert decide(follow_up(alert(), MsgType.CANCEL, info()), PARISIAN, {}, NOW).verdict is Verdict.UNRELATED


def test_update_replaces_a_shown_alert_wherever_the_device_is_now() -> None:
    target = alert()
    update = follow_up(target, MsgType.UPDATE, info(box=LYON_BOX, headline="moved to Lyon"))
    decision = decide(update, PARISIAN, {target.identity: SHOWN}, NOW)
    assert (decision.verdict, decision.kind, decision.replaces) == (Verdict.SHOW, Kind.UPDATE, (target.identity,))
    assert decision.info is not None and decision.info.headline == "moved to Lyon"


def test_update_of_an_alert_never_shown_is_new_in_its_own_area_only() -> None:
    update = follow_up(alert(), MsgType.UPDATE, info())
    decision = decide(update, PARISIAN, {}, NOW)
    assert (decision.verdict, decision.kind) == (Verdict.SHOW, Kind.ALERT)
    assert decide(update, Subscription(places=(LYON,)), {}, NOW).verdict is Verdict.OUT_OF_AREA
    assert decide(follow_up(alert(), MsgType.UPDATE, NO_AREA), PARISIAN, {}, NOW).verdict is Verdict.UNRELATED


def test_nothing_follows_a_cancelled_alert_and_it_never_comes_back() -> None:
    target = alert()
    cancelled = {target.identity: Shown(expires=NOW + timedelta(hours=1), standing=Standing.CANCELLED)}
    assert decide(target, PARISIAN, cancelled, NOW).verdict is Verdict.DUPLICATE
    assert decide(follow_up(target, MsgType.CANCEL), PARISIAN, cancelled, NOW).verdict is Verdict.UNRELATED
    never = {target.identity: Shown(expires=NOW + timedelta(hours=1), standing=Standing.CANCELLED, displayed=False)}
    assert decide(target, PARISIAN, never, NOW).verdict is Verdict.DUPLICATE


def test_correction_is_shown_only_where_the_original_was_shown() -> None:
    target = alert()
    marked = replace(NO_AREA, parameters=(ValuePair(value_name=CORRECTION_PARAMETER, value=CORRECTION_VALUE),))
    correction = follow_up(target, MsgType.CANCEL, marked)
    moved = Subscription(places=(LYON,))
    decision = decide(correction, moved, {target.identity: SHOWN}, NOW)
    assert (decision.verdict, decision.kind) == (Verdict.SHOW, Kind.CORRECTION)
    assert decide(correction, PARISIAN, {}, NOW).verdict is Verdict.UNRELATED


@pytest.mark.parametrize("status", [Status.EXERCISE, Status.TEST, Status.SYSTEM, Status.DRAFT])
def test_status_comes_first_for_follow_ups_too(status: Status) -> None:
    target = alert()
    cancel = replace(follow_up(target, MsgType.CANCEL), status=status)
    assert decide(cancel, PARISIAN, {target.identity: SHOWN}, NOW).verdict is Verdict.STATUS
    tests = Subscription(places=(PARIS,), audience=Audience(tests=True))
    expected = status in (Status.EXERCISE, Status.TEST)
    assert decide(cancel, tests, {target.identity: SHOWN}, NOW).is_shown is expected


def test_identical_messages_from_two_senders_are_shown_once_naming_both() -> None:
    first = alert()
    mark = decide(first, PARISIAN, {}, NOW).fingerprint
    shown = {first.identity: Shown(expires=NOW + timedelta(hours=1), fingerprint=mark, sent=first.sent)}
    other = replace(alert(identifier="B-1"), sender="prefecture-zone@example.gouv.fr")
    decision = decide(other, PARISIAN, shown, NOW)
    assert (decision.verdict, decision.kind, decision.replaces) == (Verdict.SHOW, Kind.ALSO, (first.identity,))
    # Not when sent further apart than the window, not from the same sender, not another text.
    later = replace(other, sent=first.sent + COALESCE_WINDOW + timedelta(seconds=1))
    assert decide(later, PARISIAN, shown, later.sent + timedelta(seconds=1)).kind is Kind.ALERT
    assert decide(alert(identifier="A-2"), PARISIAN, shown, NOW).kind is Kind.ALERT
    reworded = replace(other, infos=(info(headline="Crue majeure"),))
    assert decide(reworded, PARISIAN, shown, NOW).kind is Kind.ALERT
    elsewhere = replace(other, infos=(info(box=PARIS_BOX[:-1] + ((48.81, 2.22),)),))
    assert decide(elsewhere, PARISIAN, shown, NOW).fingerprint != mark


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

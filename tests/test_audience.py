"""The rules node and client share: which statuses a device receives, and an alert's lifetime."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.client.cap_samples import NOW, PARIS, alert, info
from tocsin.audience import DEFAULT_LIFETIME, DEFAULT_LIFETIME_S, Audience, expires_at
from tocsin.cap.model import Status
from tocsin.client.decide import Subscription, Verdict, decide
from tocsin.settings import Settings


@pytest.mark.parametrize(
    ("status", "tests", "canary", "receives"),
    [
        (Status.ACTUAL, False, False, True),
        (Status.TEST, False, False, False),
        (Status.TEST, True, False, True),
        (Status.EXERCISE, False, False, False),
        (Status.EXERCISE, True, False, True),
        (Status.SYSTEM, True, False, False),
        (Status.SYSTEM, False, True, True),
        (Status.DRAFT, True, True, False),
    ],
)
def test_status_rules_are_the_same_for_node_and_client(
    status: Status, tests: bool, canary: bool, receives: bool
) -> None:
    audience = Audience(tests=tests, canary=canary)
    # The node judges the event's status string; the client the parsed Status.
    assert audience.receives(status.value) is receives
    assert audience.receives(status) is receives
    shown = decide(alert(status=status), Subscription(places=(PARIS,), audience=audience), {}, NOW).verdict
    assert shown is (Verdict.SHOW if receives else Verdict.STATUS)


def test_an_unknown_status_is_received_by_nobody() -> None:
    assert not Audience(tests=True, canary=True).receives("Rumour")


def test_an_alert_lasts_until_its_latest_expiry() -> None:
    later = NOW + timedelta(hours=5)
    assert expires_at(alert(info(expires=NOW + timedelta(hours=1)), info(expires=later))) == later


def test_without_expiry_an_alert_lasts_the_default_lifetime_after_it_was_sent() -> None:
    # One info without <expires> is enough: that info never says when it ends.
    value = alert(info(expires=None), info(expires=NOW + timedelta(hours=1)))
    assert expires_at(value) == value.sent + DEFAULT_LIFETIME
    assert expires_at(value, timedelta(minutes=5)) == value.sent + timedelta(minutes=5)


def test_the_node_default_lifetime_is_the_client_one() -> None:
    assert Settings().default_lifetime_s == DEFAULT_LIFETIME_S == DEFAULT_LIFETIME.total_seconds()

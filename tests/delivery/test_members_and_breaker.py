"""DeviceIndex.members, the backoff and the circuit breaker, on their own."""

from __future__ import annotations

from datetime import UTC, datetime

from tocsin.api.device_index import DeviceIndex
from tocsin.api.device_records import record_json
from tocsin.delivery.dispatcher import Breaker, backoff_s
from tocsin.geo.cells import Cover, cell_for_point
from tocsin.settings import Settings

from tests.samples import IN_LYON, IN_PARIS

PARIS, LYON = cell_for_point(*IN_PARIS), cell_for_point(*IN_LYON)


def _index() -> DeviceIndex:
    index = DeviceIndex()
    now = datetime.now(UTC)
    for n, (cell, channel, tests) in enumerate([(PARIS, "fcm", False), (PARIS, "webpush", False), (PARIS, "live", False),
                                                (PARIS, "fcm", True), (LYON, "fcm", False)]):
        record = record_json(cells=[cell], languages=[], tests=tests, canary=False, secret_sha256="0" * 64,
                             created=now, renewed=now)
        index[f"dev_{n:024x}"] = {**record, "channel": channel} if channel != "live" else record
    return index


def test_members_are_the_covered_devices_of_the_asked_channels_whose_audience_receives_the_status() -> None:
    index = _index()
    paris = Cover(cells=frozenset({PARIS}))
    assert index.members(paris, "Actual", ("fcm",)) == [(f"dev_{0:024x}", "fcm"), (f"dev_{3:024x}", "fcm")]
    assert index.members(paris, "Test", ("fcm", "webpush")) == [(f"dev_{3:024x}", "fcm")]
    assert sorted(index.members(paris, "Actual", ("fcm", "webpush"))) == [
        (f"dev_{0:024x}", "fcm"), (f"dev_{1:024x}", "webpush"), (f"dev_{3:024x}", "fcm")]
    assert index.members(paris, "Actual", ("apns",)) == []
    # Everywhere (a correction): every push device of those channels, Lyon's too.
    assert len(index.members(None, "Actual", ("fcm",))) == 3
    del index[f"dev_{0:024x}"]
    assert index.members(paris, "Actual", ("fcm",)) == [(f"dev_{3:024x}", "fcm")]


def test_backoff_is_full_jitter_capped_and_never_below_retry_after() -> None:
    settings = Settings(delivery_backoff_base_s=1.0, delivery_backoff_max_s=10.0)
    assert backoff_s(3, settings, uniform=lambda low, high: high) == 8.0
    assert backoff_s(30, settings, uniform=lambda low, high: high) == 10.0
    assert backoff_s(1, settings, uniform=lambda low, high: low) == 0.0
    assert backoff_s(1, settings, 7.0, uniform=lambda low, high: high) == 7.0


def test_the_breaker_opens_after_failures_half_opens_for_one_trial_and_closes() -> None:
    now = [0.0]
    breaker = Breaker(3, 10.0, clock=lambda: now[0])
    for _ in range(2):
        breaker.record("gw", failed=True)
    assert breaker.wait_s("gw") == 0.0
    breaker.record("gw", failed=True)
    assert breaker.wait_s("gw") == 10.0 and breaker.wait_s("other") == 0.0
    now[0] = 10.0
    assert breaker.wait_s("gw") == 0.0  # the trial
    assert breaker.wait_s("gw") > 0  # no second one while it is out
    breaker.record("gw", failed=True)  # the trial failed: open again
    assert breaker.wait_s("gw") == 10.0
    now[0] = 20.0
    assert breaker.wait_s("gw") == 0.0
    breaker.record("gw", failed=False)
    assert not breaker.is_open("gw") and breaker.wait_s("gw") == 0.0

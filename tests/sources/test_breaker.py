"""Backoff with jitter and the circuit breaker, as rules of the status record."""

from __future__ import annotations

from tocsin.sources.breaker import FAILING, OK, OPEN, Backoff, failed, is_due, succeeded

BACKOFF = Backoff(base_s=30.0, max_s=600.0, breaker_errors=5, breaker_open_s=900.0)


def fail(status: dict, now: float, jitter: float = 0.5) -> dict:  # type: ignore[type-arg]
    return failed(status, now=now, at="t", interval_s=60.0, backoff=BACKOFF, jitter=lambda: jitter,
                  reason="http-500", detail="x")


def test_each_failure_in_a_row_doubles_the_wait_within_its_jitter() -> None:
    assert [BACKOFF.delay_s(n, 60.0, 0.0) for n in (1, 2, 3, 4)] == [30.0, 60.0, 120.0, 240.0]
    assert [BACKOFF.delay_s(n, 60.0, 0.999999) for n in (1, 2, 3)] == [
        BACKOFF.delay_s(n, 60.0, 0.0) * 2 - 1e-6 * BACKOFF.delay_s(n, 60.0, 0.0) for n in (1, 2, 3)]


def test_the_wait_never_passes_its_ceiling_before_the_circuit_opens() -> None:
    slow = Backoff(base_s=30.0, max_s=100.0, breaker_errors=10, breaker_open_s=900.0)
    assert slow.delay_s(8, 60.0, 0.999999) <= 100.0


def test_failures_open_the_circuit_and_a_success_closes_it() -> None:
    status: dict = {}  # type: ignore[type-arg]
    for n in range(1, 5):
        status = fail(status, now=1000.0)
        assert status["state"] == FAILING and status["consecutive_errors"] == n
    status = fail(status, now=1000.0)
    assert status["state"] == OPEN and status["next_poll_at"] == 1900.0
    assert not is_due(status, 1899.0) and is_due(status, 1900.0)
    reopened = fail(status, now=1900.0)  # the trial poll failed: open for another period
    assert reopened["state"] == OPEN and reopened["next_poll_at"] == 2800.0
    closed = succeeded(status, now=1900.0, at="t", interval_s=60.0)
    assert closed["state"] == OK and closed["consecutive_errors"] == 0 and closed["next_poll_at"] == 1960.0
    assert closed["last_error"]["reason"] == "http-500"  # kept: when it last failed and why


def test_a_source_never_polled_is_due() -> None:
    assert is_due(None, 0.0) and is_due({}, 0.0) and is_due({"next_poll_at": "garbage"}, 0.0)

"""A source's health over time: exponential backoff with jitter, and a circuit breaker.

Pure functions of the source's status record (sources/poller.py writes it to the status
bucket after every poll), so every node applies the same rule to the same record:

- a success closes the circuit: state `ok`, errors reset, next poll one interval later;
- a failure counts: state `failing`, next poll after `d/2 + jitter × d/2` where
  d = min(backoff_max, max(interval, backoff_base) × 2^(errors-1));
- `breaker_errors` failures in a row open the circuit: state `open`, no poll for
  `breaker_open_s`; the poll after it is a trial (half-open) that closes the circuit or
  opens it for another period.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

NEW, OK, FAILING, OPEN = "new", "ok", "failing", "open"


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    base_s: float
    max_s: float
    breaker_errors: int
    breaker_open_s: float

    def delay_s(self, errors: int, interval_s: float, jitter: float) -> float:
        """How long a source waits after its `errors`-th failure in a row (jitter in [0, 1))."""
        if errors >= self.breaker_errors:
            return self.breaker_open_s
        full = min(self.max_s, max(interval_s, self.base_s) * 2 ** max(0, errors - 1))
        return float(full / 2 + jitter * full / 2)


def succeeded(status: dict[str, Any], *, now: float, at: str, interval_s: float) -> dict[str, Any]:
    """The status after a poll that read the feed (or was told it had not changed)."""
    return {**status, "state": OK, "consecutive_errors": 0, "next_poll_at": now + interval_s,
            "last_success": {"at": at}}


def failed(status: dict[str, Any], *, now: float, at: str, interval_s: float, backoff: Backoff,
           jitter: Callable[[], float], reason: str, detail: str) -> dict[str, Any]:
    """The status after a poll that failed (the feed could not be fetched or read)."""
    errors = int(status.get("consecutive_errors") or 0) + 1
    delay = backoff.delay_s(errors, interval_s, jitter())
    return {**status, "state": OPEN if errors >= backoff.breaker_errors else FAILING,
            "consecutive_errors": errors, "next_poll_at": now + delay,
            "last_error": {"at": at, "reason": reason, "detail": detail[:300]}}


def is_due(status: dict[str, Any] | None, now: float) -> bool:
    """Whether the source should be polled now (never polled: yes)."""
    if not status:
        return True
    try:
        return float(status.get("next_poll_at") or 0.0) <= now
    except (TypeError, ValueError):
        return True

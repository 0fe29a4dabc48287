"""Measured availability and latency of the last hour and day, in bounded minute buckets."""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Upper bounds of the latency buckets, in seconds; percentiles are read as a bucket bound.
LATENCY_BOUNDS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DAY_MINUTES = 24 * 60

WINDOWS_S = {"hour": 3600, "day": 86400}


@dataclass(slots=True)
class Minute:
    """What one channel's probes measured during one minute."""

    minute: int
    probes: int = 0
    delivered: int = 0
    latency_sum_s: float = 0.0
    latency_max_s: float = 0.0
    # Delivered probes per latency bucket (the last counts what is above every bound).
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_S) + 1))

    def add(self, latency_s: float | None) -> None:
        self.probes += 1
        if latency_s is None:
            return
        self.delivered += 1
        self.latency_sum_s += latency_s
        self.latency_max_s = max(self.latency_max_s, latency_s)
        self.buckets[bisect.bisect_left(LATENCY_BOUNDS_S, latency_s)] += 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    """A channel over a window: probes, delivered share and latency."""

    probes: int
    delivered: int
    p50_s: float | None
    p99_s: float | None
    max_s: float | None
    mean_s: float | None

    @property
    def availability(self) -> float | None:
        return self.delivered / self.probes if self.probes else None

    def as_json(self) -> dict[str, Any]:
        return {
            "probes": self.probes,
            "delivered": self.delivered,
            "availability": None if self.availability is None else round(self.availability, 6),
            "latency_p50_s": self.p50_s,
            "latency_p99_s": self.p99_s,
            "latency_max_s": None if self.max_s is None else round(self.max_s, 4),
            "latency_mean_s": None if self.mean_s is None else round(self.mean_s, 4),
        }


def _percentile(buckets: list[int], total: int, share: float) -> float | None:
    if total == 0:
        return None
    rank = share * total
    seen = 0
    for i, count in enumerate(buckets):
        seen += count
        if seen >= rank:
            return LATENCY_BOUNDS_S[i] if i < len(LATENCY_BOUNDS_S) else float("inf")
    return float("inf")


class History:
    """Per channel, one bucket per minute for the last day: at most 1,440 buckets each."""

    def __init__(self, *, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall
        self._minutes: dict[str, deque[Minute]] = {}

    def record(self, channel: str, latency_s: float | None) -> None:
        """One probe on one channel: its latency, or None when it was not displayed in time."""
        minute = int(self._wall() // 60)
        buckets = self._minutes.setdefault(channel, deque(maxlen=DAY_MINUTES))
        if not buckets or buckets[-1].minute != minute:
            buckets.append(Minute(minute))
        buckets[-1].add(latency_s)

    def channels(self) -> list[str]:
        return sorted(self._minutes)

    def summary(self, channel: str, window_s: float) -> Summary:
        """The channel's probes of the last `window_s` seconds (whole minutes)."""
        first = int((self._wall() - window_s) // 60) + 1
        probes = delivered = 0
        latency_sum, latency_max = 0.0, 0.0
        buckets = [0] * (len(LATENCY_BOUNDS_S) + 1)
        for m in self._minutes.get(channel, ()):
            if m.minute < first:
                continue
            probes += m.probes
            delivered += m.delivered
            latency_sum += m.latency_sum_s
            latency_max = max(latency_max, m.latency_max_s)
            buckets = [a + b for a, b in zip(buckets, m.buckets)]
        return Summary(
            probes=probes,
            delivered=delivered,
            p50_s=_percentile(buckets, delivered, 0.5),
            p99_s=_percentile(buckets, delivered, 0.99),
            max_s=latency_max if delivered else None,
            mean_s=latency_sum / delivered if delivered else None,
        )

    def as_json(self) -> dict[str, dict[str, Any]]:
        """{"hour": {channel: summary}, "day": {...}}."""
        return {
            name: {channel: self.summary(channel, seconds).as_json() for channel in self.channels()}
            for name, seconds in WINDOWS_S.items()
        }

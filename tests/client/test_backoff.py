"""Full-jitter backoff and rotation across nodes."""

from __future__ import annotations

import random

import pytest

from tocsin.client.backoff import Backoff, Rotation


def test_full_jitter_stays_within_the_exponential_ceiling() -> None:
    backoff = Backoff(base_s=0.5, cap_s=30.0, rng=random.Random(1))
    for attempt in range(12):
        ceiling = min(30.0, 0.5 * 2**attempt)
        assert backoff.ceiling(attempt) == ceiling
        delay = backoff.next_delay()
        assert 0.0 <= delay <= ceiling
    assert backoff.ceiling(10_000) == 30.0


def test_full_jitter_spreads_over_the_whole_range() -> None:
    rng = random.Random(2)
    delays = []
    for _ in range(2000):
        backoff = Backoff(rng=rng)
        for _ in range(6):
            backoff.next_delay()
        delays.append(backoff.next_delay())  # attempt 6: ceiling 30 s (0.5 * 64 = 32)
    assert min(delays) < 1.0
    assert max(delays) > 29.0
    assert 13.0 < sum(delays) / len(delays) < 17.0


def test_reset_starts_again_from_the_base() -> None:
    backoff = Backoff(rng=random.Random(3))
    for _ in range(8):
        backoff.next_delay()
    assert backoff.attempt == 8
    backoff.reset()
    assert backoff.attempt == 0
    assert backoff.next_delay() <= 0.5


def test_invalid_backoff_is_refused() -> None:
    with pytest.raises(ValueError):
        Backoff(base_s=0)
    with pytest.raises(ValueError):
        Backoff(base_s=2, cap_s=1)


def test_rotation_goes_round_the_urls_in_order() -> None:
    rotation = Rotation(["http://a/", "http://b", "http://c"])
    assert rotation.current == "http://a"
    assert [rotation.advance() for _ in range(4)] == ["http://b", "http://c", "http://a", "http://b"]


def test_rotation_needs_a_url() -> None:
    with pytest.raises(ValueError):
        Rotation(["", " "])

"""Reconnect timing: full-jitter exponential backoff, and rotation across a node list."""

from __future__ import annotations

import random
from collections.abc import Sequence


class Backoff:
    """Full-jitter exponential backoff: attempt n waits uniform(0, min(cap, base * 2**n))."""

    __slots__ = ("_attempt", "_random", "base_s", "cap_s")

    def __init__(
        self, base_s: float = 0.5, cap_s: float = 30.0, rng: random.Random | None = None
    ) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError("backoff needs 0 < base_s <= cap_s")
        self.base_s = base_s
        self.cap_s = cap_s
        self._attempt = 0
        self._random = rng or random.Random()

    @property
    def attempt(self) -> int:
        """How many delays were handed out since the last reset."""
        return self._attempt

    def ceiling(self, attempt: int) -> float:
        """The largest delay attempt `attempt` may wait."""
        # Past 2**64 the product is the cap anyway; this keeps the float finite.
        return min(self.cap_s, self.base_s * 2.0 ** min(attempt, 64))

    def next_delay(self) -> float:
        """The next delay, in seconds (AWS "full jitter")."""
        delay = self._random.uniform(0.0, self.ceiling(self._attempt))
        self._attempt += 1
        return delay

    def reset(self) -> None:
        """Start again from the base, after a connection that worked."""
        self._attempt = 0


class Rotation:
    """The node URLs, tried in turn: each failure moves to the next one."""

    __slots__ = ("_index", "urls")

    def __init__(self, urls: Sequence[str]) -> None:
        cleaned = tuple(url.rstrip("/") for url in urls if url.strip())
        if not cleaned:
            raise ValueError("at least one node URL is needed")
        self.urls = cleaned
        self._index = 0

    @property
    def current(self) -> str:
        """The URL to use now."""
        return self.urls[self._index]

    def advance(self) -> str:
        """Move to the next URL (wrapping round) and return it."""
        self._index = (self._index + 1) % len(self.urls)
        return self.current

    def move_to(self, url: str) -> str:
        """Make `url` (one of the list) the current URL, e.g. a node known to be ready."""
        self._index = self.urls.index(url.rstrip("/"))
        return self.current

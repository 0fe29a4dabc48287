"""Rate limits at the edge: token buckets by source, with a bounded table of sources.

Generic on purpose: device registration uses it (api/devices.py), and any other edge limit
by source or in all can take the same class with its own setting.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import HTTPConnection

# The key of every request whose peer address is unknown (a Unix socket, a test transport).
UNKNOWN_SOURCE = "unknown"
# One IPv6 subscriber gets a /64 (RFC 6177), so a /64 is one source, not 2^64 of them.
IPV6_SOURCE_PREFIX = 64


def source_of(conn: HTTPConnection) -> str:
    """The source a request is counted against: its IPv4 address, or its IPv6 /64."""
    client = conn.scope.get("client")
    host = client[0] if client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return UNKNOWN_SOURCE
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_SOURCE_PREFIX), strict=False))
    return str(address)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimit:
    """At most `per_min` takes a minute for each key, in bursts of up to `per_min`.

    The table holds at most `max_keys` keys; past that the least recently used one is
    forgotten (it had the longest to refill, so it is the one most likely full anyway).
    A `per_min` of 0 turns the limit off.
    """

    def __init__(self, per_min: int, *, max_keys: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_min = per_min
        self._rate_per_s = per_min / 60.0
        self._max_keys = max(1, max_keys)
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str = "") -> float:
        """Take one token for `key`: 0.0 when allowed, else the seconds until one is free."""
        if self.per_min <= 0:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(tokens=float(self.per_min), at=now)
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(float(self.per_min), bucket.tokens + (now - bucket.at) * self._rate_per_s)
            bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self._rate_per_s


class RatesByKey:
    """A RateLimit for each key at its own rate (issuer organisations, api/auth.py); the
    table holds at most `max_keys` keys, the least recently used forgotten first."""

    def __init__(self, *, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_keys = max(1, max_keys)
        self._clock = clock
        self._limits: OrderedDict[str, RateLimit] = OrderedDict()

    def take(self, key: str, per_min: int) -> float:
        """Take one for `key` at `per_min` (a changed rate starts a full bucket)."""
        limit = self._limits.get(key)
        if limit is None or limit.per_min != per_min:
            limit = self._limits[key] = RateLimit(per_min, clock=self._clock)
            if len(self._limits) > self._max_keys:
                self._limits.popitem(last=False)
        self._limits.move_to_end(key)
        return limit.take()


def retry_after(wait_s: float) -> str:
    """A Retry-After value (whole seconds, at least 1) for a wait."""
    return str(max(1, math.ceil(wait_s)))

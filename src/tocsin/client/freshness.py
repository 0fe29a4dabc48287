"""When a device leaves its node: the node's keepalives say how fresh its delivery is.

Every keepalive carries the age of the node's last probe displayed on its own canary
(docs/api.md, "Keepalives and freshness"). A device moves to another node when that age
passes the node's own limit, but only to a node that delivers: its `/readyz` answers 200,
or its readiness document says its canary is fresh (a node red for another reason, such
as a slow consumer check while a peer is cut off, still delivers). When no node delivers
(no quorum), nobody moves and nobody stampedes. A node that stops sending anything at all
(frozen, gone) is left after three keepalive intervals of silence.
The real client (`client/watch.py`) and the fault suite's simulated fleet
(`faults/fleet.py`) follow this one rule.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

KEEPALIVE = "keepalive"
READYZ_PATH = "/readyz"
# A link is dead after this many keepalive intervals without a byte.
SILENT_INTERVALS = 3
# Never call a link dead sooner than this, whatever interval a node announces.
MIN_SILENCE_S = 3.0


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Freshness:
    """What one keepalive says about its node; fields an older node leaves out are None."""

    node: str = ""
    interval_s: float | None = None  # the node's keepalive interval
    canary_age_s: float | None = None  # since its last probe was displayed on its canary
    stale_after_s: float | None = None  # the age past which the node is not delivering

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> Freshness:
        """Read a keepalive's body (SSE `data:` or the WebSocket message); junk is ignored."""
        node = payload.get("node")
        return cls(
            node=node if isinstance(node, str) else "",
            interval_s=_number(payload.get("interval_s")),
            canary_age_s=_number(payload.get("canary_age_s")),
            stale_after_s=_number(payload.get("stale_after_s")),
        )

    @property
    def is_stale(self) -> bool:
        """The node says it has not delivered its own probe for longer than its limit."""
        age, limit = self.canary_age_s, self.stale_after_s
        return age is not None and limit is not None and age > limit

    def silence_limit_s(self, default_s: float) -> float:
        """How long without a byte before the link is called dead."""
        if self.interval_s is None or self.interval_s <= 0:
            return default_s
        return max(SILENT_INTERVALS * self.interval_s, MIN_SILENCE_S)


class NodeStale(Exception):
    """The device's node is not delivering and `target` is: move there."""

    def __init__(self, url: str, target: str, freshness: Freshness) -> None:
        super().__init__(f"{url} last delivered {freshness.canary_age_s} s ago; moving to {target}")
        self.url = url
        self.target = target
        self.freshness = freshness


def _canary_is_fresh(response: httpx.Response, channel: str) -> bool:
    """A red readiness document whose canary on `channel` passes: the node delivers on the
    device's own path. Not the node's whole `canary` check: a Web Push canary late on every
    node at once (the planner's one message in flight held by a node that was cut off, until
    its ack_wait) made every node count as not delivering, and a live device stayed on a node
    cut off from its peers (F06). A node that reports no `canary:<channel>` is judged by its
    `canary`."""
    try:
        report = response.json()
    except ValueError:
        return False
    checks = report.get("checks") if isinstance(report, dict) else None
    if not isinstance(checks, dict):
        return False
    canary = checks.get(f"canary:{channel}", checks.get("canary"))
    return isinstance(canary, dict) and canary.get("ok") is True


class DeliveringNodes:
    """Which nodes deliver, by their `/readyz`, asked at most once per `ttl_s` per node.

    Shared by every device of a process (the fleet's hundreds ask once, not each), and
    bounded: one answer per known URL.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        ttl_s: float = 1.0,
        timeout_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        channel: str = "sse",
    ) -> None:
        self._http = http
        self._channel = channel  # the canary that measures the devices' path (SSE and WebSocket: the live one)
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._monotonic = monotonic
        self._answers: dict[str, tuple[float, bool]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.asked = 0

    async def is_delivering(self, url: str) -> bool:
        """Whether the node at `url` delivers: `/readyz` 200, or red with a fresh canary on
        the devices' channel."""
        lock = self._locks.setdefault(url, asyncio.Lock())
        async with lock:  # concurrent askers wait for the one request in flight
            cached = self._answers.get(url)
            if cached is not None and self._monotonic() - cached[0] < self._ttl_s:
                return cached[1]
            self.asked += 1
            try:
                response = await self._http.get(url + READYZ_PATH, timeout=self._timeout_s)
                ready = response.status_code == 200 or _canary_is_fresh(response, self._channel)
            except (httpx.HTTPError, OSError):
                ready = False
            self._answers[url] = (self._monotonic(), ready)
            return ready

    async def delivering_among(self, urls: Sequence[str]) -> list[str]:
        """Those of `urls` that deliver, in the order given (asked concurrently)."""
        answers = await asyncio.gather(*(self.is_delivering(url) for url in urls))
        return [url for url, ready in zip(urls, answers, strict=True) if ready]


async def move_target(
    freshness: Freshness, url: str, urls: Sequence[str], ready: DeliveringNodes
) -> str | None:
    """Where a device on `url` should go after this keepalive; None: stay.

    Stay while the node delivers, and stay too when no other node delivers (every node
    stale at once: moving would only shift the load).
    """
    if not freshness.is_stale:
        return None
    others = [u for u in urls if u != url]
    found = await ready.delivering_among(others)
    return found[0] if found else None

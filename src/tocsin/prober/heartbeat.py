"""The dead man's switch, node side: heartbeats to outside watchdogs, only while healthy.

A node POSTs to every configured watchdog URL each period, but only while its prober runs
and its canaries are fresh. Any silence (the prober dead, delivery broken, the process
frozen, the machine gone) is noticed by the watchdog, which knows nothing else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

log = logging.getLogger(__name__)


def heartbeat_urls(raw: str, node: str) -> list[str]:
    """Comma separated URLs; a bare base URL gets `/heartbeat/{node}` appended."""
    urls = []
    for url in (u.strip() for u in raw.split(",")):
        if not url:
            continue
        if urlsplit(url).path in ("", "/"):
            url = url.rstrip("/") + f"/heartbeat/{node}"
        urls.append(url)
    return urls


class Heartbeat:
    """Sends one heartbeat per period to each URL while `healthy()` returns a body."""

    def __init__(
        self,
        urls: list[str],
        *,
        period_s: float,
        healthy: Callable[[], dict[str, Any] | None],
        on_outcome: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        self.urls = urls
        self.period_s = period_s
        self._healthy = healthy
        self._on_outcome = on_outcome
        self.sent = 0
        self.withheld = 0
        self._last_kind: str | None = None

    async def run(self) -> None:
        if not self.urls:
            return
        timeout = max(0.2, min(5.0, self.period_s / 2))
        async with httpx.AsyncClient(timeout=timeout) as http:
            loop = asyncio.get_running_loop()
            next_at = loop.time()
            while True:
                await self.beat(http)
                next_at = max(next_at + self.period_s, loop.time())
                await asyncio.sleep(next_at - loop.time())

    async def beat(self, http: httpx.AsyncClient) -> None:
        """One period: send to every URL, or withhold while unhealthy."""
        body = self._healthy()
        if body is None:
            self.withheld += 1
            self._outcome("withheld", "heartbeat withheld: delivery is not healthy")
            return
        results = await asyncio.gather(*(self._send(http, url, body) for url in self.urls))
        self.sent += sum(results)
        self._outcome("sent" if all(results) else "failed",
                      "heartbeats sent" if all(results) else "a watchdog did not take the heartbeat")

    async def _send(self, http: httpx.AsyncClient, url: str, body: dict[str, Any]) -> bool:
        try:
            response = await http.post(url, json=body)
        except httpx.HTTPError as exc:
            log.debug("heartbeat not sent", extra={"url": url, "error": repr(exc)[:200]})
            return False
        return response.status_code < 300

    def _outcome(self, kind: str, phrase: str) -> None:
        self._on_outcome(kind)
        if kind != self._last_kind:  # log changes, not every period
            level = logging.INFO if kind == "sent" else logging.WARNING
            log.log(level, phrase, extra={"urls": len(self.urls)})
            self._last_kind = kind

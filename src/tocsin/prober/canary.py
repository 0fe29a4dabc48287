"""Canary devices: read this node's own channels through its public endpoint, like an app.

A canary is registered with `"canary": true`, so it receives System alerts (the probes)
that no real device ever gets. The SSE canary reads `/api/v1/stream` over loopback HTTP:
a channel that accepts connections but never writes shows up as probes that never arrive.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import httpx

from tocsin.secret_file import write_secret
from tocsin.client.sse import sse_events

log = logging.getLogger(__name__)

DEVICES_PATH = "/api/v1/devices"
STREAM_PATH = "/api/v1/stream"

# Seen: (alert id, monotonic time it was read, whether it came live rather than replayed).
Seen = Callable[[str, float, bool], None]


class Canary(Protocol):
    """One channel's canary: reads events and reports each alert id it sees."""

    channel: str

    @property
    def is_connected(self) -> bool: ...

    async def run(self, seen: Seen) -> None: ...

    def reconnect(self, issued: float) -> None:
        """Probes were lost, the last of them issued at `issued` (monotonic)."""
        ...


async def canary_token(
    http: httpx.AsyncClient, issuer_token: str, point: tuple[float, float], saved: Path | None
) -> str:
    """A canary device token: the saved one if the node still knows it, else a new one."""
    if saved is not None and saved.exists():
        try:
            token = str(json.loads(saved.read_text())["token"])
        except (ValueError, KeyError, OSError):
            token = ""
        if token:
            return token
    body = {"points": [{"lat": point[0], "lon": point[1]}], "canary": True}
    response = await http.post(DEVICES_PATH, json=body, headers={"Authorization": f"Bearer {issuer_token}"})
    if response.status_code != 201:
        raise httpx.HTTPStatusError(
            f"canary registration answered {response.status_code}: {response.text[:200]}",
            request=response.request, response=response,
        )
    token = str(response.json()["token"])
    if saved is not None:
        try:
            saved.parent.mkdir(parents=True, exist_ok=True)
            write_secret(saved, json.dumps({"token": token}))
        except OSError as exc:  # a full disk must not stop the prober from measuring
            log.warning("canary token not saved", extra={"error": str(exc)})
    return token


class SseCanary:
    """Reads the node's SSE stream as a canary device; reconnects forever, resumes by id."""

    channel = "sse"

    def __init__(
        self,
        http: httpx.AsyncClient,
        register: Callable[[bool], Any],
        *,
        read_timeout_s: float,
        retry_s: float = 0.5,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._register = register  # (forget_saved) -> awaitable device token
        self._read_timeout_s = read_timeout_s
        self._retry_s = retry_s
        self._monotonic = monotonic
        self._scope: asyncio.Timeout | None = None
        self._connected = False
        self._last_seq = 0
        self.connected_at: float | None = None

    @property
    def is_connected(self) -> bool:
        return self._connected

    def reconnect(self, issued: float) -> None:
        """Drop the current stream (probes stopped arriving on it) and open a new one.

        Not a stream that synced after the last lost probe was issued: it had that probe by
        replay only (issued while the canary was between streams), which says nothing of its
        own silence. Dropping it would lose the next probe in the reconnect's gap, and that
        one would drop the next stream, for as long as the gap swallows a probe each time
        (seen: a repaired channel that stayed red over 15 s)."""
        if self.connected_at is not None and self.connected_at > issued:
            return
        scope = self._scope
        if scope is not None and not scope.expired():  # rescheduling an expired scope asserts
            scope.reschedule(asyncio.get_running_loop().time())

    async def run(self, seen: Seen) -> None:
        token: str = await self._register(False)
        failures = 0
        while True:
            try:
                async with asyncio.timeout(None) as scope:
                    self._scope = scope
                    await self._read(token, seen)
            except _TokenRefused:
                token = await self._register(True)
            except (httpx.HTTPError, OSError, TimeoutError, ValueError) as exc:
                if failures == 0:
                    log.warning("canary stream lost", extra={"channel": self.channel, "error": repr(exc)[:200]})
                failures += 1
            else:
                failures = 0
            finally:
                self._scope = None
                self._connected = False
                self.connected_at = None
            await asyncio.sleep(self._retry_s)

    async def _read(self, token: str, seen: Seen) -> None:
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        if self._last_seq:
            headers["Last-Event-ID"] = str(self._last_seq)
        # Alerts before `synced` are a replay of what was missed; only those after it show
        # that the channel pushes now (a channel that delivers only on reconnect is broken).
        live = False
        timeout = httpx.Timeout(5.0, read=self._read_timeout_s)
        async with self._http.stream("GET", STREAM_PATH, headers=headers, timeout=timeout) as response:
            if response.status_code == 401:
                raise _TokenRefused()
            response.raise_for_status()
            async for event in sse_events(response.aiter_bytes()):
                now = self._monotonic()
                if event.event == "synced":
                    live = True
                    self._connected = True
                    self.connected_at = now
                elif event.event == "alert":
                    data = json.loads(event.data)
                    self._last_seq = max(self._last_seq, int(data.get("seq") or 0))  # null: an early copy
                    seen(str(data.get("id", "")), now, live)


class _TokenRefused(Exception):
    """The node no longer knows the canary's device token."""

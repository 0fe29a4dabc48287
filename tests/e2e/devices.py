"""Test devices: register over HTTP, read the SSE stream into a queue of events."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from tocsin.client.sse import SseEvent, sse_events


async def register(http: httpx.AsyncClient, lat: float, lon: float, **extra: Any) -> dict[str, Any]:
    response = await http.post("/api/v1/devices", json={"points": [{"lat": lat, "lon": lon}], **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


class SseDevice:
    """An open SSE stream whose events land in `events` as they arrive."""

    def __init__(self, base_url: str, token: str, last_event_id: int | str | None = None) -> None:
        self.base_url = base_url
        self.token = token
        self.last_event_id = last_event_id
        self.events: asyncio.Queue[SseEvent] = asyncio.Queue()
        self.status: int | None = None
        self.ended = asyncio.Event()  # the stream closed, or its connection failed

    async def next(self, event: str = "alert", timeout_s: float = 10.0) -> SseEvent:
        """The next event of this kind (others are skipped), within the deadline."""
        async with asyncio.timeout(timeout_s):
            while True:
                got = await self.events.get()
                if got.event == event:
                    return got

    async def next_alert(self, timeout_s: float = 10.0) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((await self.next("alert", timeout_s)).data)
        return data

    async def _read(self, opened: asyncio.Future[None]) -> None:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = str(self.last_event_id)
        try:
            async with httpx.AsyncClient(base_url=self.base_url, timeout=httpx.Timeout(10, read=None)) as http:
                async with http.stream("GET", "/api/v1/stream", headers=headers) as response:
                    self.status = response.status_code
                    opened.set_result(None)
                    async for event in sse_events(response.aiter_bytes()):
                        self.events.put_nowait(event)
        finally:
            self.ended.set()

    async def next_alert_or_end(self, timeout_s: float = 10.0) -> dict[str, Any] | None:
        """The next alert, or None if the stream ends first (within the deadline)."""
        alert = asyncio.ensure_future(self.next_alert(timeout_s))
        ended = asyncio.ensure_future(self.ended.wait())
        try:
            await asyncio.wait([alert, ended], timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            if alert.done():
                return alert.result()
            if ended.done():
                return None
            raise TimeoutError(f"no alert and no end of the stream within {timeout_s} s")
        finally:
            alert.cancel()
            ended.cancel()


@contextlib.asynccontextmanager
async def sse_device(base_url: str, token: str, last_event_id: int | str | None = None) -> AsyncIterator[SseDevice]:
    """Connect, wait until the server has replayed what was missed (`synced`), yield."""
    device = SseDevice(base_url, token, last_event_id)
    opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    reader = asyncio.get_running_loop().create_task(device._read(opened))
    try:
        async with asyncio.timeout(10):
            await opened
        yield device
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await reader

"""Live channels: Server-Sent Events and WebSocket, resumable by event id on any node."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from tocsin.api.auth import device_for
from tocsin.api.services import Services
from tocsin.audience import Audience
from tocsin.channels.live import (
    Connection, ConnectionDropped, Event, Protocol, keepalive_sse, keepalive_ws,
)
from tocsin.prober.canary import SseCanary
from tocsin.errors import EVENT_ID_INVALID, HTTP_VERSION, NODE_NOT_READY, TOO_MANY_STREAMS, Rejected

log = logging.getLogger(__name__)

# Tells EventSource clients to retry after 2 s (our own client adds full jitter).
PREAMBLE = b"retry: 2000\n\n"


async def resume_after(services: Services, record: dict[str, Any], raw: str | None) -> int:
    """Where this device's replay starts, from its Last-Event-ID (`N.hhhhhhhh` or `N`).

    Raises:
        Rejected: not a cursor (400 device.event-id-invalid).
    """
    # Canaries are let in: they are how this node learns that it can deliver again.
    if not services.live.accepting and not record.get("canary"):
        raise Rejected(NODE_NOT_READY, headers={"Retry-After": "2"})
    try:
        return await services.pipeline.replay.resume_after(raw)
    except ValueError:
        raise Rejected(EVENT_ID_INVALID, f"got {(raw or '')[:40]!r}") from None


def claim_stream(services: Services, device_id: str) -> None:
    """Count one more open stream for this device token; `release_stream` when it ends.

    Raises:
        Rejected: the token holds its limit of streams (429 device.too-many-streams).
    """
    limit = services.settings.max_streams_per_device
    if services.streams[device_id] >= limit:
        raise Rejected(TOO_MANY_STREAMS, f"this device token holds {limit} open streams; close one first")
    services.streams[device_id] += 1


def release_stream(services: Services, device_id: str) -> None:
    services.streams[device_id] -= 1
    if services.streams[device_id] <= 0:
        del services.streams[device_id]


def new_connection(device_id: str, record: dict[str, Any], protocol: Protocol, depth: int) -> Connection:
    return Connection(
        device_id=device_id,
        cells=frozenset(record["cells"]),
        audience=Audience(tests=bool(record.get("tests")), canary=bool(record.get("canary"))),
        protocol=protocol,
        depth=depth,
    )


# The canary whose probes take the live devices' path.
LIVE_CANARY = SseCanary.channel


def freshness(services: Services) -> dict[str, Any]:
    """What every keepalive tells a device about this node (docs/api.md, "Keepalives").

    `canary_age_s`: seconds since this node last displayed one of its own probes on its
    live canary, the path of the devices that read this (SSE; WebSocket shares it), or, with
    no live canary, on any (since its prober started, if none yet); past `stale_after_s`
    (two probe intervals, the limit `/readyz` judges by) the device moves to a node whose
    live canary is fresh (client/freshness.py). Both are left out when the node has no
    prober: then only silence moves a device.
    """
    body: dict[str, Any] = {"node": services.settings.node_name, "interval_s": services.settings.sse_keepalive_s}
    prober = services.prober
    if prober is None:
        return body
    channels = [LIVE_CANARY] if LIVE_CANARY in prober.channels else list(prober.channels)
    ages = [age for channel in channels if (age := prober.canary_age_s(channel)) is not None]
    if ages:
        age = min(ages)
    else:
        since = prober.started_at if prober.started_at is not None else services.started_monotonic
        age = time.monotonic() - since
    body["canary_age_s"] = round(age, 1)
    body["stale_after_s"] = 2 * prober.interval_s
    return body


def synced_sse(services: Services) -> bytes:
    """The `synced` event that ends a replay, as SSE (no id line: it moves no cursor)."""
    body = {"node": services.settings.node_name, "seq": services.pipeline.index.last_seq}
    return b"event: synced\ndata: " + json.dumps(body).encode() + b"\n\n"


def synced_ws(services: Services) -> str:
    """The same, as a WebSocket message."""
    body = {"type": "synced", "node": services.settings.node_name, "seq": services.pipeline.index.last_seq}
    return json.dumps(body, separators=(",", ":"))


async def stream(request: Request) -> Response:
    services: Services = request.app.state.services
    device_id, record = await device_for(request, services)
    if request.scope.get("http_version") == "1.0":
        raise Rejected(HTTP_VERSION, "HTTP/1.0 has no chunked encoding, and a stream has no length")
    after = await resume_after(services, record, request.headers.get("last-event-id") or request.query_params.get("last_event_id"))
    claim_stream(services, device_id)
    connection = new_connection(device_id, record, Protocol.SSE, services.settings.device_queue_depth)
    missed = services.pipeline.replay.attach(connection, after)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Tocsin-Node": services.settings.node_name}
    return StreamingResponse(
        _sse_body(services, connection, missed), media_type="text/event-stream", headers=headers,
        background=BackgroundTask(release_stream, services, device_id),
    )


async def _sse_body(services: Services, connection: Connection, missed: list[Event]) -> AsyncIterator[bytes]:
    try:
        yield PREAMBLE
        for event in missed:
            yield event.sse
        yield synced_sse(services)
        keepalive = services.settings.sse_keepalive_s
        while True:
            item = await connection.next(keepalive)
            yield keepalive_sse(freshness(services)) if item is None else item  # type: ignore[misc]
    except ConnectionDropped:
        pass  # counted by the registry as a dropped delivery
    finally:
        services.live.remove(connection)


async def websocket(ws: WebSocket) -> None:
    services: Services = ws.app.state.services
    try:
        device_id, record = await device_for(ws, services)
        after = await resume_after(services, record, ws.query_params.get("last_event_id"))
        claim_stream(services, device_id)
    except Rejected as exc:
        # Accept, then close with the problem code: a refused handshake would reach the
        # client as a bare 403 and it could not tell that it must register again.
        await ws.accept()
        code = {401: 4401, 429: 4429, 503: 1013}.get(exc.problem.status, 4400)  # 1013: try again later
        await ws.close(code=code, reason=exc.problem.code)
        return
    try:
        await _ws_serve(services, ws, device_id, record, after)
    finally:
        release_stream(services, device_id)


async def _ws_serve(services: Services, ws: WebSocket, device_id: str, record: dict[str, Any], after: int) -> None:
    await ws.accept()
    connection = new_connection(device_id, record, Protocol.WS, services.settings.device_queue_depth)
    missed = services.pipeline.replay.attach(connection, after)
    try:
        async with asyncio.TaskGroup() as tasks:
            sender = tasks.create_task(_ws_send(services, ws, connection, missed))
            tasks.create_task(_ws_watch_close(ws, sender))
    except* ConnectionDropped:
        pass  # counted by the registry as a dropped delivery
        with contextlib.suppress(RuntimeError, OSError):
            await ws.close(code=1013, reason="too far behind; resume by event id")
    except* (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        services.live.remove(connection)


async def _ws_send(services: Services, ws: WebSocket, connection: Connection, missed: list[Event]) -> None:
    for event in missed:
        await ws.send_text(event.ws)
    await ws.send_text(synced_ws(services))
    while True:
        item = await connection.next(services.settings.sse_keepalive_s)
        await ws.send_text(keepalive_ws(freshness(services)) if item is None else str(item))


async def _ws_watch_close(ws: WebSocket, sender: asyncio.Task[None]) -> None:
    """Devices send nothing; reading notices at once when one goes away."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            sender.cancel()
            return

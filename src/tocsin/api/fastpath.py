"""The live fast paths: after the response head, alert bytes go straight to the socket.

Per-message ASGI machinery (a task, a queue and a send() per device per alert) is what
makes a framework SSE endpoint slow at fan-out (DESIGN.md). On uvicorn's httptools
protocol this wrapper answers `GET /api/v1/stream` itself: it sends the response head
through ASGI, then registers the device's transport with the live registry, which writes
each alert's pre-encoded HTTP chunk to every matching transport in one loop. On any other
server, and for refusals (problem+json), the request goes to the normal route. The
WebSocket endpoint gets the same treatment from `ws_fastpath` (one pre-encoded frame).
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from tocsin.api import ws_fastpath
from tocsin.api.auth import device_for
from tocsin.api.headers import CORS_ANY_ORIGIN
from tocsin.api.services import Services
from tocsin.api.streams import PREAMBLE, claim_stream, new_connection, release_stream, resume_after, synced_sse
from tocsin.channels.live import Protocol, as_transport, http_chunk
from tocsin.errors import Rejected, StoreUnavailable

STREAM_PATH = "/api/v1/stream"


def _transport_of(send: Send) -> asyncio.Transport | None:
    """uvicorn httptools' response cycle owns the transport and frames chunks itself.

    Checked by its methods (`as_transport`), not with isinstance: uvloop's TCPTransport is
    not an asyncio.Transport subclass, and `tocsin serve` runs on uvloop, so an isinstance
    check kept every device of a served node off the fast path.
    """
    cycle = getattr(send, "__self__", None)
    if cycle is None or not type(cycle).__module__.endswith("httptools_impl"):
        return None
    return as_transport(getattr(cycle, "transport", None))


class SseFastPath:
    """ASGI wrapper: the stream endpoint on the fast path, everything else to `app`."""

    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services

    def __getattr__(self, name: str) -> Any:  # `state`, `routes`... of the wrapped app
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == ws_fastpath.WS_PATH:
            transport = ws_fastpath.ws_transport_of(send)
            device = await ws_fastpath.authenticate(scope, self.services) if transport is not None else None
            if transport is not None and device is not None:
                try:
                    await ws_fastpath.serve_device(self.services, device, transport, receive, send)
                finally:
                    release_stream(self.services, device[0])
                return
        # HTTP/1.0 has no chunked encoding: the route refuses it with a problem.
        if scope["type"] == "http" and scope["path"] == STREAM_PATH and scope["method"] == "GET" and (
            scope.get("http_version") == "1.1"
        ):
            transport = _transport_of(send)
            if transport is not None:
                request = Request(scope)
                try:
                    device_id, record = await device_for(request, self.services)
                    after = await resume_after(
                        self.services, record, request.headers.get("last-event-id") or request.query_params.get("last_event_id")
                    )
                    claim_stream(self.services, device_id)
                except (Rejected, StoreUnavailable):
                    await self.app(scope, receive, send)  # the route answers with the problem
                    return
                try:
                    await self._stream(device_id, record, after, transport, receive, send)
                finally:
                    release_stream(self.services, device_id)
                return
        await self.app(scope, receive, send)

    async def _stream(
        self, device_id: str, record: dict[str, Any], after: int,
        transport: asyncio.Transport, receive: Receive, send: Send,
    ) -> None:
        services = self.services
        headers = [
            (b"content-type", b"text/event-stream"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
            (b"tocsin-node", services.settings.node_name.encode()),
            *CORS_ANY_ORIGIN,
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        connection = new_connection(device_id, record, Protocol.SSE, services.settings.device_queue_depth)
        connection.use(transport)
        # From here to the end of the replay nothing awaits: no live alert can come first.
        missed = services.pipeline.replay.attach(connection, after)
        connection.write_raw(http_chunk(PREAMBLE))
        connection.write_raw(b"".join(event.sse_chunk for event in missed))
        connection.write_raw(http_chunk(synced_sse(services)))
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        finally:
            services.live.remove(connection)

"""The WebSocket fast path: after the handshake, alert frames go straight to the socket.

A server's frames are never masked (RFC 6455 §5.1), so each alert's text frame is encoded
once (`Event.ws_frame`) and the same bytes are written to every matching device's transport
by the live registry, as on the SSE fast path: no task, queue or `send_text()` per device.
uvicorn's websockets-sansio protocol still does the handshake, answers pings, sends its own
keepalive pings and closes; those are whole frames, so they never interleave inside ours.
On any other WebSocket implementation, and for refusals, the normal route serves the device.
"""

from __future__ import annotations

import asyncio

from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send

from tocsin.api.auth import device_for
from tocsin.api.services import Services
from tocsin.api.streams import claim_stream, new_connection, resume_after, synced_ws
from tocsin.channels.live import Protocol, as_transport, ws_text_frame
from tocsin.errors import Rejected, StoreUnavailable

WS_PATH = "/api/v1/ws"


def ws_transport_of(send: Send) -> asyncio.Transport | None:
    """The socket under uvicorn's websockets-sansio protocol, when that is what serves us."""
    protocol = getattr(send, "__self__", None)
    if protocol is None or not type(protocol).__module__.endswith("websockets_sansio_impl"):
        return None
    return as_transport(getattr(protocol, "transport", None))


async def authenticate(scope: Scope, services: Services) -> tuple[str, dict[str, object], int] | None:
    """(device id, record, resume-after seq), or None: the route answers the refusal."""
    conn = HTTPConnection(scope)
    try:
        device_id, record = await device_for(conn, services)
        after = await resume_after(services, record, conn.query_params.get("last_event_id"))
        claim_stream(services, device_id)  # the caller releases it when the device goes
    except (Rejected, StoreUnavailable):
        return None
    return device_id, record, after


async def serve_device(
    services: Services, device: tuple[str, dict[str, object], int],
    transport: asyncio.Transport, receive: Receive, send: Send,
) -> None:
    """Accept, replay what the device missed, then let the registry write its alerts."""
    device_id, record, after = device
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    connection = new_connection(device_id, record, Protocol.WS, services.settings.device_queue_depth)
    connection.use(transport)
    try:
        # From here to the end of the replay nothing awaits: no live alert can come first.
        missed = services.pipeline.replay.attach(connection, after)
        connection.write_raw(b"".join(event.ws_frame for event in missed))
        connection.write_raw(ws_text_frame(synced_ws(services)))
        while (await receive())["type"] != "websocket.disconnect":
            pass  # devices send nothing that matters; reading notices when one goes away
    finally:
        services.live.remove(connection)

"""The WebSocket form of the device stream: JSON text frames, resumable by last_event_id."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from tocsin.client.node import WS_PATH, DeviceUnknown, NodeRefused

# The server closes with 4401 for an unknown device once accepted; before accepting, an
# ASGI server turns a close into an HTTP 403 handshake refusal.
_UNKNOWN_DEVICE_CLOSE = 4401
_UNKNOWN_DEVICE_STATUS = (401, 403)


def ws_url(url: str, token: str, last_seq: int | str | None) -> str:
    """The stream's WebSocket URL on the node at `url` (http -> ws, https -> wss)."""
    query = {"token": token}
    if last_seq is not None:
        query["last_event_id"] = str(last_seq)
    scheme, sep, rest = url.partition("://")
    ws_scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
    return f"{ws_scheme}{sep}{rest}{WS_PATH}?{urlencode(query)}"


@asynccontextmanager
async def open_ws(url: str, token: str, last_seq: int | str | None, *, open_timeout_s: float) -> AsyncIterator[ClientConnection]:
    """A connected stream; refusals become NodeRefused / DeviceUnknown.

    Raises:
        DeviceUnknown: the node does not know the token.
        NodeRefused: the node refused the handshake.
        OSError: the node could not be reached.
    """
    try:
        async with connect(ws_url(url, token, last_seq), open_timeout=open_timeout_s, max_size=2**21) as ws:
            yield ws
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status in _UNKNOWN_DEVICE_STATUS:
            raise DeviceUnknown(url, status, "device.unknown", "handshake refused") from exc
        raise NodeRefused(url, status, "", "handshake refused") from exc
    except ConnectionClosed as exc:
        if exc.rcvd is not None and exc.rcvd.code == _UNKNOWN_DEVICE_CLOSE:
            raise DeviceUnknown(url, 401, exc.rcvd.reason, "closed by the node") from exc
        raise ConnectionError(f"{url} closed the stream: {exc}") from exc
    except (WebSocketException, TimeoutError) as exc:
        raise ConnectionError(f"{url}: {exc}") from exc


async def messages(
    ws: ClientConnection, *, silence_s: Callable[[], float]
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(type, payload) for each JSON object frame (keepalives too); others are skipped.

    Raises:
        TimeoutError: nothing came for `silence_s()` seconds (the node sends keepalives).
    """
    while True:
        async with asyncio.timeout(silence_s()):
            frame = await ws.recv()
        try:
            payload = json.loads(frame)
        except ValueError:
            continue
        if isinstance(payload, dict) and isinstance(payload.get("type"), str):
            yield payload["type"], payload

"""WEBPUSH: the two public reads a Web Push app needs (docs/webpush.md).

- `GET /api/v1/webpush/key`: the deployment's VAPID public key, for
  `pushManager.subscribe({applicationServerKey})`;
- `GET /api/v1/events/{alert_id}`: an active alert's event, exactly as SSE sends it, where
  a push pointer (delivery/model.pointer_payload) sends the app when the alert did not fit
  in the push. Anonymous and possibly flooded (every woken phone fetches it at once): the id
  is checked first, then one dict read of the follower's index and the bytes it holds.
"""

from __future__ import annotations

import json
import re

from starlette.requests import Request
from starlette.responses import Response

from tocsin.api.services import Services
from tocsin.audience import Audience
from tocsin.channels import webpush
from tocsin.errors import CHANNEL_UNAVAILABLE, EVENT_UNKNOWN, Rejected

_ALERT_ID = re.compile(r"[0-9a-f]{32}")
# What an anonymous reader may fetch: what a device that opted in to tests receives (System
# alerts are the canaries' only, as on the stream).
ANYONE = Audience(tests=True)
# The SSE frame is `id: ...\nevent: alert\ndata: <JSON>\n\n` (pipeline/encode.py).
_DATA = b"\ndata: "
# The key changes only with the file (a restart reads it); a browser may keep it a day.
KEY_CACHE = "public, max-age=86400"
# An event never changes, but it leaves when its alert expires: a cache keeps it a minute.
EVENT_CACHE = "public, max-age=60"


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def webpush_key(request: Request) -> Response:
    """The VAPID public key and what the app registers with.

    Raises:
        Rejected: 422 device.channel-unavailable when this deployment has no Web Push.
    """
    settings = _services(request).settings
    if not webpush.enabled(settings):
        raise Rejected(CHANNEL_UNAVAILABLE, "this deployment does not deliver through Web Push (webpush_hosts is empty)")
    body: bytes | None = getattr(request.app.state, "webpush_key", None)
    if body is None:
        body = json.dumps(webpush.key_document(settings), separators=(",", ":")).encode()
        request.app.state.webpush_key = body
    return Response(body, media_type="application/json", headers={"Cache-Control": KEY_CACHE})


def event_body(sse: bytes) -> bytes:
    """The JSON of an SSE alert event (its `data:` line); JSON holds no raw newline."""
    start = sse.index(_DATA) + len(_DATA)
    return sse[start:sse.index(b"\n", start)]


async def event(request: Request) -> Response:
    """The event of an alert active on this node: seq, event_id, id, kid, sig, cap.

    Raises:
        Rejected: 404 event.unknown (not an alert id, no such active alert here, or a
            System alert: those go to canaries only).
    """
    alert_id = request.path_params["alert_id"]
    if not _ALERT_ID.fullmatch(alert_id):
        raise Rejected(EVENT_UNKNOWN, "an alert id is 32 lowercase hex digits")
    active = _services(request).pipeline.index.by_id.get(alert_id)
    if active is None or not ANYONE.receives(active.event.status):
        raise Rejected(EVENT_UNKNOWN, f"no active alert {alert_id} on this node (expired, or not yet here)")
    return Response(event_body(active.event.sse), media_type="application/json",
                    headers={"Cache-Control": EVENT_CACHE})

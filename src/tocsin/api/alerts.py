"""Issuer API: POST an alert (CAP XML or JSON), read it back with its state."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tocsin.api.auth import issuer_for, take_alert_slot
from tocsin.api.services import Services
from tocsin.cap.model import Alert
from tocsin.cap.parse import parse_stored
from tocsin.cap.render import to_json
from tocsin.errors import CAP_NOT_JSON, TOO_LARGE, UNSUPPORTED_MEDIA, AlertNotFound, Rejected
from tocsin.store.base import AlertId, Stored

_ALERT_ID = re.compile(r"[0-9a-f]{32}")
XML_TYPES = ("application/cap+xml", "application/xml", "text/xml")
JSON_TYPES = ("application/json",)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes `limit` bytes (before any parsing)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Rejected(TOO_LARGE, f"{declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Rejected(TOO_LARGE, f"more than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def post_alert(request: Request) -> Response:
    services = _services(request)
    started = time.perf_counter()
    issuer = await issuer_for(request, services)
    take_alert_slot(issuer, services)  # ACCOUNTS: the organisation's rate (429 + Retry-After)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in XML_TYPES + JSON_TYPES:
        raise Rejected(UNSUPPORTED_MEDIA, f"got {media or 'no content type'}")
    body = await read_body(request, services.settings.max_cap_bytes)
    original: bytes | None = None
    if media in XML_TYPES:
        alert = services.accept.parse(body)
        original = body
    else:
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Rejected(CAP_NOT_JSON, f"the body is not JSON: {exc}") from None
        alert = services.accept.parse(document)
    accepted = await services.accept(alert, issuer, original)
    services.metrics.accept_seconds.observe(time.perf_counter() - started)
    if accepted.created:
        services.metrics.accepted.labels(alert.status.value).inc()
    body_json = describe(accepted.stored, accepted.alert, services, for_issuer=True)
    headers = {"Location": body_json["links"]["self"]}
    return JSONResponse(body_json, status_code=201 if accepted.created else 200, headers=headers)


def describe(stored: Stored, alert: Alert, services: Services, *, for_issuer: bool = False) -> dict[str, Any]:
    """The alert's id, identity, state and links; the account name only for its issuer."""
    env = stored.envelope
    now = services.clock()
    expires = alert.expires
    active = services.pipeline.index.by_id.get(env.alert_id)
    described: dict[str, Any] = {
        "id": env.alert_id,
        "seq": stored.seq,
        "sender": alert.sender,
        "identifier": alert.identifier,
        "sent": alert.sent.isoformat(),
        "status": alert.status.value,
        "msgType": alert.msg_type.value,
        "expires": expires.isoformat() if expires else None,
        "state": "expired" if expires and expires <= now else "active",
        "acceptedAt": env.accepted_at.isoformat(),
        "acceptedBy": env.node,
        "signature": {"kid": env.kid, "sig": env.sig, "alg": "EdDSA"},
        "delivery": {
            "node": services.settings.node_name,
            "followed": services.pipeline.index.last_seq >= stored.seq,
            "liveDevicesOffered": services.pipeline.fanout.offered.get(env.alert_id, 0) if active else None,
        },
        "links": {
            "self": f"/api/v1/alerts/{env.alert_id}",
            "cap": f"/api/v1/alerts/{env.alert_id}.xml",
        },
    }
    if for_issuer:
        described["issuer"] = env.issuer
    return described


def _alert_id(request: Request) -> AlertId:
    """The id in the path; only 32 hex digits can name an alert (and a NATS subject)."""
    raw = str(request.path_params["alert_id"])
    if not _ALERT_ID.fullmatch(raw):
        raise AlertNotFound(raw[:64])
    return AlertId(raw)


async def get_alert(request: Request) -> Response:
    services = _services(request)
    stored = await services.store.get(_alert_id(request))
    alert = parse_stored(stored.envelope.payload)
    return JSONResponse({**describe(stored, alert, services), "alert": to_json(alert)})


async def get_alert_xml(request: Request) -> Response:
    services = _services(request)
    stored = await services.store.get(_alert_id(request))
    env = stored.envelope
    headers = {"Tocsin-Signature": env.sig, "Tocsin-Key-Id": env.kid}
    return Response(env.payload, media_type="application/cap+xml", headers=headers)

"""Issuer API: POST an alert (CAP XML or JSON), read it back with its state."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tocsin.api import lifecycle
from tocsin.api.auth import issuer_for, require, take_alert_slot
from tocsin.api.services import Services
from tocsin.approval.pending import actor_of
from tocsin.api.audit import note
from tocsin.cap.model import Alert, Severity
from tocsin.correction import DEFAULT_TEMPLATES, TEMPLATE_FIELDS, correction_for, templates_json, valid_templates
from tocsin.cap.parse import parse_stored
from tocsin.cap.render import to_json
from tocsin.errors import (
    CAP_NOT_JSON,
    REFERENCE_NOT_ALLOWED,
    TEMPLATES_INVALID,
    TOO_LARGE,
    UNSUPPORTED_MEDIA,
    AlertNotFound,
    Rejected,
)
from tocsin.store.audit import Action
from tocsin.policy import Role
from tocsin.pipeline.accept import Accepted
from tocsin.store.base import AlertId, Stored, alert_id_for

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


async def read_alert(request: Request, services: Services) -> tuple[Alert, bytes | None]:
    """The alert in the body (CAP XML, or the JSON form) and, for XML, the issuer's bytes;
    the content type and size are checked before anything is read or parsed.

    Raises:
        Rejected: 415 (the content type), 413 (the size), 422 cap.not-json and cap.*.
    """
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in XML_TYPES + JSON_TYPES:
        raise Rejected(UNSUPPORTED_MEDIA, f"got {media or 'no content type'}")
    body = await read_body(request, services.settings.max_cap_bytes)
    if media in XML_TYPES:
        return services.accept.parse(body), body
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Rejected(CAP_NOT_JSON, f"the body is not JSON: {exc}") from None
    return services.accept.parse(document), None


async def post_alert(request: Request) -> Response:
    services = _services(request)
    started = time.perf_counter()
    issuer = await issuer_for(request, services)
    require(issuer, Role.AUTHOR)
    take_alert_slot(issuer, services)  # ACCOUNTS: the organisation's rate (429 + Retry-After)
    alert, original = await read_alert(request, services)
    alert_id = alert_id_for(alert.sender, alert.identifier)
    # Already published (an issuer's retry after its approval): accept answers 200 or 409.
    if issuer.approval.required(alert) and not await services.store.holds(alert_id):
        return await lifecycle.submit(request, services, alert, issuer, original, alert_id)
    accepted = await services.accept(alert, issuer, original)
    services.metrics.accept_seconds.observe(time.perf_counter() - started)
    if accepted.created:
        services.metrics.accepted.labels(alert.status.value).inc()
    if not issuer.probe:  # the prober's canaries are health checks, not actions
        await lifecycle.note_published(services, request, accepted, actor=actor_of(issuer), org=issuer.name)
    return answer(accepted, services, 201 if accepted.created else 200)


def answer(accepted: Accepted, services: Services, status_code: int) -> Response:
    """The issuer's answer for a stored alert, with its Location."""
    body_json = describe(accepted.stored, accepted.alert, services, for_issuer=True)
    body_json["standing"] = standing(accepted, services)  # where the alert stands (burst)
    return JSONResponse(body_json, status_code=status_code, headers={"Location": body_json["links"]["self"]})


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


def standing(accepted: Accepted, services: Services) -> dict[str, Any]:
    """Where an accepted alert stands, for its issuer (many issuers at once, issue 11).

    `accept`: how many accepts waited ahead of it at this node's gate, and how long it
    waited; `fanOut`: whether this node has fanned it out, and if not how many alerts
    before it in the stream this node has still to take (at most that many go first);
    `duplicateOf`: the alert of another organisation it repeats within the window.
    """
    seq = accepted.stored.seq
    taken = services.pipeline.index.last_seq
    alert_id = accepted.stored.envelope.alert_id
    # Indexed with its burst is not fanned out yet: an active alert is done once offered.
    done = alert_id in services.pipeline.fanout.offered if alert_id in services.pipeline.index.by_id else taken >= seq
    return {
        "published": True,
        "accept": {"waitedAhead": accepted.entry.ahead, "waitedMs": round(accepted.entry.waited_s * 1000, 1)},
        "fanOut": {
            "node": services.settings.node_name,
            "done": done,
            "before": max(0, seq - taken - 1),
        },
        "duplicateOf": accepted.duplicate_of.as_json() if accepted.duplicate_of is not None else None,
    }


def _alert_id(request: Request) -> AlertId:
    """The id in the path; only 32 hex digits can name an alert (and a NATS subject)."""
    raw = str(request.path_params["alert_id"])
    if not _ALERT_ID.fullmatch(raw):
        raise AlertNotFound(raw[:64])
    return AlertId(raw)


async def get_alert(request: Request) -> Response:
    """A published alert for anyone; a submission (pending, rejected, ...) for its organisation."""
    services = _services(request)
    alert_id = _alert_id(request)
    try:
        stored = await services.store.get(alert_id)
    except AlertNotFound:
        view = await lifecycle.pending_view(request, services, alert_id)
        if view is None:
            raise
        return view
    alert = parse_stored(stored.envelope.payload)
    described = describe(stored, alert, services)
    # PROGRESS: the gateway deliveries and receipts per channel, summed over the nodes.
    described["delivery"]["channels"] = await services.progress.summary(alert_id)
    return JSONResponse({**described, "alert": to_json(alert)})


async def get_alert_xml(request: Request) -> Response:
    services = _services(request)
    stored = await services.store.get(_alert_id(request))
    env = stored.envelope
    headers = {"Tocsin-Signature": env.sig, "Tocsin-Key-Id": env.kid}
    return Response(env.payload, media_type="application/cap+xml", headers=headers)


async def approve_alert(request: Request) -> Response:
    """Publish a pending alert (approver role; not its author for an Actual alert)."""
    services = _services(request)
    accepted = await lifecycle.approve(request, services, _alert_id(request))
    return answer(accepted, services, 201)


async def reject_alert(request: Request) -> Response:
    """Refuse a pending alert with a reason."""
    services = _services(request)
    body = await read_body(request, lifecycle.DECISION_MAX_BYTES)
    return await lifecycle.reject(request, services, _alert_id(request), body)


async def alerts(request: Request) -> Response:
    """POST: submit an alert; GET: list submissions by state (`?state=pending`)."""
    if request.method == "GET":
        return await lifecycle.list_alerts(request, _services(request))
    return await post_alert(request)


async def correct_alert(request: Request) -> Response:
    """Publish at once the "false alert, disregard" Cancel of an alert (author role, the
    alert's organisation or one delegated to correct it; never waits for approval)."""
    services = _services(request)
    issuer = await issuer_for(request, services)
    require(issuer, Role.AUTHOR)
    original_id = _alert_id(request)
    stored = await services.store.get(original_id)
    if not issuer.may_reference(stored.envelope.issuer):
        raise Rejected(REFERENCE_NOT_ALLOWED, f"{original_id} was issued by another organisation")
    original = parse_stored(stored.envelope.payload)
    severity = Severity.MINOR if issuer.may_send_severity(Severity.MINOR.value) else original.infos[0].severity
    correction = correction_for(original, await templates(services), now=services.clock(),
                                lifetime_s=services.settings.correction_lifetime_s, severity=severity)
    accepted = await services.accept(correction, issuer, None)
    await lifecycle.note_published(services, request, accepted, actor=actor_of(issuer), org=issuer.name,
                                   detail={"corrects": original_id})
    return answer(accepted, services, 201 if accepted.created else 200)


def _templates_key(services: Services) -> str:
    return f"{services.settings.stream}.templates.correction"


async def templates(services: Services) -> dict[str, dict[str, str]]:
    """The correction templates an admin set, else the shipped defaults."""
    kept = await services.store.pending.get(_templates_key(services))
    return valid_templates(kept.get("templates") if kept else None) or DEFAULT_TEMPLATES


async def correction_templates(request: Request) -> Response:
    """GET: the correction templates; PUT: replace them (admin role; audited)."""
    services = _services(request)
    issuer = await issuer_for(request, services)
    require(issuer, Role.ADMIN)
    if request.method == "PUT":
        body = await read_body(request, 64 * 1024)
        try:
            chosen = valid_templates(json.loads(body).get("templates"))
        except (ValueError, UnicodeDecodeError, AttributeError):
            chosen = None
        if chosen is None:
            raise Rejected(TEMPLATES_INVALID, f"send {{\"templates\": {{language: {{{', '.join(TEMPLATE_FIELDS)}}}}}}}")
        await services.store.pending.put(_templates_key(services), {"templates": chosen})
        await note(services, request, Action.POLICY_CHANGED, "correction-templates", issuer=issuer,
                   detail={"languages": sorted(chosen)})
    return JSONResponse(templates_json(await templates(services)))

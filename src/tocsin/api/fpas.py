"""FPAS: the FOSS Public Alert Server client API, at the paths its clients use (docs/fpas.md).

KDE's KPublicAlerts and FOSS Warn subscribe a bounding box with a UnifiedPush endpoint and
are pushed the id of each alert in it, which they then fetch as CAP. Here a subscription is
a push device on channel "fpas" (channels/fpas.py) whose cells cover its box, planned and
dispatched as every push device is (docs/delivery.md); its id is the UUID the client keeps,
and a heartbeat renews it as a connect renews any device (it lives `device_ttl_s` without).

Bounds: anonymous subscriptions count against the device registration limits (per source
and in all, before the body is read); a body is at most MAX_BODY_BYTES; a box covering more
than `max_device_cells` cells is refused before it is covered; the lists answer at most
`fpas_max_listed` ids, found among the active alerts only.
"""

from __future__ import annotations

import math
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import h3
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from tocsin.api.alerts import read_body
from tocsin.api.auth import token_digest
from tocsin.api.device_records import is_expired
from tocsin.api.devices import Registration, _parse, _take_registration, device_record
from tocsin.api.ratelimit import retry_after
from tocsin.api.services import Services
from tocsin.cap.model import Status
from tocsin.channels import webpush
from tocsin.channels.fpas import SERVICES, UNIFIED_PUSH_ENCRYPTED, FpasSender, check_endpoint
from tocsin.delivery.model import FPAS, Outcome
from tocsin.errors import (
    DEVICE_REGISTRY_FULL, DEVICE_TOO_MANY_UPDATES, FPAS_ALERT_UNKNOWN, FPAS_BOX_INVALID, FPAS_BOX_TOO_LARGE,
    FPAS_INVALID, FPAS_NO_SUBSCRIPTION, FPAS_PUSH_ENDPOINT_REFUSED, FPAS_PUSH_SERVICE_UNAVAILABLE,
    FPAS_PUSH_UNCONFIRMED, FPAS_SUBSCRIPTION_UNKNOWN, FPAS_SUBSCRIPTIONS_FULL, RecordsFull, Rejected,
)
from tocsin.geo.cells import CELL_RESOLUTION, cell_for_point, cover_of_shapes
from tocsin.pipeline.index import Active, ActiveIndex

MAX_BODY_BYTES = 8192
# Device ids of FPAS subscriptions: this prefix and the subscription's UUID as 32 hex digits.
PREFIX = "fpas_"
# The mean area of an H3 cell at CELL_RESOLUTION (h3geo.org/docs/core-library/restable):
# a box's area over it bounds from below the cells its cover holds, known before covering.
CELL_KM2 = h3.average_hexagon_area(CELL_RESOLUTION, unit="km^2")
_KM_PER_DEG = 111.195
CAP_XML = "application/cap+xml"
# What the FPAS server reports as its version; tocsin answers with its own name in it.
SERVER_VERSION = "tocsin FPAS API 1.0"


@dataclass(frozen=True, slots=True, kw_only=True)
class Box:
    min_lat: float
    max_lat: float
    min_lon: float
    max_lon: float

    @property
    def area_km2(self) -> float:
        mid = math.radians((self.min_lat + self.max_lat) / 2)
        return (self.max_lat - self.min_lat) * _KM_PER_DEG * (self.max_lon - self.min_lon) * _KM_PER_DEG * math.cos(mid)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _number(source: Mapping[str, Any], name: str) -> float:
    """A coordinate as FPAS reads it: a JSON number or a decimal string (FOSS Warn sends
    strings, KPublicAlerts numbers)."""
    value = source.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise Rejected(FPAS_INVALID, f"{name}: a number is needed")
    if isinstance(value, str) and len(value) > 32:
        raise Rejected(FPAS_INVALID, f"{name}: at most 32 characters")
    try:
        number = float(value)
    except ValueError:
        raise Rejected(FPAS_INVALID, f"{name}: {str(value)[:32]!r} is not a number") from None
    if not math.isfinite(number):
        raise Rejected(FPAS_BOX_INVALID, f"{name}: must be finite")
    return number


def box_of(source: Mapping[str, Any]) -> Box:
    """The bounding box of a subscription body or an /alert/area query.

    Raises:
        Rejected: 400 fpas.invalid (absent, not a number) or fpas.box-invalid.
    """
    box = Box(min_lat=_number(source, "min_lat"), max_lat=_number(source, "max_lat"),
              min_lon=_number(source, "min_lon"), max_lon=_number(source, "max_lon"))
    # FPAS subscriptionHandler/views.py isValidBbox: inside the world, min below max (so
    # never across the antimeridian).
    if not (-90 <= box.min_lat < box.max_lat <= 90 and -180 <= box.min_lon < box.max_lon <= 180):
        raise Rejected(FPAS_BOX_INVALID, f"got lat {box.min_lat:g}..{box.max_lat:g}, lon {box.min_lon:g}..{box.max_lon:g}")
    return box


def box_cells(box: Box, max_cells: int) -> list[str]:
    """The cells at CELL_RESOLUTION the box touches, refused past `max_cells` before any
    cover is computed (the area says so) and after (the edges' cells add to it).

    Raises:
        Rejected: 400 fpas.box-too-large.
    """
    if box.area_km2 / CELL_KM2 > max_cells:
        raise Rejected(FPAS_BOX_TOO_LARGE, f"about {box.area_km2:.0f} km²; at most {max_cells} cells "
                                           f"of {CELL_KM2:.0f} km² each")
    ring = ((box.min_lat, box.min_lon), (box.min_lat, box.max_lon), (box.max_lat, box.max_lon),
            (box.max_lat, box.min_lon), (box.min_lat, box.min_lon))
    cover = cover_of_shapes((ring,), ())
    cells = set(h3.uncompact_cells(list(cover.cells), CELL_RESOLUTION)) if cover.cells else set()
    cells.update(cell_for_point(lat, lon) for lat, lon in ring[:4])  # a box smaller than a cell
    if len(cells) > max_cells:
        raise Rejected(FPAS_BOX_TOO_LARGE, f"{len(cells)} cells; at most {max_cells}")
    return sorted(cells)


def device_id_of(subscription_id: object) -> str:
    """The device id of a subscription id (a UUID, as the clients keep it).

    Raises:
        Rejected: 400 fpas.invalid: absent or not a UUID.
    """
    if not isinstance(subscription_id, str) or not 32 <= len(subscription_id) <= 38:
        raise Rejected(FPAS_INVALID, "subscription_id: a UUID is needed")
    try:
        return PREFIX + uuid.UUID(subscription_id).hex
    except ValueError:
        raise Rejected(FPAS_INVALID, "subscription_id: not a UUID") from None


def _sender(services: Services) -> FpasSender:
    sender = services.senders.get(FPAS)
    if not isinstance(sender, FpasSender):
        raise Rejected(FPAS_PUSH_SERVICE_UNAVAILABLE, "this deployment takes no FPAS subscription (TOCSIN_FPAS_PUSH_HOSTS)")
    return sender


def push_target(document: Mapping[str, Any], service: str, services: Services) -> dict[str, Any]:
    """The record's push part: the service, the checked endpoint and, encrypted, the keys.

    Raises:
        Rejected: 400 fpas.push-endpoint-refused, or fpas.invalid for the keys.
    """
    settings = services.settings
    try:
        if service != UNIFIED_PUSH_ENCRYPTED:
            return {"service": service, "endpoint": check_endpoint(document.get("token"), settings)}
        subscription = {"endpoint": document.get("token"),
                        "keys": {"p256dh": document.get("p256dh_key"), "auth": document.get("auth_key")}}
        target = webpush.check_target({"subscription": subscription},
                                      settings.replace(webpush_hosts=settings.fpas_push_hosts), canary=False)
    except Rejected as refused:
        problem = FPAS_INVALID if "keys" in refused.detail else FPAS_PUSH_ENDPOINT_REFUSED
        detail = refused.detail.replace("subscription.endpoint", "token").replace("subscription.keys.", "")
        raise Rejected(problem, detail.replace("p256dh", "p256dh_key").replace("auth:", "auth_key:")) from None
    return {"service": service, **target}


def _new_subscription(document: object, services: Services) -> tuple[str, dict[str, Any], list[str]]:
    """(device id, push target, cells) of a subscription body, all checked."""
    if not isinstance(document, dict):
        raise Rejected(FPAS_INVALID, "the body must be a JSON object")
    for name in ("token", "push_service"):
        if not isinstance(document.get(name), str):
            raise Rejected(FPAS_INVALID, f"{name}: a string is needed")
    service = str(document["push_service"])
    if service not in SERVICES:
        raise Rejected(FPAS_PUSH_SERVICE_UNAVAILABLE, f"push_service: {service[:40]!r}; this server takes "
                                                      f"{', '.join(SERVICES)}")
    sender = _sender(services)
    cells = box_cells(box_of(document), services.settings.max_device_cells)
    vapid = document.get("vapid_public_key")
    if service == UNIFIED_PUSH_ENCRYPTED and vapid not in (None, "") and vapid != sender.vapid_public_b64:
        # KPublicAlerts names the key its distributor registered with: pushes signed with
        # another would be refused (403) by its push server.
        raise Rejected(FPAS_INVALID, "vapid_public_key: not this server's (GET /subscription/?type=webpush)")
    return PREFIX + uuid.uuid4().hex, push_target(document, service, services), cells


async def subscribe(request: Request) -> Response:
    """POST /subscription/: check, send the confirmation push, and only then store."""
    services = _services(request)
    _take_registration(request, services)  # before the body is read or parsed
    held = services.device_cache.count(FPAS)
    if held >= services.settings.fpas_max_subscriptions:
        raise Rejected(FPAS_SUBSCRIPTIONS_FULL, f"{held} subscriptions; at most {services.settings.fpas_max_subscriptions}")
    device_id, target, cells = _new_subscription(_parse(await read_body(request, MAX_BODY_BYTES)), services)
    confirmation_id = str(uuid.uuid4())
    result = await _sender(services).confirm(target, device_id, confirmation_id)
    if result.outcome is not Outcome.SENT:
        raise Rejected(FPAS_PUSH_UNCONFIRMED, f"the push server answered {result.reason or result.outcome.value}")
    now = services.clock()
    body = Registration(cells=cells, languages=[], tests=False, canary=False, channel=FPAS, push=target)
    # No token is ever given for it: the subscription id is what the client holds.
    record = device_record(body, secret_sha256=token_digest(secrets.token_urlsafe(24)), created=now, renewed=now)
    try:
        await services.store.devices.put(device_id, record)
    except RecordsFull:
        raise Rejected(DEVICE_REGISTRY_FULL, "no subscription can be made until unused records expire") from None
    services.device_cache[device_id] = record
    subscription_id = str(uuid.UUID(device_id.removeprefix(PREFIX)))
    return JSONResponse({"token": "successfully subscribed", "subscription_id": subscription_id,
                         "confirmation_id": confirmation_id})


async def _stored(services: Services, device_id: str) -> dict[str, Any]:
    """The subscription's record, if it is one and has not expired.

    Raises:
        Rejected: 404 fpas.subscription-unknown.
    """
    if device_id not in services.device_cache:  # the mirror first: an unknown id costs no read
        raise Rejected(FPAS_SUBSCRIPTION_UNKNOWN)
    record = await services.store.devices.get(device_id)
    if record is None or record.get("channel") != FPAS or is_expired(record, services.clock(), services.settings):
        raise Rejected(FPAS_SUBSCRIPTION_UNKNOWN)
    return record


async def heartbeat(request: Request) -> Response:
    """PUT /subscription/?subscription_id=ID[&token=URL&p256dh_key=K&auth_key=A]: renew,
    and take a new push endpoint when one is given."""
    services = _services(request)
    device_id = device_id_of(request.query_params.get("subscription_id"))
    wait_s = services.device_updates.take(device_id)  # each is a write
    if wait_s:
        raise Rejected(DEVICE_TOO_MANY_UPDATES, headers={"Retry-After": retry_after(wait_s)})
    record = await _stored(services, device_id)
    written = {**record, "renewed": services.clock().isoformat()}
    if "token" in request.query_params:
        service = str(record.get("push", {}).get("service", ""))
        written["push"] = push_target(dict(request.query_params), service, services)
    try:
        await services.store.devices.put(device_id, written)
    except RecordsFull:
        raise Rejected(DEVICE_REGISTRY_FULL, "the registry is full") from None
    services.device_cache[device_id] = written
    return PlainTextResponse("Subscription successfully updated")


async def unsubscribe(request: Request) -> Response:
    """DELETE /subscription/?subscription_id=ID."""
    services = _services(request)
    device_id = device_id_of(request.query_params.get("subscription_id"))
    await _stored(services, device_id)
    await services.store.devices.delete(device_id)
    services.device_cache.pop(device_id, None)
    return PlainTextResponse("successfully unsubscribed")


async def subscription(request: Request) -> Response:
    """/subscription/: GET the VAPID key, POST subscribes, PUT renews, DELETE unsubscribes."""
    if request.method == "POST":
        return await subscribe(request)
    if request.method == "PUT":
        return await heartbeat(request)
    if request.method == "DELETE":
        return await unsubscribe(request)
    if request.query_params.get("type") != "webpush":
        raise Rejected(FPAS_INVALID, "type: only webpush has a configuration here")
    return JSONResponse({"vapid-key": webpush.vapid_key(_services(request).settings).public_b64},
                        headers={"Cache-Control": "public, max-age=86400"})


def _is_listed(active: Active, index: ActiveIndex) -> bool:
    """An alert FPAS clients are given: Actual, neither a Cancel nor replaced by a later one."""
    return (active.alert.status is Status.ACTUAL and not active.retracts
            and active.stored.envelope.alert_id not in index.superseded)


def _with_ancestors(cells: list[str]) -> frozenset[str]:
    """`cells` and every coarser cell holding one: a compacted cover touches one of `cells`
    exactly when one of its cells is in this set (at most 7 per cell at resolution 6)."""
    return frozenset(h3.cell_to_parent(cell, res) for cell in cells for res in range(CELL_RESOLUTION + 1))


def listed(index: ActiveIndex, cells: list[str], now_s: float, limit: int) -> list[str]:
    """The ids of the listed active alerts that reach any of `cells`, the newest first.
    Each alert costs one set test of at most its cover's or the cells' size (`isdisjoint`
    walks the smaller), not a walk per cell: an anonymous /alert/area stays cheap."""
    wanted = _with_ancestors(cells)
    found = [active for active in index.active.values()
             if _is_listed(active, index) and active.expires_at.timestamp() > now_s
             and (active.everywhere or not wanted.isdisjoint(active.cover.cells))]
    found.sort(key=lambda active: active.stored.seq, reverse=True)
    return [str(active.stored.envelope.alert_id) for active in found[:limit]]


async def alerts_of_subscription(request: Request) -> Response:
    """GET /alert/all?subscription_id=ID: FPAS answers 400 for an unknown subscription."""
    services = _services(request)
    try:
        device_id = device_id_of(request.query_params.get("subscription_id"))
        record = services.device_cache[device_id]
    except (Rejected, KeyError):
        raise Rejected(FPAS_NO_SUBSCRIPTION) from None
    if is_expired(record, services.clock(), services.settings):
        raise Rejected(FPAS_NO_SUBSCRIPTION)
    cells = list(record.get("cells") or [])
    return JSONResponse(listed(services.pipeline.index, cells, services.clock().timestamp(),
                               services.settings.fpas_max_listed))


async def alerts_of_area(request: Request) -> Response:
    """GET /alert/area?min_lat=&max_lat=&min_lon=&max_lon=."""
    services = _services(request)
    cells = box_cells(box_of(request.query_params), services.settings.max_device_cells)
    return JSONResponse(listed(services.pipeline.index, cells, services.clock().timestamp(),
                               services.settings.fpas_max_listed))


def _active(request: Request) -> Active:
    services = _services(request)
    index = services.pipeline.index
    active = index.by_id.get(request.path_params["alert_id"][:64])
    if active is None or active.alert.status is not Status.ACTUAL:
        raise Rejected(FPAS_ALERT_UNKNOWN)
    if active.expires_at.timestamp() <= services.clock().timestamp():
        raise Rejected(FPAS_ALERT_UNKNOWN)
    return active


async def alert(request: Request) -> Response:
    """GET /alert/ID: a redirect to the alert's CAP (FPAS alertHandler/views.py answers 301
    to the stored file); relative, so that it holds under any path prefix."""
    active = _active(request)
    return RedirectResponse(f"{active.stored.envelope.alert_id}.xml", status_code=301)


async def alert_cap(request: Request) -> Response:
    """GET /alert/ID.xml: the alert's CAP, the signed bytes tocsin rendered."""
    active = _active(request)
    return Response(active.stored.envelope.payload, media_type=CAP_XML,
                    headers={"Cache-Control": "public, max-age=60"})


async def server_status(request: Request) -> Response:
    """GET /config/server_status: who runs this server and which push services it takes."""
    settings = _services(request).settings
    taken = FPAS in _services(request).senders  # subscriptions are taken (TOCSIN_FPAS_PUSH_HOSTS)
    return JSONResponse({
        "server_version": SERVER_VERSION,
        "server_operator": settings.fpas_operator,
        "privacy_notice": settings.fpas_privacy_notice,
        "terms_of_service": settings.fpas_terms_of_service,
        "congestion_state": 1,
        "supported_push_services": {"UNIFIED_PUSH": taken, "UNIFIED_PUSH_ENCRYPTED": taken,
                                    "APN": False, "FIREBASE": False},
    })

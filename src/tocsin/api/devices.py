"""Device API: register the cells a device wants alerts for; the server never keeps a point.

Input is strict (docs/api.md, "Device API"): every field has one JSON type, unknown fields
are refused, cells are stored in one canonical form, and anonymous registration is rate
limited per source and in all before the body is read.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tocsin.api.alerts import read_body
from tocsin.api.auth import bearer, device_for, issuer_for, token_digest
from tocsin.api.device_records import LIVE, epoch, record_json
from tocsin.api.ratelimit import retry_after, source_of
from tocsin.api.services import Services
from tocsin.errors import (
    BAD_REQUEST, CELL_INVALID, DEVICE_INVALID, DEVICE_REGISTRY_FULL, DEVICE_TOO_MANY_CELLS, DEVICE_TOO_MANY_UPDATES,
    DEVICE_UNKNOWN,
    REGISTRATIONS_BUSY, TOO_MANY_REGISTRATIONS, RecordsFull, Rejected, Violation,
)
from tocsin.delivery import channels
from tocsin.delivery.model import APNS, FCM, WEBPUSH, Sender
from tocsin.geo.cells import CELL_RESOLUTION, cell_for_point, normalize_cell
from tocsin.settings import Settings

MAX_LANGUAGES = 8
MAX_BODY_BYTES = 64 * 1024
FIELDS = frozenset({"cells", "points", "languages", "tests", "canary", "channel", "subscription", "token", "node"})
# A canary's node (the prober's receiver is on that node's loopback): a NATS subject token.
_NODE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# CORE: a registration's push part (a Web Push subscription, an FCM or APNs token) as the
# body gives it and as the record keeps it: a few hundred bytes in practice.
MAX_PUSH_BYTES = 4096
_PUSH_PART = {WEBPUSH: "subscription", FCM: "token", APNS: "token"}
# An H3 cell index as text: 15 hex digits (h3geo.org/docs/library/index/cell). h3 itself
# accepts spaces and capitals around one, which is how padded duplicates got stored.
_CELL_TEXT = re.compile(r"[0-9a-f]{15}")
# RFC 5646 language tag, loosely: subtags of letters and digits joined by hyphens.
_LANGUAGE = re.compile(r"[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8}){0,7}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Registration:
    """A registration as read from its JSON body, canonical and checked."""

    cells: list[str]
    languages: list[str]
    tests: bool
    canary: bool
    channel: str = LIVE
    push: dict[str, Any] | None = None  # the record's "push" field (channel check_target)
    # A canary only: the node whose dispatcher alone sends to it (delivery/dispatcher.py).
    node: str = ""


def _refuse(violations: list[Violation]) -> Rejected:
    first = violations[0]
    return Rejected(first.problem, f"{first.path}: {first.detail}", violations=tuple(violations))


def _list(document: dict[str, Any], name: str, problems: list[Violation]) -> list[Any]:
    value = document.get(name, [])
    if not isinstance(value, list):
        problems.append(Violation(problem=DEVICE_INVALID, path=name, detail="must be a JSON array"))
        return []
    return value


def _flag(document: dict[str, Any], name: str, problems: list[Violation]) -> bool:
    value = document.get(name, False)
    if not isinstance(value, bool):
        problems.append(Violation(problem=DEVICE_INVALID, path=name, detail=f"must be true or false, got {value!r:.40}"))
        return False
    return value


def canonical_cell(raw: object) -> str:
    """The cell at CELL_RESOLUTION that `raw` names, in its canonical text.

    Raises:
        ValueError: not a string holding a valid H3 cell at or finer than CELL_RESOLUTION.
    """
    if not isinstance(raw, str) or len(raw) > 64:
        raise ValueError(f"{raw!r:.40} is not an H3 cell string")
    text = raw.strip().lower()
    if not _CELL_TEXT.fullmatch(text):
        raise ValueError(f"{raw!r:.40} is not an H3 cell")
    return normalize_cell(text)


def _coordinate(point: dict[str, Any], name: str, bound: float) -> float:
    value = point[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number")
    if not (math.isfinite(value) and -bound <= value <= bound):
        raise ValueError(f"{name} must lie within -{bound:g}..{bound:g}")
    return float(value)


def _point_cell(point: object) -> str:
    if not isinstance(point, dict) or set(point) != {"lat", "lon"}:
        raise ValueError("each point must be an object with exactly lat and lon")
    # Converted at once: only the coarse cell is kept, never the point.
    return cell_for_point(_coordinate(point, "lat", 90), _coordinate(point, "lon", 180))


def _cells(document: dict[str, Any], max_cells: int, problems: list[Violation]) -> list[str]:
    raw_cells, points = _list(document, "cells", problems), _list(document, "points", problems)
    if len(raw_cells) + len(points) > max_cells:
        # Bounded before any work: each entry costs a parse, and the record's size.
        raise Rejected(DEVICE_TOO_MANY_CELLS, f"{len(raw_cells) + len(points)} cells and points; at most {max_cells}")
    cells: set[str] = set()
    for path, items, read, problem in (("cells", raw_cells, canonical_cell, CELL_INVALID),
                                       ("points", points, _point_cell, DEVICE_INVALID)):
        for i, item in enumerate(items):
            try:
                cells.add(read(item))
            except ValueError as exc:
                problems.append(Violation(problem=problem, path=f"{path}[{i}]", detail=str(exc)))
    if not cells and not problems:
        problems.append(Violation(problem=DEVICE_INVALID, path="cells", detail=f"give between 1 and {max_cells} cells or points"))
    return sorted(cells)


def _languages(document: dict[str, Any], problems: list[Violation]) -> list[str]:
    languages = _list(document, "languages", problems)
    if len(languages) > MAX_LANGUAGES or not all(isinstance(x, str) and _LANGUAGE.fullmatch(x) for x in languages):
        problems.append(Violation(problem=DEVICE_INVALID, path="languages",
                                  detail=f"at most {MAX_LANGUAGES} language tags such as fr or en-GB"))
        return []
    return list(dict.fromkeys(languages))  # unique, in the device's order of preference


def _node(document: dict[str, Any], problems: list[Violation]) -> str:
    value = document.get("node", "")
    if not isinstance(value, str) or (value and not _NODE.fullmatch(value)):
        problems.append(Violation(problem=DEVICE_INVALID, path="node", detail="a node name: 1-64 letters, digits, _ or -"))
        return ""
    return value


def registration(document: object, max_cells: int) -> Registration:
    """Read a registration body strictly.

    Raises:
        Rejected: 422 naming each field that is wrong (`errors`), or too many cells.
    """
    if not isinstance(document, dict):
        raise Rejected(DEVICE_INVALID, "the body must be a JSON object")
    problems = [Violation(problem=DEVICE_INVALID, path=str(name)[:40], detail="unknown field")
                for name in document if name not in FIELDS]
    result = Registration(
        cells=_cells(document, max_cells, problems),
        languages=_languages(document, problems),
        tests=_flag(document, "tests", problems),
        canary=_flag(document, "canary", problems),
        node=_node(document, problems),
    )
    if result.node and not result.canary:
        problems.append(Violation(problem=DEVICE_INVALID, path="node", detail="only a canary names its node"))
    if problems:
        raise _refuse(problems)
    return result


def _size(value: object) -> int:
    try:
        return len(json.dumps(value, separators=(",", ":")))
    except (TypeError, ValueError, RecursionError):
        return MAX_PUSH_BYTES + 1


def with_push(document: dict[str, Any], body: Registration, settings: Settings,
              senders: Mapping[str, Sender] | None = None) -> Registration:
    """`body` with the registration's channel and its push part, read by the channel.

    Raises:
        Rejected: 422 device.invalid (a push part the channel does not take, or too large),
            device.channel-unavailable, or the channel's own refusal.
    """
    channel = document.get("channel", LIVE)
    if not isinstance(channel, str) or len(channel) > 16:
        raise Rejected(DEVICE_INVALID, "channel: must be live, webpush, fcm or apns")
    part = _PUSH_PART.get(channel)
    for name in ("subscription", "token"):
        if name in document and name != part:
            raise Rejected(DEVICE_INVALID, f"{name}: not a field of a {channel[:16]} registration")
    if channel == LIVE:
        return body
    if part is None or part not in document:
        # Not a channel, or not one configured here: check_target refuses it, naming those
        # there are; a configured one without its push part: the channel's own refusal.
        channels.check_target(channel, document, settings, canary=body.canary, senders=senders)
        raise Rejected(DEVICE_INVALID, f"{part}: a {channel} registration needs one")
    if _size(document[part]) > MAX_PUSH_BYTES:
        raise Rejected(DEVICE_INVALID, f"{part}: at most {MAX_PUSH_BYTES} bytes of JSON")
    push = channels.check_target(channel, document, settings, canary=body.canary, senders=senders)
    if _size(push) > MAX_PUSH_BYTES:
        raise Rejected(DEVICE_INVALID, f"{part}: at most {MAX_PUSH_BYTES} bytes of JSON")
    return Registration(cells=body.cells, languages=body.languages, tests=body.tests, canary=body.canary,
                        channel=channel, push=push, node=body.node)


def device_record(body: Registration, *, secret_sha256: str, created: datetime, renewed: datetime) -> dict[str, Any]:
    """The stored record: `record_json`, plus the channel and push fields of a push device."""
    record = record_json(cells=body.cells, languages=body.languages, tests=body.tests, canary=body.canary,
                         secret_sha256=secret_sha256, created=created, renewed=renewed)
    if body.channel != LIVE:
        record["channel"] = body.channel
        record["push"] = body.push
    if body.node:
        record["node"] = body.node
    return record


def _answer(device_id: str, body: Registration) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "id": device_id, "cells": body.cells, "languages": body.languages, "tests": body.tests,
        "canary": body.canary, "channel": body.channel, "cell_resolution": CELL_RESOLUTION,
    }
    return answer


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _parse(body: bytes) -> object:
    try:
        return json.loads(body, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise Rejected(BAD_REQUEST, f"the body is not JSON: {str(exc)[:200]}") from None


def _take_registration(request: Request, services: Services) -> None:
    """Count an anonymous registration against its source and this node.

    Raises:
        Rejected: 429 with Retry-After, by source or in all.
    """
    wait_s = services.registrations_by_source.take(source_of(request))
    if wait_s:
        raise Rejected(TOO_MANY_REGISTRATIONS, headers={"Retry-After": retry_after(wait_s)})
    wait_s = services.registrations_in_all.take()
    if wait_s:
        raise Rejected(REGISTRATIONS_BUSY, headers={"Retry-After": retry_after(wait_s)})


async def register_device(request: Request) -> Response:
    services: Services = request.app.state.services
    anonymous = bearer(request) is None
    if anonymous:
        _take_registration(request, services)  # before the body is read or parsed
    document = _parse(await read_body(request, MAX_BODY_BYTES))
    body = registration(document, services.settings.max_device_cells)
    if body.canary:
        # Canaries receive System alerts; only an issuer account (the prober) may create one.
        await issuer_for(request, services)
    elif not anonymous:
        _take_registration(request, services)
    assert isinstance(document, dict)  # registration() refused anything else
    body = with_push(document, body, services.settings, services.senders)
    device_id = "dev_" + secrets.token_hex(12)
    secret = secrets.token_urlsafe(24)
    now = services.clock()
    record = device_record(body, secret_sha256=token_digest(secret), created=now, renewed=now)
    try:
        await services.store.devices.put(device_id, record)
    except RecordsFull:
        raise Rejected(DEVICE_REGISTRY_FULL, "no device can register until unused records expire") from None
    services.device_cache[device_id] = record
    answer = {**_answer(device_id, body), "token": f"{device_id}.{secret}"}
    return JSONResponse(answer, status_code=201, headers={"Location": f"/api/v1/devices/{device_id}"})


async def update_device(request: Request) -> Response:
    """Replace a device's cells, languages, tests flag and push part (a browser rotates its
    subscription), renewing the record: its own token authenticates. The channel and the
    canary flag stay as registered."""
    services: Services = request.app.state.services
    device_id, record = await device_for(request, services, renew=False)
    if device_id != request.path_params["device_id"]:
        raise Rejected(DEVICE_UNKNOWN, "the token is not this device's", headers={"WWW-Authenticate": "Bearer"})
    wait_s = services.device_updates.take(device_id)  # before the body is read: each is a write
    if wait_s:
        raise Rejected(DEVICE_TOO_MANY_UPDATES, headers={"Retry-After": retry_after(wait_s)})
    document = _parse(await read_body(request, MAX_BODY_BYTES))
    body = registration(document, services.settings.max_device_cells)
    assert isinstance(document, dict)
    channel = str(record.get("channel", LIVE))
    if document.get("channel", channel) != channel:
        raise Rejected(DEVICE_INVALID, f"channel: this device registered as {channel}; register again to change it")
    if body.canary != bool(record.get("canary")):
        raise Rejected(DEVICE_INVALID, "canary: a device keeps the canary flag it registered with")
    body = with_push({**document, "channel": channel}, body, services.settings, services.senders)
    now = services.clock()
    created = datetime.fromtimestamp(epoch(record.get("created")), UTC)
    written = device_record(body, secret_sha256=str(record["secret_sha256"]), created=created, renewed=now)
    try:
        await services.store.devices.put(device_id, written)
    except RecordsFull:
        raise Rejected(DEVICE_REGISTRY_FULL, "no device can register until unused records expire") from None
    services.device_cache[device_id] = written
    return JSONResponse(_answer(device_id, body))


async def delete_device(request: Request) -> Response:
    """Forget a device: its own token authenticates; every node's mirror drops it."""
    services: Services = request.app.state.services
    device_id, _ = await device_for(request, services, renew=False)
    if device_id != request.path_params["device_id"]:
        raise Rejected(DEVICE_UNKNOWN, "the token is not this device's", headers={"WWW-Authenticate": "Bearer"})
    await services.store.devices.delete(device_id)
    services.device_cache.pop(device_id, None)
    return Response(status_code=204)


async def device(request: Request) -> Response:
    """/api/v1/devices/{device_id}: PUT replaces, DELETE forgets."""
    if request.method == "PUT":
        return await update_device(request)
    return await delete_device(request)

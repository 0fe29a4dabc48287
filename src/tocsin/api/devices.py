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
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tocsin.api.alerts import read_body
from tocsin.api.auth import bearer, device_for, issuer_for, token_digest
from tocsin.api.device_records import record_json
from tocsin.api.ratelimit import retry_after, source_of
from tocsin.api.services import Services
from tocsin.errors import (
    BAD_REQUEST, CELL_INVALID, DEVICE_INVALID, DEVICE_REGISTRY_FULL, DEVICE_TOO_MANY_CELLS, DEVICE_UNKNOWN,
    REGISTRATIONS_BUSY, TOO_MANY_REGISTRATIONS, RecordsFull, Rejected, Violation,
)
from tocsin.geo.cells import CELL_RESOLUTION, cell_for_point, normalize_cell

MAX_LANGUAGES = 8
MAX_BODY_BYTES = 64 * 1024
FIELDS = frozenset({"cells", "points", "languages", "tests", "canary"})
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
    )
    if problems:
        raise _refuse(problems)
    return result


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
    body = registration(_parse(await read_body(request, MAX_BODY_BYTES)), services.settings.max_device_cells)
    if body.canary:
        # Canaries receive System alerts; only an issuer account (the prober) may create one.
        await issuer_for(request, services)
    elif not anonymous:
        _take_registration(request, services)
    device_id = "dev_" + secrets.token_hex(12)
    secret = secrets.token_urlsafe(24)
    now = services.clock()
    record = record_json(cells=body.cells, languages=body.languages, tests=body.tests, canary=body.canary,
                         secret_sha256=token_digest(secret), created=now, renewed=now)
    try:
        await services.store.devices.put(device_id, record)
    except RecordsFull:
        raise Rejected(DEVICE_REGISTRY_FULL, "no device can register until unused records expire") from None
    services.device_cache[device_id] = record
    answer = {
        "id": device_id,
        "token": f"{device_id}.{secret}",
        "cells": body.cells,
        "languages": body.languages,
        "tests": body.tests,
        "canary": body.canary,
        "cell_resolution": CELL_RESOLUTION,
    }
    return JSONResponse(answer, status_code=201, headers={"Location": f"/api/v1/devices/{device_id}"})


async def delete_device(request: Request) -> Response:
    """Forget a device: its own token authenticates; every node's mirror drops it."""
    services: Services = request.app.state.services
    device_id, _ = await device_for(request, services, renew=False)
    if device_id != request.path_params["device_id"]:
        raise Rejected(DEVICE_UNKNOWN, "the token is not this device's", headers={"WWW-Authenticate": "Bearer"})
    await services.store.devices.delete(device_id)
    services.device_cache.pop(device_id, None)
    return Response(status_code=204)

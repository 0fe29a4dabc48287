"""Device API: register the cells a device wants alerts for; the server never keeps a point."""

from __future__ import annotations

import json
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tocsin.api.alerts import read_body
from tocsin.api.auth import issuer_for, token_digest
from tocsin.api.services import Services
from tocsin.errors import BAD_REQUEST, CELL_INVALID, DEVICE_INVALID, Rejected, Violation
from tocsin.geo.cells import CELL_RESOLUTION, cell_for_point, normalize_cell

MAX_CELLS = 64
MAX_LANGUAGES = 8


def _cells(document: dict[str, Any]) -> list[str]:
    cells: set[str] = set()
    problems: list[Violation] = []
    for i, raw in enumerate(document.get("cells") or []):
        try:
            cells.add(normalize_cell(str(raw)))
        except ValueError as exc:
            problems.append(Violation(problem=CELL_INVALID, path=f"cells[{i}]", detail=str(exc)))
    for i, point in enumerate(document.get("points") or []):
        try:
            lat, lon = float(point["lat"]), float(point["lon"])
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise ValueError("out of range")
            # Converted at once: only the coarse cell is kept, never the point.
            cells.add(cell_for_point(lat, lon))
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(Violation(problem=DEVICE_INVALID, path=f"points[{i}]", detail=f"need lat, lon: {exc}"))
    if problems:
        raise Rejected(problems[0].problem, problems[0].detail, violations=tuple(problems))
    if not cells or len(cells) > MAX_CELLS:
        raise Rejected(DEVICE_INVALID, f"give between 1 and {MAX_CELLS} cells or points")
    return sorted(cells)


def _languages(document: dict[str, Any]) -> list[str]:
    languages = document.get("languages") or []
    if not isinstance(languages, list) or len(languages) > MAX_LANGUAGES or not all(
        isinstance(x, str) and 0 < len(x) <= 35 for x in languages
    ):
        raise Rejected(DEVICE_INVALID, f"languages must be a list of at most {MAX_LANGUAGES} language tags")
    return languages


async def register_device(request: Request) -> Response:
    services: Services = request.app.state.services
    try:
        document = json.loads(await read_body(request, 64 * 1024))
    except (ValueError, UnicodeDecodeError) as exc:
        raise Rejected(BAD_REQUEST, f"the body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise Rejected(DEVICE_INVALID, "the body must be a JSON object")
    canary = bool(document.get("canary", False))
    if canary:
        # Canaries receive System alerts; only an issuer account (the prober) may create one.
        await issuer_for(request, services)
    device_id = "dev_" + secrets.token_hex(12)
    secret = secrets.token_urlsafe(24)
    record = {
        "cells": _cells(document),
        "languages": _languages(document),
        "tests": bool(document.get("tests", False)),
        "canary": canary,
        "secret_sha256": token_digest(secret),
        "created": services.clock().isoformat(),
    }
    await services.store.devices.put(device_id, record)
    services.device_cache[device_id] = record
    body = {
        "id": device_id,
        "token": f"{device_id}.{secret}",
        "cells": record["cells"],
        "languages": record["languages"],
        "tests": record["tests"],
        "canary": canary,
        "cell_resolution": CELL_RESOLUTION,
    }
    return JSONResponse(body, status_code=201)

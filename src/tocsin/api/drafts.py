"""Drafts for the console: POST/GET /api/v1/drafts, GET/DELETE /api/v1/drafts/{id}."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tocsin.api.alerts import read_body
from tocsin.api.audit import note
from tocsin.api.auth import issuer_for, require
from tocsin.api.services import Services
from tocsin.approval.drafts import DRAFT_ID, Drafts
from tocsin.approval.pending import actor_of
from tocsin.errors import DRAFT_INVALID, DRAFT_UNKNOWN, Rejected
from tocsin.policy import Issuer, Role
from tocsin.store.audit import Action

NAME_MAX_CHARS = 200


def _drafts(services: Services) -> Drafts:
    s = services.settings
    return Drafts(services.store.pending, s.stream, services.pending_cache,
                  max_per_org=s.max_drafts_per_org, keep_s=s.draft_keep_s)


async def _author(request: Request) -> tuple[Services, Issuer]:
    services: Services = request.app.state.services
    issuer = await issuer_for(request, services)
    require(issuer, Role.AUTHOR)
    return services, issuer


async def drafts(request: Request) -> Response:
    """POST: save a draft (`{"name", "alert", "id"?}`); GET: the organisation's drafts."""
    services, issuer = await _author(request)
    if request.method == "GET":
        listed = [{k: v for k, v in d.items() if k != "alert"} for d in _drafts(services).of(issuer.name)]
        return JSONResponse({"drafts": listed})
    body = await read_body(request, services.settings.max_cap_bytes)
    draft = _draft(body)
    draft.update(org=issuer.name, savedBy=actor_of(issuer), savedAt=services.clock().isoformat())
    draft_id = await _drafts(services).save(issuer.name, draft, draft.pop("id", None))
    await note(services, request, Action.DRAFT_SAVED, draft_id, issuer=issuer, detail={"name": draft["name"]})
    return JSONResponse({**draft, "id": draft_id, "links": {"self": f"/api/v1/drafts/{draft_id}"}}, status_code=201,
                        headers={"Location": f"/api/v1/drafts/{draft_id}"})


def _draft(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Rejected(DRAFT_INVALID, "the body is not JSON") from None
    if not isinstance(data, dict):
        raise Rejected(DRAFT_INVALID)
    name, alert, draft_id = data.get("name"), data.get("alert"), data.get("id")
    if not isinstance(name, str) or not name.strip() or len(name) > NAME_MAX_CHARS:
        raise Rejected(DRAFT_INVALID, f"name: a text of 1 to {NAME_MAX_CHARS} characters")
    if not isinstance(alert, (dict, str)):
        raise Rejected(DRAFT_INVALID, "alert: the CAP alert as JSON, or its XML as text")
    if draft_id is not None and not (isinstance(draft_id, str) and DRAFT_ID.fullmatch(draft_id)):
        raise Rejected(DRAFT_INVALID, "id: a draft id this API gave")
    return {"name": name.strip(), "alert": alert, **({"id": draft_id} if draft_id else {})}


async def draft(request: Request) -> Response:
    """GET: one draft; DELETE: forget it."""
    services, issuer = await _author(request)
    draft_id = str(request.path_params["draft_id"])
    kept = _drafts(services)
    found = await kept.get(issuer.name, draft_id)
    if found is None:
        raise Rejected(DRAFT_UNKNOWN, f"no draft {draft_id[:64]}")
    if request.method == "DELETE":
        await kept.delete(issuer.name, draft_id)
        return Response(status_code=204)
    return JSONResponse(found)

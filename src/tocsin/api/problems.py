"""The only place exceptions become HTTP responses: application/problem+json (RFC 9457)."""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tocsin.errors import (
    ALERT_NOT_FOUND,
    BAD_REQUEST,
    INTERNAL,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    STORE_FULL,
    STORE_UNAVAILABLE,
    AlertNotFound,
    Problem,
    Rejected,
    StoreFull,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
# How long an issuer should wait before retrying when the store has no quorum.
RETRY_AFTER_S = "2"


def problem_body(
    problem: Problem, detail: str = "", *, errors: list[dict[str, str]] | None = None, instance: str | None = None
) -> dict[str, Any]:
    """The problem document (RFC 9457 members plus our stable `code`)."""
    body: dict[str, Any] = {
        "type": f"urn:tocsin:problem:{problem.code}",
        "title": problem.title,
        "status": problem.status,
        "code": problem.code,
        "detail": detail or problem.title,
    }
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = errors
    return body


def problem_response(
    problem: Problem,
    detail: str = "",
    *,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    instance: str | None = None,
) -> Response:
    body = problem_body(problem, detail, errors=errors, instance=instance)
    return JSONResponse(body, status_code=problem.status, headers=headers, media_type=MEDIA_TYPE)


async def on_rejected(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Rejected)
    counter = getattr(request.app.state, "refused", None)
    if counter is not None:
        counter(exc.problem.code)
    return problem_response(
        exc.problem,
        exc.detail,
        errors=[v.as_dict() for v in exc.violations] or None,
        headers=exc.headers,
        instance=request.url.path,
    )


async def on_store_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("store unavailable", extra={"path": request.url.path, "error": str(exc)})
    operation = exc.operation if isinstance(exc, StoreUnavailable) else ""
    if operation == "publish":
        detail = "the alert was not confirmed as stored; retry (the same alert is never stored twice)"
    elif operation == "publish-early":
        detail = ("the alert was not confirmed as stored, but it went to live devices ahead of storage; this "
                  "node's ledger holds it and stores it once the store is back; retry (it is stored once)")
    else:
        detail = "the replicated store did not answer in time; retry"
    return problem_response(
        STORE_UNAVAILABLE,
        detail,
        headers={"Retry-After": RETRY_AFTER_S},
        instance=request.url.path,
    )


async def on_store_full(request: Request, exc: Exception) -> Response:
    # No Retry-After: retrying cannot help; readiness has been red since usage passed its
    # threshold, and docs/operations.md says how to recover.
    return problem_response(
        STORE_FULL,
        f"{exc}; nothing was stored. See docs/operations.md, 'A full alert stream'",
        instance=request.url.path,
    )


async def on_not_found(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AlertNotFound)
    return problem_response(ALERT_NOT_FOUND, f"no alert with id {exc.alert_id}", instance=request.url.path)


async def on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    problem = {404: NOT_FOUND, 405: METHOD_NOT_ALLOWED}.get(exc.status_code, BAD_REQUEST)
    return problem_response(problem, str(exc.detail), headers=dict(exc.headers or {}), instance=request.url.path)


async def on_internal(request: Request, exc: Exception) -> Response:
    log.error("unhandled error", extra={"path": request.url.path}, exc_info=exc)
    return problem_response(INTERNAL, instance=request.url.path)


HANDLERS: dict[Any, Any] = {
    Rejected: on_rejected,
    StoreUnavailable: on_store_unavailable,
    StoreFull: on_store_full,
    AlertNotFound: on_not_found,
    HTTPException: on_http,
    Exception: on_internal,
}

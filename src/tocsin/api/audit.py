"""The audit log at the HTTP edge: how routes note an action, and GET /api/v1/audit.

Nothing here (nor anywhere in the API) changes or deletes an entry: the only route is a read.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from tocsin.api.auth import issuer_for
from tocsin.api.ratelimit import source_of
from tocsin.api.services import Services
from tocsin.approval.pending import actor_of
from tocsin.errors import AUDIT_QUERY_INVALID, Rejected
from tocsin.policy import Issuer
from tocsin.store.audit import PAGE_MAX, Action, AuditEntry, AuditQuery

_FILTERS = ("action", "subject", "alert", "actor", "org", "after", "limit")


async def note(services: Services, conn: HTTPConnection | None, action: Action, subject: str, *,
               issuer: Issuer | None = None, actor: str = "", org: str = "",
               detail: dict[str, Any] | None = None, once: str = "") -> None:
    """Append one entry: who (the issuer's principal, or `actor`), for which organisation,
    from which client address.

    Raises:
        StoreUnavailable: the log did not confirm it (the caller answers 503; a retry of the
            same action with the same `once` key appends nothing twice).
    """
    entry = AuditEntry(
        action=action, subject=subject, actor=actor or (actor_of(issuer) if issuer else ""),
        org=org or (issuer.name if issuer else ""), at=services.clock(),
        source=source_of(conn) if conn is not None else "", detail=detail or {},
    )
    await services.store.audit.append(entry, once=once)


def _query(request: Request, issuer: Issuer) -> AuditQuery:
    params = request.query_params
    unknown = sorted(set(params) - set(_FILTERS))
    if unknown:
        raise Rejected(AUDIT_QUERY_INVALID, f"unknown parameter {unknown[0]!r}; use {', '.join(_FILTERS)}")
    try:
        actions = tuple(Action(a) for a in params.getlist("action"))
    except ValueError:
        raise Rejected(AUDIT_QUERY_INVALID, f"action must be one of {', '.join(a.value for a in Action)}") from None
    after, limit = params.get("after", "0"), params.get("limit", "50")
    if not after.isdigit() or not limit.isdigit() or not 1 <= int(limit) <= PAGE_MAX:
        raise Rejected(AUDIT_QUERY_INVALID, f"after is a seq (0 or more) and limit 1 to {PAGE_MAX}")
    subject = params.get("subject") or params.get("alert") or ""
    org = params.get("org", "")
    if not issuer.admin:
        if org and org != issuer.name:
            raise Rejected(AUDIT_QUERY_INVALID, f"account {issuer.name!r} reads its own organisation's entries only")
        org = issuer.name
    return AuditQuery(after_seq=int(after), limit=int(limit), actions=actions, subject=subject,
                      actor=params.get("actor", ""), org=org)


async def get_audit(request: Request) -> Response:
    """Entries oldest first; an admin reads every organisation's, anyone else its own."""
    services: Services = request.app.state.services
    issuer = await issuer_for(request, services)
    query = _query(request, issuer)
    page = await services.store.audit.page(query)
    body: dict[str, Any] = {"entries": [e.as_json() for e in page.entries], "links": {}}
    if page.next_after_seq is not None:
        kept = [(k, v) for k, v in request.query_params.multi_items() if k != "after"]
        body["links"]["next"] = f"/api/v1/audit?{urlencode([*kept, ('after', str(page.next_after_seq))])}"
    return JSONResponse(body)

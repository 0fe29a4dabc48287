"""Admin API for relayed CAP sources (deployment admins; docs/sources.md).

`GET /api/v1/admin/sources` and `GET|PUT|DELETE /api/v1/admin/sources/{name}`. Each answer
carries the source's status as its poller last wrote it (state, last poll, last success,
last alert, last error, consecutive errors, next poll). Every change is audited.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tocsin.api.admin import Admin, admin_for, path_param, put_versioned
from tocsin.api.cap_routes import audited_url, json_object
from tocsin.delivery.routes import NAME
from tocsin.errors import SOURCE_INVALID, SOURCE_UNKNOWN, Rejected
from tocsin.sources.breaker import NEW
from tocsin.sources.model import MAX_SOURCES, Source, from_body, invalid
from tocsin.sources.poller import lease_key, status_key
from tocsin.store.audit import Action

# What an answer shows of a status record (its `taken` keys are the poller's own business).
_SHOWN = ("state", "consecutive_errors", "next_poll_at", "last_poll", "last_success", "last_alert", "last_error",
          "last_refusal", "counts", "etag", "last_modified")


async def _deployment_admin(request: Request) -> Admin:
    admin = await admin_for(request)
    admin.deployment()
    return admin


def public_status(source: Source, record: dict[str, Any] | None) -> dict[str, Any]:
    """The status as answered: `disabled` or `new` when there is nothing else to say."""
    record = record or {}
    shown = {key: record.get(key) for key in _SHOWN}
    shown["state"] = "disabled" if not source.enabled else record.get("state") or NEW
    shown["consecutive_errors"] = int(record.get("consecutive_errors") or 0)
    shown["counts"] = record.get("counts") or {}
    return shown


def _answer(source: Source, record: dict[str, Any] | None, status_code: int = 200) -> Response:
    return JSONResponse({"source": source.as_json(), "status": public_status(source, record)}, status_code=status_code)


async def _known(admin: Admin, name: str) -> Source:
    """The source as the bucket holds it (not the mirror: an answer after a change is exact)."""
    found = await admin.services.store.sources.get(name) if NAME.fullmatch(name) else None
    source = Source.from_json(found) if found is not None else None
    if source is None:
        raise Rejected(SOURCE_UNKNOWN, f"no source {name[:80]!r} (tocsin sources list)")
    return source


async def _body(admin: Admin) -> dict[str, Any]:
    return await json_object(admin, invalid, "a JSON object with url, and optionally interval_s, signatures, "
                                             "keys, senders, statuses, territory, enabled")


async def list_sources(request: Request) -> Response:
    admin = await _deployment_admin(request)
    services = admin.services
    return JSONResponse({"sources": [
        {**s.as_json(), "status": public_status(s, services.source_status.get(status_key(s.name)))}
        for s in services.sources.sources()]})


async def show_source(request: Request) -> Response:
    admin = await _deployment_admin(request)
    source = await _known(admin, path_param(request, "name"))
    return _answer(source, await admin.services.store.source_status.get(status_key(source.name)))


async def put_source(request: Request) -> Response:
    """Create or replace a source: 201 when new, 200 when replaced."""
    admin = await _deployment_admin(request)
    name = path_param(request, "name")
    body = await _body(admin)
    book = admin.services.sources
    now = admin.now.isoformat()
    source, created = await put_versioned(
        admin.services.store.sources, name,
        lambda record: from_body(name, body, Source.from_json(record) if record else None, actor=admin.actor, now=now),
        at_limit=lambda: invalid("name", f"this deployment holds its limit of {MAX_SOURCES} sources")
        if len(book) >= MAX_SOURCES else None,
        busy=Rejected(SOURCE_INVALID, "the source kept changing; try again"))
    book[name] = source.as_json()  # this node polls it at once; the mirror follows
    await admin.audit(Action.SOURCE_CREATED if created else Action.SOURCE_CHANGED, name, admin.issuer.name, {
        "url": audited_url(source.url), "signatures": source.signatures, "keys": len(source.keys),
        "senders": list(source.senders), "statuses": list(source.statuses), "enabled": source.enabled})
    status = await admin.services.store.source_status.get(status_key(name))
    return _answer(source, status, 201 if created else 200)


async def delete_source(request: Request) -> Response:
    """Remove a source: no more polls; what it relayed stays (the stream is append-only)."""
    admin = await _deployment_admin(request)
    services = admin.services
    source = await _known(admin, path_param(request, "name"))
    await services.store.sources.delete(source.name)
    services.sources.pop(source.name, None)
    for key in (status_key(source.name), lease_key(source.name)):
        await services.store.source_status.delete(key)
        services.source_status.pop(key, None)
    await admin.audit(Action.SOURCE_REMOVED, source.name, admin.issuer.name, {"url": audited_url(source.url)})
    return JSONResponse({"source": source.as_json(), "removed": True})


async def source(request: Request) -> Response:
    """/api/v1/admin/sources/{name}: GET, PUT or DELETE."""
    handler = {"PUT": put_source, "DELETE": delete_source}.get(request.method, show_source)
    return await handler(request)

"""Admin API for CAP forwarding routes (deployment admins; docs/cap-forwarding.md).

`GET /api/v1/admin/routes`, `GET|PUT|DELETE /api/v1/admin/routes/{name}` and
`POST /api/v1/admin/routes/{name}/test`. A route's bearer token is never in an answer
(`has_token` says whether there is one). Every change and every test asked for is audited.
A PUT makes the route's consumer at once, a DELETE removes it and what waits on it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tocsin.api.admin import Admin, admin_for, path_param, put_versioned
from tocsin.api.alerts import read_body
from tocsin.delivery.route_worker import RouteWorker, route_status
from tocsin.delivery.routes import MAX_ROUTES, NAME, NatsErrors, Route, from_body, invalid
from tocsin.errors import ROUTE_INVALID, ROUTE_UNKNOWN, Rejected, StoreUnavailable
from tocsin.store.audit import Action

async def _deployment_admin(request: Request) -> Admin:
    admin = await admin_for(request)
    admin.deployment()
    return admin


def _status(admin: Admin, route: Route) -> dict[str, Any]:
    worker = admin.services.route_worker
    pending = worker.pending.get(route.name) if worker is not None else None
    return route_status(route, admin.services.route_status, pending)


def _answer(admin: Admin, route: Route, status_code: int = 200, **extra: Any) -> Response:
    return JSONResponse({"route": route.public_json(), "status": _status(admin, route), **extra},
                        status_code=status_code)


async def _known(admin: Admin, name: str) -> Route:
    """The route as the bucket holds it (not the mirror: an answer after a change is exact)."""
    found = await admin.services.store.routes.get(name) if NAME.fullmatch(name) else None
    route = Route.from_json(found) if found is not None else None
    if route is None:
        raise Rejected(ROUTE_UNKNOWN, f"no route {name[:80]!r} (tocsin routes list)")
    return route


async def json_object(admin: Admin, refuse: Callable[[str, str], Rejected], expected: str) -> dict[str, Any]:
    """The request's JSON object, or `refuse("body", ...)` (routes, sources)."""
    raw = await read_body(admin.request, admin.services.settings.max_admin_body_bytes)
    try:
        data = json.loads(raw) if raw.strip() else None
    except (ValueError, UnicodeDecodeError):
        raise refuse("body", "not JSON") from None
    if not isinstance(data, dict):
        raise refuse("body", expected)
    return data


async def _body(admin: Admin) -> dict[str, Any]:
    return await json_object(admin, invalid, "a JSON object with url, and optionally statuses, token, enabled")


def audited_url(url: str) -> str:
    """The URL without its query (which may hold a key) for the audit log."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


async def list_routes(request: Request) -> Response:
    admin = await _deployment_admin(request)
    routes = admin.services.routes.routes()
    return JSONResponse({"routes": [{**r.public_json(), "status": _status(admin, r)} for r in routes]})


async def show_route(request: Request) -> Response:
    admin = await _deployment_admin(request)
    return _answer(admin, await _known(admin, path_param(request, "name")))


async def put_route(request: Request) -> Response:
    """Create or replace a route: 201 when new, 200 when replaced."""
    admin = await _deployment_admin(request)
    name = path_param(request, "name")
    body = await _body(admin)
    records, book = admin.services.store.routes, admin.services.routes
    now = admin.now.isoformat()
    route, created = await put_versioned(
        records, name,
        lambda record: from_body(name, body, Route.from_json(record) if record else None, actor=admin.actor, now=now),
        at_limit=lambda: invalid("name", f"this deployment holds its limit of {MAX_ROUTES} routes")
        if len(book) >= MAX_ROUTES else None,
        busy=Rejected(ROUTE_INVALID, "the route kept changing; try again"))
    book[name] = route.as_json()  # this node routes with it at once; the mirror follows
    await _make_consumer(admin, name)
    token = "set" if "token" in body and route.token else "removed" if "token" in body else (
        "kept" if route.token else "none")
    await admin.audit(Action.ROUTE_CREATED if created else Action.ROUTE_CHANGED, name, admin.issuer.name, {
        "url": audited_url(route.url), "statuses": list(route.statuses), "enabled": route.enabled, "token": token})
    return _answer(admin, route, 201 if created else 200)


def _worker(admin: Admin) -> RouteWorker:
    worker = admin.services.route_worker
    if worker is None:
        raise StoreUnavailable("route worker", "this node runs no route worker")
    return worker


async def _make_consumer(admin: Admin, name: str) -> None:
    try:
        await _worker(admin).add(name)
    except NatsErrors as exc:
        # Stored: every node's route worker makes the consumer when it meets the route.
        raise StoreUnavailable("route consumer", repr(exc)) from exc


async def delete_route(request: Request) -> Response:
    """Remove a route: no more deliveries to it, what waited for it is dropped."""
    admin = await _deployment_admin(request)
    services = admin.services
    route = await _known(admin, path_param(request, "name"))
    worker = _worker(admin)
    await services.store.routes.delete(route.name)
    services.routes.pop(route.name, None)
    try:
        await worker.remove(route.name)
    except NatsErrors as exc:
        # The record is gone: every node's route worker removes a consumer left over.
        raise StoreUnavailable("route consumer", repr(exc)) from exc
    await admin.audit(Action.ROUTE_REMOVED, route.name, admin.issuer.name, {"url": audited_url(route.url)})
    return JSONResponse({"route": route.public_json(), "removed": True})


async def test_route(request: Request) -> Response:
    """A link test now, from the node that answers; its outcome is recorded and answered."""
    admin = await _deployment_admin(request)
    route = await _known(admin, path_param(request, "name"))
    record = await _worker(admin).link_test(route)
    await admin.audit(Action.ROUTE_TESTED, route.name, admin.issuer.name,
                      {"ok": record["ok"], "reason": record["reason"]})
    return _answer(admin, route, link_test=record)


async def route(request: Request) -> Response:
    """/api/v1/admin/routes/{name}: GET, PUT or DELETE."""
    handler = {"PUT": put_route, "DELETE": delete_route}.get(request.method, show_route)
    return await handler(request)

"""The admin API's routes: one per path, its methods dispatched (api/admin.py, admin_tokens.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tocsin.api.admin import (
    change_org,
    change_principal,
    confirm_policy,
    create_org,
    create_principal,
    disable_org,
    disable_principal,
    list_orgs,
    list_principals,
    show_org,
    show_principal,
)
from tocsin.api.admin_tokens import create_token, list_tokens, revoke_token, rotate_token

Endpoint = Callable[[Request], Awaitable[Response]]


def _by_method(**handlers: Endpoint) -> Endpoint:
    """One endpoint for a path served by several methods (one route per path; HEAD is GET)."""

    async def endpoint(request: Request) -> Response:
        return await handlers.get(request.method, handlers["GET"])(request)

    return endpoint


def _routes() -> list[Route]:
    routes = [
        Route("/api/v1/admin/orgs", _by_method(GET=list_orgs, POST=create_org), methods=["GET", "POST"]),
        Route("/api/v1/admin/orgs/{name}", _by_method(GET=show_org, PATCH=change_org), methods=["GET", "PATCH"]),
        Route("/api/v1/admin/orgs/{name}/disable", disable_org, methods=["POST"]),
        Route("/api/v1/admin/orgs/{name}/policy/confirm", confirm_policy, methods=["POST"]),
    ]
    for kind in ("users", "clients"):
        routes += [
            Route(f"/api/v1/admin/{kind}", _by_method(GET=list_principals, POST=create_principal),
                  methods=["GET", "POST"]),
            Route(f"/api/v1/admin/{kind}/{{name}}", _by_method(GET=show_principal, PATCH=change_principal),
                  methods=["GET", "PATCH"]),
            Route(f"/api/v1/admin/{kind}/{{name}}/disable", disable_principal, methods=["POST"]),
        ]
    return routes + [
        Route("/api/v1/admin/tokens", _by_method(GET=list_tokens, POST=create_token), methods=["GET", "POST"]),
        Route("/api/v1/admin/tokens/{token_id}/revoke", revoke_token, methods=["POST"]),
        Route("/api/v1/admin/tokens/{token_id}/rotate", rotate_token, methods=["POST"]),
    ]


ROUTES = _routes()

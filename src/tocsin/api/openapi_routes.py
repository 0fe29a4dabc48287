"""The CAP forwarding routes' part of the OpenAPI document (api/cap_routes.py; docs/cap-forwarding.md)."""

from __future__ import annotations

from tocsin.api.openapi import Json, _json, _problems, _ref
from tocsin.api.openapi_admin import _op
from tocsin.delivery.routes import DEFAULT_STATUSES, MAX_TOKEN_CHARS, MAX_URL_CHARS, NAME, STATUSES
from tocsin.errors import Problem

_NAME = {"name": "name", "in": "path", "required": True,
         "schema": {"type": "string", "pattern": f"^{NAME.pattern}$"},
         "description": "The route's name: a-z, 0-9 and '-', at most 63."}


def _admin(catalog: list[Problem], op_id: str, summary: str, ok: Json, *, body: str | None = None,
           params: tuple[Json, ...] = (_NAME,), prefix: str = "route.") -> Json:
    """A deployment admin's operation, with the routes' problems (or `prefix`'s: a source's)
    in place of the accounts'."""
    operation = _op(catalog, op_id, summary, ok, body=body, params=params)
    responses = operation["responses"]
    del responses["409"]
    responses.update({"404": _problems(catalog, 404, (prefix,)), "422": _problems(catalog, 422, (prefix,))})
    if body is None:
        del responses["413"], responses["422"]
    return operation


def routes_paths(catalog: list[Problem]) -> Json:
    one = _json({"type": "object", "properties": {"route": _ref("Route"), "status": _ref("RouteStatus")}},
                "The route (never its token) and its status.")
    listing = _json({"type": "object", "properties": {"routes": {"type": "array", "items": {
        "allOf": [_ref("Route"), {"type": "object", "properties": {"status": _ref("RouteStatus")}}]}}}},
        "Every route with its status.")
    tested = _json({"type": "object", "properties": {
        "route": _ref("Route"), "status": _ref("RouteStatus"), "link_test": _ref("LinkTest")}},
        "The link test's outcome, also recorded in the route's status.")
    listed = _admin(catalog, "listRoutes", "List CAP forwarding routes (deployment admins)", {"200": listing},
                    params=())
    del listed["responses"]["404"]
    return {
        "/api/v1/admin/routes": {"get": listed},
        "/api/v1/admin/routes/{name}": {
            "get": _admin(catalog, "showRoute", "A CAP forwarding route and its status", {"200": one}),
            "put": _admin(catalog, "putRoute", "Create (201) or replace (200) a CAP forwarding route; an absent "
                          "token keeps the current one, null removes it", {"200": one, "201": one}, body="RouteInput"),
            "delete": _admin(catalog, "removeRoute", "Remove a route: its consumer and queued deliveries go",
                             {"200": _json({"type": "object", "properties": {
                                 "route": _ref("Route"), "removed": {"const": True}}}, "Removed.")}),
        },
        "/api/v1/admin/routes/{name}/test": {
            "post": _admin(catalog, "testRoute", "Post a link test (a System message signed by the deployment) now",
                           {"200": tested}),
        },
    }


def routes_schemas() -> Json:
    when = {"type": ["object", "null"], "properties": {
        "at": {"type": "string", "format": "date-time"}, "alert_id": {"type": "string"},
        "outcome": {"enum": ["retry", "refused", "expired"]}, "reason": {"type": "string"}}}
    statuses = {"type": "array", "items": {"enum": list(STATUSES)}, "minItems": 1, "uniqueItems": True}
    return {
        "RouteInput": {"type": "object", "required": ["url"], "additionalProperties": False, "properties": {
            "url": {"type": "string", "format": "uri", "maxLength": MAX_URL_CHARS,
                    "description": "http or https, with a host; no user or password, no fragment."},
            "statuses": {**statuses, "default": list(DEFAULT_STATUSES), "description": "Draft is never forwarded."},
            "token": {"type": ["string", "null"], "maxLength": MAX_TOKEN_CHARS, "pattern": "^[A-Za-z0-9._~+/-]+=*$",
                      "description": "The bearer token the downstream expects; never shown again."},
            "enabled": {"type": "boolean", "default": True}}},
        "Route": {"type": "object", "properties": {
            "name": {"type": "string"}, "url": {"type": "string"}, "statuses": statuses,
            "has_token": {"type": "boolean"}, "enabled": {"type": "boolean"},
            "created": {"type": "string"}, "created_by": {"type": "string"},
            "changed": {"type": "string"}, "changed_by": {"type": "string"}}},
        "LinkTest": {"type": ["object", "null"], "properties": {
            "at": {"type": "string", "format": "date-time"}, "ok": {"type": "boolean"}, "reason": {"type": "string"},
            "status": {"type": ["integer", "null"]}, "node": {"type": "string"}, "alert_id": {"type": "string"}}},
        "RouteStatus": {"type": "object", "properties": {
            "ok": {"type": "boolean"}, "detail": {"type": "string", "description": "What is wrong, or that it is disabled; else empty."},
            "enabled": {"type": "boolean"},
            "pending": {"type": ["integer", "null"], "description": "Deliveries waiting (null: not read yet)."},
            "last_success": when, "last_failure": when, "link_test": _ref("LinkTest"),
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}}}},
    }

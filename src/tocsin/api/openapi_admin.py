"""The admin API's part of the OpenAPI document (api/admin.py; docs/accounts.md)."""

from __future__ import annotations

from tocsin.api.openapi import _COMMON, _ISSUER, Json, _json, _problems, _ref
from tocsin.errors import Problem

_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 80}}
_TOKEN_ID = {"name": "token_id", "in": "path", "required": True,
             "schema": {"type": "string", "examples": ["tok_0123456789abcdef", "self"]},
             "description": "A token's public id, or `self` for the token of the request."}
_ORG_QUERY = {"name": "org", "in": "query", "required": False, "schema": {"type": "string"}}


def _op(catalog: list[Problem], op_id: str, summary: str, ok: Json, *, body: str | None = None,
        params: tuple[Json, ...] = (), extra: Json | None = None) -> Json:
    operation: Json = {
        "tags": ["admin"], "operationId": op_id, "summary": summary, "security": _ISSUER,
        "responses": {
            **ok,
            "401": _problems(catalog, 401, ("auth.",)),
            "403": _problems(catalog, 403, ("auth.",)),
            "404": _problems(catalog, 404, ("accounts.",)),
            "409": _problems(catalog, 409, ("accounts.",)),
            "413": _problems(catalog, 413, ("request.",)),
            "422": _problems(catalog, 422, ("accounts.",)),
            "503": _problems(catalog, 503, ("store.",)),
            **(extra or {}),
            **_COMMON,
        },
    }
    if params:
        operation["parameters"] = list(params)
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    return operation


def admin_paths(catalog: list[Problem]) -> Json:
    """Every /api/v1/admin path; each needs the admin role (403 auth.role-required)."""
    org = _json({"type": "object", "properties": {"organisation": _ref("Organisation")}}, "The organisation.")
    proposed = _json({"type": "object", "properties": {
        "organisation": _ref("Organisation"), "state": {"const": "proposed"},
        "code": {"const": "accounts.policy-needs-second-admin"}, "detail": {"type": "string"}}},
        "Stored, but the approval policy change waits for a second admin (its `proposed`).")
    orgs = _json({"type": "object", "properties": {"organisations": {"type": "array", "items": _ref("Organisation")}}},
                 "The organisations this admin may see.")
    paths: Json = {
        "/api/v1/admin/orgs": {
            "get": _op(catalog, "listOrgs", "List organisations", {"200": orgs}),
            "post": _op(catalog, "createOrg", "Create an organisation (deployment admins)",
                        {"201": org}, body="OrganisationInput"),
        },
        "/api/v1/admin/orgs/{name}": {
            "get": _op(catalog, "showOrg", "An organisation", {"200": org}, params=(_NAME,)),
            "patch": _op(catalog, "changeOrg", "Change an organisation; an approval policy change is proposed",
                         {"200": org, "202": proposed}, body="OrganisationInput", params=(_NAME,)),
        },
        "/api/v1/admin/orgs/{name}/disable": {
            "post": _op(catalog, "disableOrg", "Disable an organisation: its tokens are refused",
                        {"200": org}, params=(_NAME,)),
        },
        "/api/v1/admin/orgs/{name}/policy/confirm": {
            "post": _op(catalog, "confirmPolicy", "Confirm the proposed approval policy (another admin)",
                        {"200": org}, body="PolicyConfirmation", params=(_NAME,)),
        },
        "/api/v1/admin/tokens": {
            "get": _op(catalog, "listTokens", "List tokens (never their secret or digest)", {"200": _json(
                {"type": "object", "properties": {"tokens": {"type": "array", "items": _ref("TokenInfo")}}}, "Tokens.")},
                params=(_ORG_QUERY, {"name": "principal", "in": "query", "required": False, "schema": {"type": "string"}})),
            "post": _op(catalog, "createToken", "Create a token; the secret is in this answer only",
                        {"201": _json(_ref("NewToken"), "The token.")}, body="TokenInput"),
        },
        "/api/v1/admin/tokens/{token_id}/revoke": {
            "post": _op(catalog, "revokeToken", "Revoke a token on every node", {"200": _json(
                {"type": "object", "properties": {"token": _ref("TokenInfo")}}, "The revoked token.")},
                params=(_TOKEN_ID,)),
        },
        "/api/v1/admin/tokens/{token_id}/rotate": {
            "post": _op(catalog, "rotateToken", "A new token in place of this one, which is revoked",
                        {"201": _json(_ref("NewToken"), "The new token.")}, params=(_TOKEN_ID,)),
        },
    }
    for kind, title in (("users", "User"), ("clients", "Client")):
        one = _json({"type": "object", "properties": {kind[:-1]: _ref("Principal")}}, f"The {kind[:-1]}.")
        paths[f"/api/v1/admin/{kind}"] = {
            "get": _op(catalog, f"list{title}s", f"List {kind}", {"200": _json(
                {"type": "object", "properties": {kind: {"type": "array", "items": _ref("Principal")}}}, title + "s.")},
                params=(_ORG_QUERY,)),
            "post": _op(catalog, f"create{title}", f"Create a {kind[:-1]}", {"201": one}, body="PrincipalInput"),
        }
        paths[f"/api/v1/admin/{kind}/{{name}}"] = {
            "get": _op(catalog, f"show{title}", f"A {kind[:-1]}", {"200": one}, params=(_NAME,)),
            "patch": _op(catalog, f"change{title}", f"Change a {kind[:-1]}'s roles", {"200": one},
                         body="PrincipalInput", params=(_NAME,)),
        }
        paths[f"/api/v1/admin/{kind}/{{name}}/disable"] = {
            "post": _op(catalog, f"disable{title}", f"Disable a {kind[:-1]}: its tokens are refused", {"200": one},
                        params=(_NAME,)),
        }
    return paths


def admin_schemas() -> Json:
    strings = {"type": "array", "items": {"type": "string"}}
    approval = {"type": "object", "properties": {"mode": {"enum": ["always", "above", "none"]},
                                                 "severity": {"type": "string"}}}
    territory = {"type": ["object", "null"], "description": "null: anywhere. CAP texts, and gazetteer codes "
                 "as SCHEME:CODE (docs/areas.md).", "properties": {"areas": strings, "polygons": strings, "circles": strings}}
    org_fields = {
        "name": {"type": "string"}, "senders": strings, "statuses": strings, "severities": strings,
        "approval": approval, "territory": territory, "limits": {"type": "object"},
        "alerts_per_min": {"type": "integer", "minimum": 0, "description": "0: no limit; per node."},
        "delegated": strings,
    }
    return {
        "OrganisationInput": {"type": "object", "additionalProperties": False,
                              "properties": {**org_fields, "disabled": {"type": "boolean"}}},
        "Organisation": {"type": "object", "properties": {
            **org_fields, "proposed": {"type": ["object", "null"]}, "state": {"enum": ["active", "disabled"]},
            "admin": {"type": "boolean"}, "probe": {"type": "boolean"}, "created": {"type": "string"}}},
        "PolicyConfirmation": {"type": "object", "additionalProperties": False, "properties": {"approval": approval},
                               "description": "Optional: the policy being confirmed; another proposal is refused."},
        "PrincipalInput": {"type": "object", "additionalProperties": False, "properties": {
            "name": {"type": "string"}, "org": {"type": "string"}, "roles": strings, "disabled": {"type": "boolean"}}},
        "Principal": {"type": "object", "properties": {
            "id": {"type": "string", "examples": ["user:alice"]}, "org": {"type": "string"}, "roles": strings,
            "state": {"enum": ["active", "disabled"]}, "created": {"type": "string"}}},
        "TokenInput": {"type": "object", "additionalProperties": False, "properties": {
            "principal": {"type": "string"}, "org": {"type": "string"}, "roles": strings,
            "expires": {"type": ["string", "null"], "format": "date-time"}, "label": {"type": "string"}}},
        "TokenInfo": {"type": "object", "properties": {
            "id": {"type": "string"}, "org": {"type": "string"}, "principal": {"type": "string"}, "roles": strings,
            "created": {"type": "string"}, "expires": {"type": ["string", "null"]},
            "revoked": {"type": ["string", "null"]}, "label": {"type": "string"}}},
        "NewToken": {"allOf": [_ref("TokenInfo"), {"type": "object", "properties": {
            "token": {"type": "string", "description": "The secret, shown once."}}}]},
    }

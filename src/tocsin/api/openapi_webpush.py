"""WEBPUSH: the Web Push app's public reads in the OpenAPI document (api/push_public.py;
docs/webpush.md)."""

from __future__ import annotations

from tocsin.api.openapi import _ALERT_ID_PARAM, _COMMON, Json, _header, _json, _problems, _ref
from tocsin.errors import Problem


def webpush_paths(catalog: list[Problem]) -> Json:
    cache = {"Cache-Control": _header("public: the same for every client.")}
    return {
        "/api/v1/webpush/key": {"get": {
            "tags": ["device"], "operationId": "webpushKey",
            "summary": "The deployment's VAPID public key, for pushManager.subscribe({applicationServerKey})",
            "responses": {
                "200": _json(_ref("WebPushKey"), "Cache-Control: public, max-age=86400.", cache),
                "422": _problems(catalog, 422, ("device.channel",)), **_COMMON}}},
        "/api/v1/events/{alert_id}": {"get": {
            "tags": ["device"], "operationId": "event",
            "summary": "An alert active on this node, exactly as the SSE stream sends it",
            "description": "Where a push pointer sends the app: check the CAP's sha256 against the pointer's, "
                           "then `sig` over `cap` with the deployment key (docs/webpush.md).",
            "parameters": [_ALERT_ID_PARAM],
            "responses": {
                "200": _json(_ref("AlertEvent"), "Cache-Control: public, max-age=60.", cache),
                "404": _problems(catalog, 404, ("event.",)), **_COMMON}}},
    }


def webpush_schemas() -> Json:
    string = {"type": "string"}
    return {
        "WebPushKey": {"type": "object", "required": ["publicKey"], "properties": {
            "publicKey": {"type": "string", "pattern": "^[A-Za-z0-9_-]{87}$",
                          "description": "The uncompressed P-256 point (65 bytes), base64url without padding."},
            "userVisibleOnly": {"const": True},
            "register": {"type": "object", "properties": {
                "method": {"const": "POST"}, "path": {"const": "/api/v1/devices"}, "channel": {"const": "webpush"}}}}},
        "AlertEvent": {"type": "object", "required": ["seq", "event_id", "id", "kid", "sig", "cap"], "properties": {
            "seq": {"type": "integer"}, "event_id": string, "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            "kid": string, "sig": {"type": "string", "description": "Ed25519 over the bytes of `cap` (UTF-8)."},
            "cap": {"type": "string", "description": "The signed CAP XML."}}},
    }

"""The relayed sources' part of the OpenAPI document (api/sources.py; docs/sources.md)."""

from __future__ import annotations

from tocsin.api.openapi import Json, _json, _ref
from tocsin.api.openapi_routes import _NAME, _admin
from tocsin.delivery.routes import MAX_URL_CHARS
from tocsin.errors import Problem
from tocsin.sources.model import (
    MAX_INTERVAL_S,
    MAX_KEY_CHARS,
    MAX_KEYS,
    MAX_SENDERS,
    MIN_INTERVAL_S,
    SIGNATURE_POLICIES,
    STATUSES,
)

_SOURCE_NAME = {**_NAME, "description": "The source's name: a-z, 0-9 and '-', at most 63."}


def sources_paths(catalog: list[Problem]) -> Json:
    def admin(op_id: str, summary: str, ok: Json, **options: object) -> Json:
        return _admin(catalog, op_id, summary, ok, prefix="source.", params=(_SOURCE_NAME,), **options)  # type: ignore[arg-type]

    one = _json({"type": "object", "properties": {"source": _ref("Source"), "status": _ref("SourceStatus")}},
                "The source and its status.")
    listing = _json({"type": "object", "properties": {"sources": {"type": "array", "items": {
        "allOf": [_ref("Source"), {"type": "object", "properties": {"status": _ref("SourceStatus")}}]}}}},
        "Every source with its status.")
    listed = _admin(catalog, "listSources", "List relayed CAP sources (deployment admins)", {"200": listing},
                    params=(), prefix="source.")
    del listed["responses"]["404"]
    return {
        "/api/v1/admin/sources": {"get": listed},
        "/api/v1/admin/sources/{name}": {
            "get": admin("showSource", "A relayed CAP source and its status", {"200": one}),
            "put": admin("putSource", "Create (201) or replace (200) a relayed CAP source", {"200": one, "201": one},
                         body="SourceInput"),
            "delete": admin("removeSource", "Remove a source: no more polls; what it relayed stays",
                            {"200": _json({"type": "object", "properties": {
                                "source": _ref("Source"), "removed": {"const": True}}}, "Removed.")}),
        },
    }


def sources_schemas() -> Json:
    when = {"type": ["object", "null"], "properties": {"at": {"type": "string", "format": "date-time"}}}
    statuses = {"type": "array", "items": {"enum": list(STATUSES)}, "minItems": 1, "uniqueItems": True}
    fields: Json = {
        "url": {"type": "string", "format": "uri", "maxLength": MAX_URL_CHARS,
                "description": "The Atom or RSS feed: http or https, with a host; no user or password."},
        "interval_s": {"type": "number", "minimum": MIN_INTERVAL_S, "maximum": MAX_INTERVAL_S, "default": 60},
        "signatures": {"enum": list(SIGNATURE_POLICIES), "default": SIGNATURE_POLICIES[0]},
        "keys": {"type": "array", "maxItems": MAX_KEYS, "items": {"type": "string", "maxLength": MAX_KEY_CHARS},
                 "description": "PEM certificates or public keys a require-signed CAP must verify with."},
        "senders": {"type": "array", "minItems": 1, "maxItems": MAX_SENDERS, "items": {"type": "string"},
                    "default": ["*"]},
        "statuses": {**statuses, "default": list(STATUSES)},
        "territory": {"type": ["object", "null"], "description": "Where it may alert: {areas, polygons, circles}."},
        "enabled": {"type": "boolean", "default": True},
    }
    return {
        "SourceInput": {"type": "object", "required": ["url"], "additionalProperties": False, "properties": fields},
        "Source": {"type": "object", "properties": {
            "name": {"type": "string"}, **fields, "created": {"type": "string"}, "created_by": {"type": "string"},
            "changed": {"type": "string"}, "changed_by": {"type": "string"}}},
        "SourceStatus": {"type": "object", "properties": {
            "state": {"enum": ["new", "ok", "failing", "open", "disabled"]},
            "consecutive_errors": {"type": "integer"}, "next_poll_at": {"type": ["number", "null"]},
            "last_poll": {"type": ["object", "null"]}, "last_success": when,
            "last_alert": {"type": ["object", "null"]}, "last_error": {"type": ["object", "null"]},
            "last_refusal": {"type": ["object", "null"]},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "etag": {"type": ["string", "null"]}, "last_modified": {"type": ["string", "null"]}}},
    }

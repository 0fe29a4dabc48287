"""The OpenAPI 3.1 document of the HTTP API as built, served at /openapi.json.

Problem codes come from the catalog (`tocsin.errors`) and the JSON form of CAP from
`tocsin.cap.schema`, so neither can drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tocsin import errors
from tocsin.api.devices import MAX_LANGUAGES
from tocsin.settings import Settings
from tocsin.cap.from_json import EXTENSIONS_KEY
from tocsin.cap.schema import ALERT, AREA, INFO, RESOURCE, VALUE_PAIR, ComplexType, Field, Lexical
from tocsin.errors import Problem
from tocsin.geo.cells import CELL_RESOLUTION

Json = dict[str, Any]

# Alert elements whose JSON value may be a list of strings or the CAP string (cap/from_json.py).
_CAP_LIST_TEXTS = ("references", "addresses", "incidents")
_CAP_TYPES: tuple[tuple[ComplexType, str], ...] = (
    (ALERT, "CapAlert"), (INFO, "CapInfo"), (AREA, "CapArea"),
    (RESOURCE, "CapResource"), (VALUE_PAIR, "CapValuePair"),
)
# CAP 1.2 §3.3.2: "2002-05-24T16:49:00-07:00"; no Z, no fractions.
_CAP_DATETIME = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$"
_ALERT_ID = {
    "type": "string", "pattern": "^[0-9a-f]{32}$",
    "description": "The first 32 hex digits of sha256(sender + LF + identifier).",
}


def problem_catalog() -> list[Problem]:
    """Every catalog problem, once, in declaration order."""
    found: dict[str, Problem] = {}
    for value in vars(errors).values():
        if isinstance(value, Problem):
            found.setdefault(value.code, value)
    return list(found.values())


def document(base_url: str) -> Json:
    """The whole OpenAPI 3.1 document, with `base_url` as its server."""
    from tocsin.api.openapi_admin import admin_paths, admin_schemas  # it uses this module's builders
    from tocsin.api.openapi_areas import areas_paths, areas_schemas  # GAZ
    from tocsin.api.openapi_progress import progress_schemas, receipts_paths  # PROGRESS
    from tocsin.api.openapi_webpush import webpush_paths, webpush_schemas  # WEBPUSH
    from tocsin.api.openapi_routes import routes_paths, routes_schemas  # ROUTES
    from tocsin.api.openapi_fpas import fpas_paths, fpas_schemas  # FPAS
    from tocsin.api.openapi_sources import sources_paths, sources_schemas  # SOURCES
    from tocsin.api.openapi_feeds import feeds_paths  # FEEDS

    catalog = problem_catalog()
    spec: Json = {
        "openapi": "3.1.0",
        "info": {
            "title": "tocsin",
            "version": "1",
            "summary": "Public emergency alerts: CAP 1.2 in, every device in the area out.",
            "description": "Errors are application/problem+json (RFC 9457) with a stable `code`; "
            "`x-problem-codes` lists the whole catalog. See docs/api.md.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": base_url}],
        "tags": [
            {"name": "issuer", "description": "Issuing alerts and reading them back."},
            {"name": "device", "description": "Registering devices and receiving alerts live."},
            {"name": "public", "description": "Keys, health, metrics, this document."},
            {"name": "lifecycle", "description": "Approval, rejection, correction, drafts (docs/lifecycle.md)."},
            {"name": "audit", "description": "The append-only audit log, read only (docs/audit.md)."},
            {"name": "admin", "description": "Organisations, users, API clients, tokens (admin role)."},
            {"name": "fpas", "description": "The FOSS Public Alert Server client API (docs/fpas.md)."},
        ],
        "paths": _merge(_issuer_paths(catalog), _preview_paths(catalog), _lifecycle_paths(catalog),
                        _device_paths(catalog), _public_paths(), admin_paths(catalog), areas_paths(catalog),
                        webpush_paths(catalog), routes_paths(catalog), receipts_paths(catalog),
                        fpas_paths(catalog), sources_paths(catalog), feeds_paths(catalog)),
        "components": _components(catalog),
        "x-problem-codes": [{"code": p.code, "status": p.status, "title": p.title} for p in catalog],
    }
    spec["components"]["schemas"].update(admin_schemas())
    spec["components"]["schemas"].update(areas_schemas())
    spec["components"]["schemas"].update(progress_schemas())
    spec["components"]["schemas"].update(webpush_schemas())  # WEBPUSH
    spec["components"]["schemas"].update(routes_schemas())
    spec["components"]["schemas"].update(fpas_schemas())  # FPAS
    spec["components"]["schemas"].update(sources_schemas())  # SOURCES
    return spec


# ---------------------------------------------------------------------------------------
# Small builders
# ---------------------------------------------------------------------------------------


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Json, description: str, headers: Json | None = None) -> Json:
    response: Json = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _problems(catalog: list[Problem], status: int, prefixes: tuple[str, ...], headers: Json | None = None) -> Json:
    """A problem+json response listing the catalog codes of this status under these prefixes."""
    codes = [p.code for p in catalog if p.status == status and p.code.startswith(prefixes)]
    response: Json = {
        "description": "Problem: " + ", ".join(f"`{code}`" for code in codes),
        "content": {"application/problem+json": {"schema": _ref("Problem")}},
        "x-problem-codes": codes,
    }
    if headers:
        response["headers"] = headers
    return response


def _header(description: str, **schema: Any) -> Json:
    return {"description": description, "schema": schema or {"type": "string"}}


_RETRY_AFTER = {"Retry-After": _header("Seconds to wait before retrying; a retry never stores twice.", type="integer")}
_LOCATION = {"Location": _header("Path of the stored alert.")}
# Every operation can meet the listener's refusals (api/listener.py) and a 500.
_COMMON = {
    "408": {"$ref": "#/components/responses/Timeout"},
    "431": {"$ref": "#/components/responses/HeadersTooLarge"},
    "500": {"$ref": "#/components/responses/Internal"},
}
# The issuer token only as a header: a token in a URL ends up in logs (api/auth.py `bearer`).
_ISSUER: list[Json] = [{"issuerToken": []}]
_DEVICE: list[Json] = [{"deviceToken": []}, {"deviceTokenQuery": []}]
_ALERT_ID_PARAM = {"name": "alert_id", "in": "path", "required": True, "schema": _ALERT_ID}
_CAP_XML = {"schema": {"type": "string", "contentMediaType": "application/cap+xml"}}
# An alert to issue or preview: CAP XML, or the JSON form.
_ALERT_BODY = {"required": True, "content": {"application/cap+xml": _CAP_XML, "application/xml": _CAP_XML,
                                             "text/xml": _CAP_XML, "application/json": {"schema": _ref("CapAlert")}}}


# ---------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------


def _merge(*groups: Json) -> Json:
    """Path groups into one, the operations of a path shared by two groups together."""
    merged: Json = {}
    for group in groups:
        for path, operations in group.items():
            merged.setdefault(path, {}).update(operations)
    return merged


def _issuer_paths(catalog: list[Problem]) -> Json:
    xml = {"schema": {"type": "string", "contentMediaType": "application/cap+xml"}}
    post = {
        "tags": ["issuer"],
        "operationId": "postAlert",
        "summary": "Issue an alert",
        "description": "Answered only once JetStream acknowledged the alert and this node's ledger "
        "holds it. Identity is CAP sender + identifier: the same alert sent again gets 200 with "
        "the stored one; other content under the same identity gets 409. A body above "
        "TOCSIN_MAX_CAP_BYTES is refused before parsing; an alert whose stored form (signed CAP, "
        "its cover and headers) passes TOCSIN_MAX_STORED_BYTES is 413 alert.stored-too-large. Areas, "
        "polygons, circles, points and extent are limited per alert (TOCSIN_MAX_ALERT_*, raised per "
        "issuer account): 422 policy.too-many-shapes or policy.area-too-large, the detail naming the "
        "area (info[0].area[1]); a cover not computed within TOCSIN_COVER_DEADLINE_S is 422 "
        "policy.cover-too-slow. Nothing refused is stored. A full alert stream is 507 store.full, "
        "which no retry can help.",
        "security": _ISSUER,
        "requestBody": _ALERT_BODY,
        "responses": {
            "201": _json(_ref("AlertDescription"), "Stored by this request.", _LOCATION),
            "200": _json(_ref("AlertDescription"), "Already stored (or submitted) with the same content.", _LOCATION),
            "202": _json(_ref("Submission"), "Vetted and waiting for approval by another person "
                         "(docs/lifecycle.md); not in the alert stream.", _LOCATION),
            "400": _problems(catalog, 400, ("request.",)),
            "401": _problems(catalog, 401, ("auth.",)),
            "403": _problems(catalog, 403, ("auth.", "policy.")),
            "409": _problems(catalog, 409, ("alert.", "approval."), _LOCATION),
            "413": _problems(catalog, 413, ("request.", "cap.", "alert.")),
            "415": _problems(catalog, 415, ("request.",)),
            "422": _problems(catalog, 422, ("cap.", "policy.")),
            "429": _problems(catalog, 429, ("policy.",), _RETRY_AFTER),  # the organisation's rate
            "503": _problems(catalog, 503, ("store.", "request.", "accept."), _RETRY_AFTER),
            "507": _problems(catalog, 507, ("store.",)),
            **_COMMON,
        },
    }
    get = {
        "tags": ["issuer"],
        "operationId": "getAlert",
        "summary": "An alert, its state and this node's delivery progress",
        "description": "No token is required for a published alert. A submission (pending, rejected, "
        "expired, refused) is shown only to a token of its organisation, as a Submission with its alert; "
        "a token that is sent must be valid (401 otherwise), even for a published alert.",
        "parameters": [_ALERT_ID_PARAM],
        "responses": {
            "200": _json(_ref("AlertDetail"), "The alert."),
            "401": _problems(catalog, 401, ("auth.",)),
            "404": _problems(catalog, 404, ("alert.",)),
            "503": _problems(catalog, 503, ("store.", "request."), _RETRY_AFTER),
            **_COMMON,
        },
    }
    get_xml = {
        "tags": ["issuer"],
        "operationId": "getAlertXml",
        "summary": "The signed CAP 1.2 XML of an alert",
        "description": "Exactly the bytes the signature covers. No token is required.",
        "parameters": [_ALERT_ID_PARAM],
        "responses": {
            "200": {
                "description": "CAP 1.2 XML, as tocsin rendered and signed it.",
                "content": {"application/cap+xml": xml},
                "headers": {
                    "Tocsin-Signature": _header("Ed25519 signature of the body, base64url without padding."),
                    "Tocsin-Key-Id": _header("kid of the key in /.well-known/tocsin/keys."),
                },
            },
            "404": _problems(catalog, 404, ("alert.",)),
            "503": _problems(catalog, 503, ("store.", "request."), _RETRY_AFTER),
            **_COMMON,
        },
    }
    return {
        "/api/v1/alerts": {"post": post},
        "/api/v1/alerts/{alert_id}.xml": {"get": get_xml},
        "/api/v1/alerts/{alert_id}": {"get": get},
    }


# -- The reach preview (PREVIEW, issue 12; api/preview.py) --------------------------------


def _preview_paths(catalog: list[Problem]) -> Json:
    post = {
        "tags": ["issuer"],
        "operationId": "previewAlert",
        "summary": "Whom a draft alert would reach; nothing is stored",
        "description": "The body, content types, limits, token and roles are those of POST /api/v1/alerts, "
        "and so are the refusals: the draft is vetted as issuing vets it (geocodes resolved, policy, "
        "limits, territory, references). The answer gives the alert as vetted, its cover (an Update or "
        "Cancel without areas: its references' covers), the registered devices reached by channel and "
        "preferred language, the devices connected now to the worker that answered, the area in km² "
        "(the union on the sphere), each info's text against the cell broadcast and WEA budgets, the "
        "signed alert's size against a 4 KB push payload, and warnings with stable codes. Nothing is "
        "published, recorded, submitted or audited, and a preview takes nothing from the organisation's "
        "alert rate; it has its own, TOCSIN_PREVIEWS_PER_ORG_PER_MIN per organisation on each node "
        "(429 preview.rate-limited), and one preview at a time per worker (503 preview.busy: retry, "
        "or ask another node). See docs/api.md, \"Reach preview\".",
        "security": _ISSUER,
        "requestBody": _ALERT_BODY,
        "responses": {
            "200": _json(_ref("ReachPreview"), "The preview; nothing was stored."),
            "400": _problems(catalog, 400, ("request.",)),
            "401": _problems(catalog, 401, ("auth.",)),
            "403": _problems(catalog, 403, ("auth.", "policy.")),
            "413": _problems(catalog, 413, ("request.", "cap.", "alert.")),
            "409": _problems(catalog, 409, ("alert.",), _LOCATION),
            "415": _problems(catalog, 415, ("request.",)),
            "422": _problems(catalog, 422, ("cap.", "policy.", "area.")),
            "429": _problems(catalog, 429, ("preview.",), _RETRY_AFTER),
            "503": _problems(catalog, 503, ("store.", "request.", "preview."), _RETRY_AFTER),
            **_COMMON,
        },
    }
    return {"/api/v1/alerts/preview": {"post": post}}


def _preview_schemas() -> Json:
    integer, number, string = {"type": "integer"}, {"type": "number"}, {"type": "string"}
    counts = {"type": "object", "additionalProperties": integer}
    use = {"type": "object", "required": ["length", "budget", "unit", "over"], "properties": {
        "length": integer, "budget": integer, "unit": string, "over": {"type": "boolean"},
        "encoding": {"type": "string", "enum": ["gsm7", "ucs2"], "description": "Cell broadcast only."},
        "ucs2Because": {"type": ["object", "null"], "description": "Cell broadcast only: the first character "
                        "outside the GSM 7-bit default alphabet.", "properties": {
                            "character": string, "index": integer, "codePoint": string}}}}
    per_info = {"type": "object", "properties": {"info": integer, "language": string, "km2": number}}
    warning = {"type": "object", "required": ["code", "detail"], "properties": {
        "code": {"type": "string", "enum": ["already-issued", "area-larger-than-territory", "over-budget",
                                            "language-not-offered", "no-device-reached", "actual-alert"]},
        "detail": string, "seq": integer, "ratio": number, "channel": {"type": "string", "enum": ["cellBroadcast", "wea", "push"]},
        "info": {"type": ["integer", "null"]}, "language": string, "devices": integer}}
    return {"ReachPreview": {"type": "object", "required": [
        "published", "id", "status", "msgType", "alert", "cover", "reach", "area", "territory", "budgets", "warnings"],
        "properties": {
            "published": {"const": False}, "id": _ALERT_ID, "status": string, "msgType": string,
            "alert": _ref("CapAlert"),
            "cover": {"type": "object", "properties": {
                "from": {"type": "string", "enum": ["areas", "references", "areas+references", "everywhere", "none"]},
                "cells": integer}},
            "reach": {"type": "object", "properties": {
                "devices": integer, "byChannel": counts, "byLanguage": counts,
                "connectedHere": {"type": "object", "properties": {
                    "node": string, "devices": integer, "sse": integer, "ws": integer}}}},
            "area": {"type": "object", "properties": {"km2": number, "text": string,
                                                      "infos": {"type": "array", "items": per_info}}},
            "territory": {"type": ["object", "null"], "properties": {"km2": number, "ratio": {"type": ["number", "null"]}}},
            "budgets": {"type": "object", "properties": {
                "infos": {"type": "array", "items": {"type": "object", "properties": {
                    "info": integer, "language": string, "cellBroadcast": use, "wea": use}}},
                "push": use}},
            "warnings": {"type": "array", "items": warning},
        }}}


# -- The lifecycle and the audit log (LIFECYCLE, issue 11) -------------------------------


def _operation(catalog: list[Problem], op_id: str, summary: str, description: str, ok: Json,
               problems: Mapping[int, tuple[str, ...]], **extra: Any) -> Json:
    responses: Json = dict(ok)
    for status, prefixes in problems.items():
        responses[str(status)] = _problems(catalog, status, prefixes)
    responses["503"] = _problems(catalog, 503, ("store.", "request."), _RETRY_AFTER)
    responses.update(_COMMON)
    return {"tags": [extra.pop("tag", "lifecycle")], "operationId": op_id, "summary": summary,
            "description": description, "security": _ISSUER, "responses": responses, **extra}


def _query_param(name: str, description: str, **schema: Any) -> Json:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


def _lifecycle_paths(catalog: list[Problem]) -> Json:
    auth = {401: ("auth.",), 403: ("auth.",)}
    query = _query_param
    listing = _operation(
        catalog, "listAlerts", "Submissions by state (`?state=pending`)",
        "The caller's organisation's (an admin: every one, or `org`), oldest first, at most `limit`; "
        "`links.next` goes on after the last.",
        {"200": _json(_ref("SubmissionPage"), "A page of submissions.")}, {400: ("request.",), **auth},
        parameters=[query("state", "pending, publishing, rejected, expired or refused"),
                    query("limit", "1 to 100 (50)", type="integer"), query("after", "an alert id of the last page"),
                    query("org", "an admin's filter")])
    decision = {"description": "A reason (required to reject).", "required": False,
                "content": {"application/json": {"schema": {"type": "object", "properties": {"reason": {"type": "string"}}}}}}
    approve = _operation(
        catalog, "approveAlert", "Approve a pending alert: publish it",
        "Approver role of its organisation. For an Actual alert the approver must not be its author "
        "(403 approval.self-approval). Published through the accept path with the author's rights as "
        "submitted, so every check runs again; two approvals at once publish once (the second gets 409).",
        {"201": _json(_ref("AlertDescription"), "Published.", _LOCATION)},
        {**auth, 403: ("auth.", "approval.", "policy."), 404: ("approval.",), 409: ("approval.", "alert."),
         422: ("cap.", "policy.")}, parameters=[_ALERT_ID_PARAM])
    reject = _operation(
        catalog, "rejectAlert", "Reject a pending alert, with a reason",
        "Approver role of its organisation. The submission stays readable (state rejected) for "
        "TOCSIN_DECIDED_KEEP_S, then leaves the bucket.",
        {"200": _json(_ref("Submission"), "Rejected.")},
        {400: ("request.",), **auth, 404: ("approval.",), 409: ("approval.",), 422: ("approval.",)},
        parameters=[_ALERT_ID_PARAM], requestBody=decision)
    correct = _operation(
        catalog, "correctAlert", "Publish at once the \"false alert, disregard\" Cancel of an alert",
        "Author role of the alert's organisation (or one delegated). A CAP Cancel referencing the alert, "
        "its infos marked with the parameter tocsin:correction = false-alert, texts from the correction "
        "templates, live for TOCSIN_CORRECTION_LIFETIME_S. Never waits for approval; a retry is 200.",
        {"201": _json(_ref("AlertDescription"), "Published.", _LOCATION),
         "200": _json(_ref("AlertDescription"), "Already published.", _LOCATION)},
        {**auth, 403: ("auth.", "policy."), 404: ("alert.",), 409: ("alert.",), 422: ("cap.", "policy.")},
        parameters=[_ALERT_ID_PARAM])
    draft_body = {"required": True, "content": {"application/json": {"schema": _ref("Draft")}}}
    draft_id = {"name": "draft_id", "in": "path", "required": True, "schema": {"type": "string"}}
    drafts = {
        "post": _operation(catalog, "saveDraft", "Save a draft (new, or replacing `id`)",
                           "Author role. At most TOCSIN_MAX_DRAFTS_PER_ORG per organisation, each kept "
                           "TOCSIN_DRAFT_KEEP_S after its last save. Never checked nor published from here.",
                           {"201": _json(_ref("Draft"), "Saved.")},
                           {**auth, 409: ("draft.",), 413: ("request.",), 422: ("draft.",)}, requestBody=draft_body),
        "get": _operation(catalog, "listDrafts", "The organisation's drafts (names, no alert)", "Author role.",
                          {"200": _json({"type": "object", "properties": {"drafts": {"type": "array"}}}, "Drafts.")},
                          auth),
    }
    draft = {
        "get": _operation(catalog, "getDraft", "A draft", "Author role of its organisation.",
                          {"200": _json(_ref("Draft"), "The draft.")}, {**auth, 404: ("draft.",)},
                          parameters=[draft_id]),
        "delete": _operation(catalog, "deleteDraft", "Forget a draft", "Author role of its organisation.",
                             {"204": {"description": "Deleted."}}, {**auth, 404: ("draft.",)}, parameters=[draft_id]),
    }
    templates_body = {"required": True, "content": {"application/json": {"schema": _ref("CorrectionTemplates")}}}
    templates = {
        "get": _operation(catalog, "getCorrectionTemplates", "The correction templates", "Admin role.",
                          {"200": _json(_ref("CorrectionTemplates"), "The templates.")}, auth),
        "put": _operation(catalog, "putCorrectionTemplates", "Replace the correction templates",
                          "Admin role; audited (policy-changed).",
                          {"200": _json(_ref("CorrectionTemplates"), "The templates now.")},
                          {**auth, 413: ("request.",), 422: ("correction.",)}, requestBody=templates_body),
    }
    audit = _operation(
        catalog, "getAudit", "Audit entries, oldest first",
        "An admin reads every organisation's entries, anyone else its own. Filters combine; "
        "`links.next` goes on after the last entry read. Nothing in the API changes or deletes an entry.",
        {"200": _json(_ref("AuditPage"), "A page of entries.")}, {400: ("audit.",), 401: ("auth.",)}, tag="audit",
        parameters=[query("action", "an action (repeatable)"), query("subject", "an alert id or account name"),
                    query("alert", "the same as subject"), query("actor", "user:..., client:..., node:..."),
                    query("org", "an organisation (an admin's filter)"), query("after", "a seq", type="integer"),
                    query("limit", "1 to 200 (50)", type="integer")])
    return {
        "/api/v1/alerts": {"get": listing},
        "/api/v1/alerts/{alert_id}/approve": {"post": approve},
        "/api/v1/alerts/{alert_id}/reject": {"post": reject},
        "/api/v1/alerts/{alert_id}/correct": {"post": correct},
        "/api/v1/drafts": drafts,
        "/api/v1/drafts/{draft_id}": draft,
        "/api/v1/admin/correction-templates": templates,
        "/api/v1/audit": {"get": audit},
    }


def _lifecycle_schemas() -> Json:
    string = {"type": "string"}
    submission = {"type": "object", "required": ["id", "state", "org", "author", "status"], "properties": {
        "id": _ALERT_ID, "state": {"type": "string", "enum": ["pending", "publishing", "rejected", "expired", "refused"]},
        "org": string, "author": string, "status": string, "submittedAt": string, "expires": string,
        "decidedBy": string, "decidedAt": string, "reason": string,
        "alert": _ref("CapAlert"), "links": {"type": "object"}}}
    texts = {"type": "object", "required": ["event", "headline", "description", "instruction"],
             "properties": {k: string for k in ("event", "headline", "description", "instruction")}}
    entry = {"type": "object", "properties": {
        "seq": {"type": "integer"}, "action": string, "subject": string, "actor": string, "org": string,
        "at": string, "source": string, "detail": {"type": "object"}}}
    return {
        "Submission": submission,
        "SubmissionPage": {"type": "object", "properties": {"alerts": {"type": "array", "items": submission},
                                                            "links": {"type": "object"}}},
        "Draft": {"type": "object", "required": ["name", "alert"], "properties": {
            "id": string, "name": string, "org": string, "savedBy": string, "savedAt": string,
            "alert": {"type": ["object", "string"],
                      "description": "The CAP alert as JSON or its XML as text, kept as sent (not checked)."}}},
        "CorrectionTemplates": {"type": "object", "required": ["templates"], "properties": {
            "templates": {"type": "object", "additionalProperties": texts}}},
        "AuditPage": {"type": "object", "properties": {"entries": {"type": "array", "items": entry},
                                                       "links": {"type": "object"}}},
    }


_STREAM_TEXT = """Server-Sent Events. The stream opens with `retry: 2000`, then replays every active
(unexpired) alert for the device's cells and audience after `Last-Event-ID`, oldest first,
then sends `event: synced` (data `{"node", "seq"}`, no id), then live alerts. Each alert is
`id: <seq>` / `event: alert` / `data: <AlertEvent JSON>`. Every TOCSIN_SSE_KEEPALIVE_S an
`event: keepalive` (no id) carries the node's freshness (`data: <Keepalive JSON>`): a device
whose node's `canary_age_s` passes `stale_after_s` moves to a node that delivers (docs/api.md,
"Keepalives and freshness"); a client may ignore it. A device too far behind is disconnected; it
reconnects with its last id. Verify `sig` over the UTF-8 bytes of `cap` before showing."""

_WS_TEXT = """WebSocket upgrade (OpenAPI cannot describe WebSocket; see `x-websocket`). Same
content as /api/v1/stream as JSON text messages: `{"type":"alert", ...AlertEvent}`,
`{"type":"synced","node","seq"}`, `{"type":"keepalive", ...Keepalive}`. Resume with the `last_event_id`
query parameter (the Last-Event-ID header is not read). A device too far behind is closed
with code 1013. An unknown token or bad `last_event_id` is refused before the upgrade
(HTTP 403 as served by uvicorn)."""


def _device_paths(catalog: list[Problem]) -> Json:
    token = {"name": "token", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "The device token, for clients that cannot set Authorization (EventSource)."}
    after = {"name": "last_event_id", "in": "query", "required": False,
             "schema": {"type": "string", "pattern": "^[0-9]+([.][0-9a-f]{8})?$"},
             "description": "The id of the last alert event seen, as sent (`seq.idprefix`, a burst's `floor.idprefix~seq~seq`, or a bare seq)."}
    register = {
        "tags": ["device"],
        "operationId": "registerDevice",
        "summary": "Register a device for cells",
        "description": "No token is needed, except for a canary (`canary: true`), which needs any "
        "issuer token. Points are turned into cells at once and never stored. Every field has one "
        "JSON type (a string \"false\" is not a boolean) and unknown fields are refused (422 "
        "naming each in `errors`). Cells are stored canonical: trimmed, lower case, at the "
        "service's resolution, unique and sorted. Anonymous registrations are limited per source "
        "(TOCSIN_REGISTRATIONS_PER_SOURCE_PER_MIN) and per node (TOCSIN_REGISTRATIONS_PER_MIN): "
        "429 with Retry-After. A full device bucket is 507 device.registry-full. A record that "
        "no connect renewed for TOCSIN_DEVICE_TTL_S (30 days) expires: the device registers again.",
        "security": [{}, *_ISSUER],
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": _ref("DeviceRegistration")}}},
        "responses": {
            "201": _json(_ref("DeviceRegistered"), "Registered; keep the token.",
                         {"Location": _header("/api/v1/devices/{id}: where the device deletes itself.")}),
            "400": _problems(catalog, 400, ("request.",)),
            "401": _problems(catalog, 401, ("auth.",)),
            "413": _problems(catalog, 413, ("request.",)),
            "422": _problems(catalog, 422, ("device.",)),
            "429": _problems(catalog, 429, ("device.",), _RETRY_AFTER),
            "503": _problems(catalog, 503, ("store.", "request."), _RETRY_AFTER),
            "507": _problems(catalog, 507, ("device.",)),
            **_COMMON,
        },
    }
    delete = {
        "tags": ["device"],
        "operationId": "deleteDevice",
        "summary": "Delete this device's record",
        "description": "The device's own token authenticates (a token of another device is "
        "401 device.unknown). The record leaves the bucket and every node's mirror; the token "
        "stops working.",
        "security": _DEVICE,
        "parameters": [{"name": "device_id", "in": "path", "required": True,
                        "schema": {"type": "string", "pattern": "^dev_[0-9a-f]{24}$"}}, token],
        "responses": {
            "204": {"description": "Deleted."},
            "401": _problems(catalog, 401, ("device.",)),
            "503": _problems(catalog, 503, ("store.",), _RETRY_AFTER),
            **_COMMON,
        },
    }
    update = {  # CORE
        "tags": ["device"],
        "operationId": "updateDevice",
        "summary": "Replace this device's cells, languages, tests flag and push part",
        "description": "The device's own token authenticates (another device's is 401 "
        "device.unknown). The body is a registration's: its cells, languages and tests replace the "
        "record's, and so does its `subscription` or `token` (a browser rotates its subscription). "
        "The channel and the canary flag stay as registered (a different one is 422 device.invalid). "
        "The record is renewed. The answer is the registration's without the token. A device may "
        "change its registration a few times a minute (429 device.too-many-updates with Retry-After).",
        "security": _DEVICE,
        "parameters": [{"name": "device_id", "in": "path", "required": True,
                        "schema": {"type": "string", "pattern": "^dev_[0-9a-f]{24}$"}}, token],
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": _ref("DeviceRegistration")}}},
        "responses": {
            "200": _json(_ref("DeviceRegistered"), "Replaced and renewed."),
            "400": _problems(catalog, 400, ("request.",)),
            "401": _problems(catalog, 401, ("device.",)),
            "413": _problems(catalog, 413, ("request.",)),
            "422": _problems(catalog, 422, ("device.",)),
            "429": _problems(catalog, 429, ("device.",), _RETRY_AFTER),
            "503": _problems(catalog, 503, ("store.", "request."), _RETRY_AFTER),
            "507": _problems(catalog, 507, ("device.",)),
            **_COMMON,
        },
    }
    stream = {
        "tags": ["device"],
        "operationId": "stream",
        "summary": "Alerts for this device, live (SSE)",
        "description": _STREAM_TEXT,
        "security": _DEVICE,
        "parameters": [
            {"name": "Last-Event-ID", "in": "header", "required": False,
             "schema": {"type": "string", "pattern": "^[0-9]+([.][0-9a-f]{8})?$"},
             "description": "The id of the last alert event seen; wins over `last_event_id`."},
            after, token,
        ],
        "responses": {
            "200": {
                "description": "An endless text/event-stream.",
                "headers": {"Tocsin-Node": _header("The node serving the stream.")},
                "content": {"text/event-stream": {"schema": {"type": "string"}, "x-events": {
                    "alert": _ref("AlertEvent"), "synced": _ref("Synced")}}},
            },
            "400": _problems(catalog, 400, ("device.",)),
            "401": _problems(catalog, 401, ("device.",)),
            "429": _problems(catalog, 429, ("device.", "request.")),
            "503": _problems(catalog, 503, ("store.", "request."), _RETRY_AFTER),
            "505": _problems(catalog, 505, ("request.",)),
            **_COMMON,
        },
    }
    websocket = {
        "tags": ["device"],
        "operationId": "websocket",
        "summary": "Alerts for this device, live (WebSocket)",
        "description": _WS_TEXT,
        "security": _DEVICE,
        "parameters": [after, token],
        "responses": {"101": {"description": "Switching protocols to WebSocket; a refusal is a close code."}},
        "x-websocket": {
            "messages": {"alert": _ref("WsAlert"), "synced": _ref("WsSynced"), "keepalive": _ref("WsKeepalive")},
            "closeCodes": {
                "1009": "a message from the device larger than the limit (TOCSIN_WS_MAX_MESSAGE_BYTES)",
                "1013": "too far behind, or the node is not ready; reconnect with last_event_id",
                "4400": "invalid last_event_id (device.event-id-invalid)",
                "4401": "unknown device token (device.unknown): register again",
                "4429": "the device token holds its limit of streams (device.too-many-streams)",
            },
        },
    }
    return {"/api/v1/devices": {"post": register}, "/api/v1/devices/{device_id}": {"delete": delete, "put": update},
            "/api/v1/stream": {"get": stream}, "/api/v1/ws": {"get": websocket}}


def _public_paths() -> Json:
    def simple(op: str, summary: str, responses: Json) -> Json:
        return {"get": {"tags": ["public"], "operationId": op, "summary": summary, "responses": responses}}

    return {
        "/.well-known/tocsin/keys": simple("keys", "The deployment's public signing keys (JWK) and key-set statements; trusted by "
                                       "a device only through a statement signed by a key it trusts", {
            "200": _json(_ref("Keys"), "Cache-Control: public, max-age=300.")}),
        "/livez": simple("livez", "The process answers", {"200": _json(_ref("Liveness"), "Live.")}),
        "/readyz": simple("readyz", "Whether this node measured, seconds ago, that it can deliver", {
            "200": _json(_ref("Readiness"), "Ready: every check passed and is fresh."),
            "503": _json(_ref("Readiness"), "Not ready: `failing` names the checks.")}),
        "/status": {"get": {
            "tags": ["public"], "operationId": "status", "summary": "The node's status page",
            "description": "HTML for browsers; JSON with `?format=json` or `Accept: application/json`. Always 200.",
            "parameters": [{"name": "format", "in": "query", "required": False, "schema": {"enum": ["json"]}}],
            "responses": {"200": {"description": "Readiness, canaries, devices, measured availability.",
                                  "content": {"text/html": {"schema": {"type": "string"}},
                                              "application/json": {"schema": {"type": "object"}}}}}}},
        "/metrics": simple("metrics", "Prometheus metrics of this node", {
            "200": {"description": "Prometheus text format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}}}}),
        "/openapi.json": simple("openapi", "This document", {
            "200": _json({"type": "object"}, "OpenAPI 3.1.")}),
    }


# ---------------------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------------------


def _components(catalog: list[Problem]) -> Json:
    schemas = {**_problem_schemas(catalog), **_cap_schemas(), **_alert_schemas(), **_device_schemas(),
               **_lifecycle_schemas(), **_preview_schemas()}
    bearer = "Authorization: Bearer <token>"
    return {
        "schemas": schemas,
        "responses": {
            "Internal": {
                "description": "Problem: `server.internal` (logged with its traceback).",
                "content": {"application/problem+json": {"schema": _ref("Problem")}}},
            "Timeout": {
                "description": "Problem: `request.header-timeout`, `request.body-timeout`; the connection closes.",
                "content": {"application/problem+json": {"schema": _ref("Problem")}},
                "x-problem-codes": ["request.header-timeout", "request.body-timeout"]},
            "HeadersTooLarge": {
                "description": "Problem: `request.headers-too-large`; the connection closes.",
                "content": {"application/problem+json": {"schema": _ref("Problem")}},
                "x-problem-codes": ["request.headers-too-large"]},
        },
        "securitySchemes": {
            "issuerToken": {"type": "http", "scheme": "bearer", "description": f"Issuer account token ({bearer})."},
            "deviceToken": {"type": "http", "scheme": "bearer", "bearerFormat": "<device id>.<secret>",
                            "description": f"Device token from POST /api/v1/devices ({bearer})."},
            "deviceTokenQuery": {"type": "apiKey", "in": "query", "name": "token",
                                 "description": "The device token as a query parameter (EventSource, WebSocket)."},
        },
    }


def _problem_schemas(catalog: list[Problem]) -> Json:
    violation = {"type": "object", "required": ["code", "path", "detail"], "properties": {
        "code": _ref("ProblemCode"), "detail": {"type": "string"},
        "path": {"type": "string", "examples": ["info[0].area[0].polygon[0]"]}}}
    problem = {"type": "object", "required": ["type", "title", "status", "code", "detail"], "properties": {
        "type": {"type": "string", "examples": ["urn:tocsin:problem:cap.expired"]},
        "title": {"type": "string"}, "status": {"type": "integer"}, "code": _ref("ProblemCode"),
        "detail": {"type": "string"}, "instance": {"type": "string", "description": "The request path."},
        "errors": {"type": "array", "items": _ref("Violation"),
                   "description": "Every broken rule; the first is `code`."}}}
    codes = {"type": "string", "enum": [p.code for p in catalog], "description": "Stable code; never reused."}
    return {"Problem": problem, "Violation": violation, "ProblemCode": codes}


def _cap_value(field: Field) -> Json:
    if field.content is not None:
        return _ref(next(name for ctype, name in _CAP_TYPES if ctype is field.content))
    if field.lexical is Lexical.ENUM:
        return {"type": "string", "enum": list(field.choices)}
    if field.lexical is Lexical.INTEGER:
        return {"type": "integer"}
    if field.lexical is Lexical.DECIMAL:
        return {"type": "number"}
    if field.lexical is Lexical.DATETIME:
        return {"type": "string", "pattern": _CAP_DATETIME}
    return {"type": "string"}


def _cap_object(ctype: ComplexType) -> Json:
    properties: Json = {}
    for field in ctype.fields:
        value = _cap_value(field)
        if ctype is ALERT and field.name in _CAP_LIST_TEXTS:
            value = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
        elif field.is_repeatable:
            value = {"type": "array", "items": value}
            if field.min_occurs:
                value["minItems"] = field.min_occurs
        properties[field.name] = value
    if ctype is ALERT:
        properties[EXTENSIONS_KEY] = {"type": "array", "items": {"type": "string"},
                                      "description": "XML-DSig <Signature> elements, as XML text."}
    required = [field.name for field in ctype.fields if field.min_occurs > 0]
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _cap_schemas() -> Json:
    schemas = {name: _cap_object(ctype) for ctype, name in _CAP_TYPES}
    schemas["CapAlert"]["description"] = (
        "The JSON form of CAP 1.2 (tocsin.cap.render.to_json): CAP element names as keys, "
        "repeatable elements as lists, polygon/circle as their CAP strings, size an integer, "
        "altitude/ceiling numbers, null the same as absent. Checked by the same rules as XML.")
    return schemas


def _alert_schemas() -> Json:
    string, nullable = {"type": "string"}, {"type": ["string", "null"]}
    description = {"type": "object", "properties": {
        "id": _ALERT_ID, "seq": {"type": "integer", "description": "Stream sequence = device event id."},
        "sender": string, "identifier": string, "sent": string, "status": string, "msgType": string,
        "expires": nullable, "state": {"type": "string", "enum": ["active", "expired"]},
        "acceptedAt": string, "acceptedBy": string, "issuer": string,
        "signature": {"type": "object", "properties": {"kid": string, "sig": string, "alg": {"const": "EdDSA"}}},
        "delivery": {"type": "object", "properties": {
            "node": string,
            "followed": {"type": "boolean", "description": "This node's follower has reached the alert."},
            "liveDevicesOffered": {"type": ["integer", "null"],
                                   "description": "Live devices on this node it was queued to (null: not active)."},
            # PROGRESS: GET /api/v1/alerts/{alert_id} only (delivery/progress.py).
            "channels": _ref("DeliveryChannels")}},
        "links": {"type": "object", "properties": {"self": string, "cap": string}},
        # BURST (issue 11): only in the answer to the POST.
        "standing": {"type": "object", "description": "Where the alert stands (POST answer only).", "properties": {
            "published": {"type": "boolean"},
            "accept": {"type": "object", "properties": {
                "waitedAhead": {"type": "integer", "description": "Accepts ranked at or before it that waited at the gate."},
                "waitedMs": {"type": "number"}}},
            "fanOut": {"type": "object", "properties": {
                "node": string, "done": {"type": "boolean", "description": "This node has fanned it out."},
                "before": {"type": "integer", "description": "Alerts before it in the stream this node has still to take."}}},
            "duplicateOf": {"type": ["object", "null"], "description": "Another organisation's alert with the same content.",
                            "properties": {"id": _ALERT_ID, "issuer": string}}}},
    }, "required": ["id", "seq", "sender", "identifier", "status", "msgType", "state", "signature", "links"]}
    detail = {"allOf": [_ref("AlertDescription"), {"type": "object", "properties": {"alert": _ref("CapAlert")}}]}
    event = {"type": "object", "required": ["seq", "id", "kid", "sig", "cap"], "properties": {
        "seq": {"type": "integer"}, "id": _ALERT_ID, "kid": string,
        "sig": {"type": "string", "description": "Ed25519 over the UTF-8 bytes of `cap`, base64url."},
        "cap": {"type": "string", "description": "The signed CAP 1.2 XML."}}}
    synced = {"type": "object", "properties": {"node": string, "seq": {"type": "integer"}}}
    seconds = {"type": "number", "minimum": 0}
    keepalive = {
        "type": "object",
        "description": "The node's freshness; fields may be added. canary_age_s and stale_after_s are absent "
                       "when the node has no prober.",
        "properties": {
            "node": string, "interval_s": seconds,
            "canary_age_s": {**seconds, "description": "Seconds since this node last displayed its own probe."},
            "stale_after_s": {**seconds, "description": "Past this age the node is not delivering."},
        },
    }
    return {
        "AlertDescription": description, "AlertDetail": detail, "AlertEvent": event, "Synced": synced,
        "WsAlert": {"allOf": [event, {"properties": {"type": {"const": "alert"}}}]},
        "WsSynced": {"allOf": [synced, {"properties": {"type": {"const": "synced"}}}]},
        "Keepalive": keepalive,
        "WsKeepalive": {"allOf": [keepalive, {"properties": {"type": {"const": "keepalive"}}}]},
    }


def _device_schemas() -> Json:
    string, boolean = {"type": "string"}, {"type": "boolean"}
    res = CELL_RESOLUTION
    point = {"type": "object", "required": ["lat", "lon"], "additionalProperties": False, "properties": {
        "lat": {"type": "number", "minimum": -90, "maximum": 90},
        "lon": {"type": "number", "minimum": -180, "maximum": 180}}}
    max_cells = Settings().max_device_cells
    registration = {"type": "object", "additionalProperties": False, "description": (
        f"Give 1 to TOCSIN_MAX_DEVICE_CELLS (default {max_cells}) cells and points in all."), "properties": {
        "cells": {"type": "array", "items": {"type": "string", "maxLength": 64}, "maxItems": max_cells,
                  "description": f"H3 cells at resolution {res} or finer (kept at {res}); "
                                 "15 hex digits, surrounding spaces and capitals allowed."},
        "points": {"type": "array", "items": point, "maxItems": max_cells,
                   "description": f"Turned into resolution-{res} cells; never stored."},
        "languages": {"type": "array", "maxItems": MAX_LANGUAGES,
                      "items": {"type": "string", "pattern": "^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8}){0,7}$"}},
        "tests": {**boolean, "description": "Also receive Test and Exercise alerts."},
        "canary": {**boolean, "description": "Also receive System alerts; needs an issuer token."},
        # CORE: push registration (docs/api.md "Push registration", docs/delivery.md).
        "channel": {"type": "string", "enum": ["live", "webpush", "fcm", "apns"], "default": "live",
                    "description": "How alerts reach the device: live (SSE/WebSocket while connected) or "
                                   "a push service this deployment is configured for."},
        "subscription": {"type": "object", "description": "webpush only: the browser's PushSubscription "
                         "(endpoint, keys.p256dh, keys.auth); at most 4096 bytes of JSON."},
        "token": {"type": "string", "maxLength": 4096, "description": "fcm and apns only: the app's "
                  "registration token or device token."}}}
    registered = {"type": "object", "properties": {
        "channel": string,
        "id": string, "token": {"type": "string", "description": "<id>.<secret>; shown once."},
        "cells": {"type": "array", "items": string}, "languages": {"type": "array", "items": string},
        "tests": boolean, "canary": boolean, "cell_resolution": {"type": "integer", "const": res}}}
    when = {"type": "string", "format": "date-time"}
    jwk = {"type": "object", "properties": {"kty": {"const": "OKP"}, "crv": {"const": "Ed25519"}, "x": string,
                                            "kid": string, "alg": {"const": "EdDSA"}, "use": {"const": "sig"},
                                            "not_before": when, "not_after": when}}
    statement = {"type": "object", "required": ["statement", "kid", "sig"], "properties": {
        "statement": {"type": "string", "description": "JSON text: type tocsin.key-set, issued_at, keys."},
        "kid": string, "sig": {"type": "string", "description": "Ed25519 over the statement's bytes."}}}
    return {
        "DeviceRegistration": registration, "DeviceRegistered": registered, "Jwk": jwk,
        "Keys": {"type": "object", "properties": {"keys": {"type": "array", "items": _ref("Jwk")},
                                                  "statements": {"type": "array", "items": _ref("KeyStatement")},
                                                  "cell_resolution": {"type": "integer"}}},
        "KeyStatement": statement,
        "Liveness": {"type": "object", "properties": {"status": {"const": "live"}, "node": string}},
        "Readiness": {"type": "object", "properties": {
            "status": {"type": "string", "enum": ["ready", "not ready"]}, "ready": boolean, "node": string,
            "failing": {"type": "array", "items": string}, "checked_age_s": {"type": ["number", "null"]},
            "redundancy": {"type": "object", "properties": {
                "replicas": {"type": "integer"}, "redundant": boolean, "statement": string}},
            "checks": {"type": "object", "additionalProperties": {"type": "object", "properties": {
                "ok": boolean, "age_s": {"type": ["number", "null"]}, "max_age_s": {"type": ["number", "null"]},
                "value": {}, "detail": string}}}}},
    }

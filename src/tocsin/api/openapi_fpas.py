"""FPAS: the FOSS Public Alert Server client API in the OpenAPI document (api/fpas.py; docs/fpas.md)."""

from __future__ import annotations

from typing import Any

from tocsin.api.openapi import _ALERT_ID_PARAM, _CAP_XML, _COMMON, _RETRY_AFTER, Json, _header, _json, _problems, _ref
from tocsin.errors import Problem

_TAG = "fpas"
_ID = {"name": "subscription_id", "in": "query", "required": True, "description": "The subscription's UUID.",
       "schema": {"type": "string", "format": "uuid"}}


def _coordinate(name: str, bound: int) -> Json:
    return {"name": name, "in": "query", "required": True,
            "schema": {"type": "number", "minimum": -bound, "maximum": bound}}


_BOX = [_coordinate("min_lat", 90), _coordinate("max_lat", 90), _coordinate("min_lon", 180),
        _coordinate("max_lon", 180)]
_TEXT = {"content": {"text/plain": {"schema": {"type": "string"}}}}


def _op(catalog: list[Problem], op_id: str, summary: str, ok: Json, **extra: Any) -> Json:
    responses: Json = {**ok, **_COMMON}
    for status in (400, 404, 413, 429, 507):
        codes = [p for p in catalog if p.status == status and p.code.startswith(("fpas.", "request.", "device."))]
        if codes:
            responses.setdefault(str(status), _problems(catalog, status, ("fpas.", "request.", "device.")))
    responses["429"] = _problems(catalog, 429, ("device.",), _RETRY_AFTER)
    return {"tags": [_TAG], "operationId": op_id, "summary": summary, "responses": responses, **extra}


def fpas_paths(catalog: list[Problem]) -> Json:
    ids = _json({"type": "array", "items": {"type": "string"}}, "The ids of the active alerts there, newest first.")
    return {
        "/subscription/": {
            "get": _op(catalog, "fpasVapidKey", "The VAPID key (type=webpush)", {
                "200": _json({"type": "object", "properties": {"vapid-key": {"type": "string"}}}, "The key.")},
                parameters=[{"name": "type", "in": "query", "required": True, "schema": {"const": "webpush"}}]),
            "post": _op(catalog, "fpasSubscribe", "Subscribe a bounding box; a confirmation push is sent first", {
                "200": _json(_ref("FpasSubscribed"), "Subscribed: the confirmation push was taken.")},
                requestBody={"required": True, "content": {"application/json": {"schema": _ref("FpasSubscription")}}}),
            "put": _op(catalog, "fpasHeartbeat", "Renew a subscription (and take a new endpoint: token, "
                       "p256dh_key, auth_key)", {"200": {"description": "Renewed.", **_TEXT}}, parameters=[_ID]),
            "delete": _op(catalog, "fpasUnsubscribe", "Forget a subscription",
                          {"200": {"description": "Forgotten.", **_TEXT}}, parameters=[_ID]),
        },
        "/alert/all": {"get": _op(catalog, "fpasAlertsOfSubscription", "The alerts in a subscription's box",
                                  {"200": ids}, parameters=[_ID])},
        "/alert/area": {"get": _op(catalog, "fpasAlertsOfArea", "The alerts in a bounding box", {"200": ids},
                                   parameters=_BOX)},
        "/alert/{alert_id}.xml": {"get": _op(catalog, "fpasAlertCap", "The alert's CAP (the signed bytes)", {
            "200": {"description": "CAP 1.2 XML.", "content": {"application/cap+xml": _CAP_XML}}},
            parameters=[_ALERT_ID_PARAM])},
        "/alert/{alert_id}": {"get": _op(catalog, "fpasAlert", "A redirect to the alert's CAP", {
            "301": {"description": "To {alert_id}.xml.", "headers": {"Location": _header("Relative.")}}},
            parameters=[_ALERT_ID_PARAM])},
        "/config/server_status": {"get": _op(catalog, "fpasServerStatus", "Operator, terms and push services",
                                             {"200": _json(_ref("FpasServerStatus"), "The status.")})},
    }


def fpas_schemas() -> Json:
    number = {"type": ["number", "string"], "description": "Decimal degrees; a string of one is taken too."}
    flag = {"type": "boolean"}
    return {
        "FpasSubscription": {"type": "object", "required": ["token", "push_service", "min_lat", "max_lat", "min_lon",
                                                            "max_lon"], "properties": {
            "token": {"type": "string", "description": "The UnifiedPush endpoint (https)."},
            "push_service": {"enum": ["UNIFIED_PUSH", "UNIFIED_PUSH_ENCRYPTED"]},
            "min_lat": number, "max_lat": number, "min_lon": number, "max_lon": number,
            "p256dh_key": {"type": "string"}, "auth_key": {"type": "string"}, "vapid_public_key": {"type": "string"}}},
        "FpasSubscribed": {"type": "object", "properties": {
            "token": {"const": "successfully subscribed"}, "subscription_id": {"type": "string", "format": "uuid"},
            "confirmation_id": {"type": "string", "format": "uuid"}}},
        "FpasServerStatus": {"type": "object", "properties": {
            "server_version": {"type": "string"}, "server_operator": {"type": "string"},
            "privacy_notice": {"type": "string"}, "terms_of_service": {"type": "string"},
            "congestion_state": {"type": "integer"},
            "supported_push_services": {"type": "object", "properties": {
                "UNIFIED_PUSH": flag, "UNIFIED_PUSH_ENCRYPTED": flag, "APN": flag, "FIREBASE": flag}}}},
    }

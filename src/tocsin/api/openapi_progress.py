"""Delivery progress's part of the OpenAPI document: receipts, and the per-channel counts
in `GET /api/v1/alerts/{alert_id}` (api/receipts.py, delivery/progress.py; docs/api.md)."""

from __future__ import annotations

from tocsin.api.openapi import _ALERT_ID, _COMMON, _DEVICE, _RETRY_AFTER, Json, _json, _problems, _ref
from tocsin.errors import Problem


def receipts_paths(catalog: list[Problem]) -> Json:
    receipt = {
        "tags": ["device"],
        "operationId": "postReceipt",
        "summary": "This device showed an alert",
        "description": "The device's own token authenticates. Counted in the alert's delivery "
        "progress once per device on this node, for an alert active on this node only "
        "(422 receipt.invalid otherwise); at most TOCSIN_RECEIPTS_PER_DEVICE_PER_MIN a minute.",
        "security": _DEVICE,
        "requestBody": {"required": True, "description": "At most 512 bytes.",
                        "content": {"application/json": {"schema": _ref("Receipt")}}},
        "responses": {
            "202": _json(_ref("ReceiptAccepted"), "Taken; `counted` is false for a repeated receipt."),
            "400": _problems(catalog, 400, ("request.",)),
            "401": _problems(catalog, 401, ("device.",)),
            "413": _problems(catalog, 413, ("request.",)),
            "422": _problems(catalog, 422, ("receipt.",)),
            "429": _problems(catalog, 429, ("receipt.",), _RETRY_AFTER),
            "503": _problems(catalog, 503, ("store.",), _RETRY_AFTER),
            **_COMMON,
        },
    }
    return {"/api/v1/receipts": {"post": receipt}}


def progress_schemas() -> Json:
    count = {"type": "integer", "minimum": 0}
    channel = {"type": "object", "required": ["planned", "queued", "sent", "failed", "receipts"], "properties": {
        "planned": {**count, "description": "Deliveries the planner enqueued."},
        "queued": {**count, "description": "Planned and not finished yet (planned - sent - failed)."},
        "sent": {**count, "description": "Deliveries the gateway accepted."},
        "failed": {"type": "object", "additionalProperties": count,
                   "description": "Deliveries given up, by reason (the gateway's code, `expired`, `gone`...)."},
        "receipts": {**count, "description": "Devices that confirmed they showed it (POST /api/v1/receipts)."}}}
    return {
        "DeliveryChannel": channel,
        "DeliveryChannels": {"type": "object", "additionalProperties": _ref("DeliveryChannel"),
                             "description": "Per channel (webpush, fcm, apns, cap, live), summed over every node."},
        "Receipt": {"type": "object", "additionalProperties": False, "required": ["alert_id"], "properties": {
            "alert_id": _ALERT_ID,
            "event_id": {"oneOf": [{"type": "integer", "minimum": 1},
                                   {"type": "string", "pattern": "^[0-9]{1,15}([.][0-9a-f]{1,32})?$"}],
                         "description": "The event id the device read (the alert's seq); checked when given."}}},
        "ReceiptAccepted": {"type": "object", "properties": {
            "alert_id": _ALERT_ID, "channel": {"type": "string"}, "counted": {"type": "boolean"}}},
    }

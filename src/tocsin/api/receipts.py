"""`POST /api/v1/receipts`: a device says it showed an alert (delivery progress, docs/api.md).

The device's own token authenticates (as for its stream); the body names the alert and,
optionally, the event id the device read. A receipt counts only for an alert active on
this node's follower, once per device and alert on this node (delivery/progress.py keeps
the devices it counted until the alert's counts leave), and each device sends at most
`TOCSIN_RECEIPTS_PER_DEVICE_PER_MIN` a minute.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tocsin.api.alerts import read_body
from tocsin.api.auth import device_for
from tocsin.api.device_records import LIVE
from tocsin.api.ratelimit import retry_after
from tocsin.api.services import Services
from tocsin.errors import BAD_REQUEST, RECEIPT_INVALID, RECEIPT_RATE_LIMITED, Rejected, Violation
from tocsin.store.base import AlertId

# {"alert_id": 32 hex digits, "event_id": a seq or an SSE id}: far under this.
MAX_BODY_BYTES = 512
FIELDS = frozenset({"alert_id", "event_id"})
_ALERT_ID = re.compile(r"[0-9a-f]{32}")
# An event id as the stream sends it ("<seq>.<id prefix>"), or the seq alone.
_EVENT_ID = re.compile(r"([0-9]{1,15})(?:\.([0-9a-f]{1,32}))?")


def _invalid(path: str, detail: str) -> Rejected:
    return Rejected(RECEIPT_INVALID, f"{path}: {detail}",
                    violations=(Violation(problem=RECEIPT_INVALID, path=path, detail=detail),))


def _document(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise Rejected(BAD_REQUEST, f"the body is not JSON: {str(exc)[:200]}") from None
    if not isinstance(document, dict):
        raise _invalid("$", "the body must be a JSON object")
    unknown = sorted(set(document) - FIELDS)
    if unknown:
        raise _invalid(str(unknown[0])[:64], "not a field of a receipt (alert_id, event_id)")
    return document


def _event_seq(raw: object, alert_id: str) -> int | None:
    """The seq the event id names, checked against the alert's id prefix when it has one."""
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 < raw < 10**15:
        return raw
    found = _EVENT_ID.fullmatch(raw) if isinstance(raw, str) else None
    if found is None or (found.group(2) and not alert_id.startswith(found.group(2))):
        raise _invalid("event_id", "an event id as the stream sent it (seq or seq.idprefix)")
    return int(found.group(1))


async def post_receipt(request: Request) -> Response:
    services: Services = request.app.state.services
    device_id, record = await device_for(request, services, renew=False)
    wait_s = services.receipt_rates.take(device_id)
    if wait_s:
        raise Rejected(RECEIPT_RATE_LIMITED, headers={"Retry-After": retry_after(wait_s)})
    document = _document(await read_body(request, MAX_BODY_BYTES))
    raw_id = document.get("alert_id")
    if not isinstance(raw_id, str) or not _ALERT_ID.fullmatch(raw_id):
        raise _invalid("alert_id", "the alert's id: 32 hex digits")
    active = services.pipeline.index.by_id.get(AlertId(raw_id))
    if active is None:
        raise _invalid("alert_id", "no alert active on this node has this id")
    seq = _event_seq(document.get("event_id"), raw_id)
    if seq is not None and seq != active.stored.seq:
        raise _invalid("event_id", f"the alert's event is {active.stored.seq}")
    channel = str(record.get("channel") or LIVE)
    counted = services.progress.receipt(raw_id, channel, device=device_id)
    return JSONResponse({"alert_id": raw_id, "channel": channel, "counted": counted}, status_code=202)

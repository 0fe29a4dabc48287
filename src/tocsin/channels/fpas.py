"""FPAS channel: pushes to the subscriptions of the FOSS Public Alert Server client API (docs/fpas.md).

An FPAS subscription (api/fpas.py) is a device on channel "fpas" whose push part names a
UnifiedPush endpoint, plain (`UNIFIED_PUSH`: the JSON payload posted as it is) or encrypted
(`UNIFIED_PUSH_ENCRYPTED`: RFC 8291 Web Push with the deployment's VAPID key, sent by the
Web Push sender itself). What FPAS clients parse is not tocsin's signed event but a small
JSON object naming an alert they then fetch: `{"type": "added" | "update" | "removed",
"alert_id": ID}`, and `{"type": "subscribe", "confirmation_id": ID, ...}` once at subscription.

The endpoints are checked as Web Push endpoints are (https, a DNS name, no user
information), against `fpas_push_hosts`: a node posts only to push servers the deployment
names, never to a host a stranger chose.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import httpx

from tocsin.channels import webpush
from tocsin.delivery.http import gateway_client
from tocsin.delivery.model import EXPIRED, FPAS, Delivery, Outcome, Push, Result
from tocsin.errors import CHANNEL_UNAVAILABLE, Rejected
from tocsin.settings import Settings

UNIFIED_PUSH, UNIFIED_PUSH_ENCRYPTED = "UNIFIED_PUSH", "UNIFIED_PUSH_ENCRYPTED"
SERVICES = (UNIFIED_PUSH, UNIFIED_PUSH_ENCRYPTED)
# The alerts one Update or Cancel withdraws in its pushes at most (CAP allows any number of
# references; a real one names a few).
MAX_REMOVED = 8
# A confirmation push is kept by the push server this long for a phone that is offline.
CONFIRMATION_TTL_S = 3600


def enabled(settings: Settings) -> bool:
    """On when the deployment names the push servers FPAS subscriptions may use."""
    return bool(settings.fpas_push_hosts.strip())


def check_target(document: dict[str, Any], settings: Settings, *, canary: bool) -> dict[str, Any]:
    """Not through /api/v1/devices: an FPAS subscription registers through /subscription/."""
    raise Rejected(CHANNEL_UNAVAILABLE, "channel 'fpas': subscribe through POST /subscription/ (docs/fpas.md)")


def check_endpoint(value: object, settings: Settings) -> str:
    """The push endpoint, refused unless https at a host of `fpas_push_hosts`.

    Raises:
        Rejected: device.push-target-invalid or device.push-host-refused (api/fpas.py
            answers them as FPAS's 400).
    """
    field_settings = settings.replace(webpush_hosts=settings.fpas_push_hosts)
    return webpush.check_endpoint(value, field_settings, canary=False)


def payload(kind: str, alert_id: str) -> bytes:
    """One push as FPAS clients parse it (KPublicAlerts subscriptionmanager.cpp,
    FOSS Warn notification_handler.dart)."""
    return json.dumps({"type": kind, "alert_id": alert_id}, separators=(",", ":")).encode()


def confirmation(confirmation_id: str) -> bytes:
    """The push sent at subscription; the client matches `confirmation_id` to the answer's."""
    return json.dumps({"type": "subscribe", "message": "successfully subscribed",
                       "confirmation_id": confirmation_id}, separators=(",", ":")).encode()


def payloads_for(push: Push) -> list[bytes]:
    """What one alert becomes for an FPAS client: an Alert is `added`; an Update is `update`
    of itself and `removed` of what it replaces; a Cancel is `removed` of what it cancels
    (of itself when it names nothing); an alert that expired is `removed` of itself."""
    alert_id = push.delivery.alert_id
    if push.msg_type == EXPIRED:
        return [payload("removed", alert_id)]
    withdrawn = [payload("removed", ref) for ref in push.references[:MAX_REMOVED]]
    if push.msg_type == "Cancel":
        return withdrawn or [payload("removed", alert_id)]
    if push.msg_type == "Update":
        return [payload("update", alert_id), *withdrawn]
    return [payload("added", alert_id)]


def _plain_result(response: httpx.Response) -> Result:
    # UnifiedPush distributors answer 200 (ntfy), 201 or 202 to a message they took; the
    # rest as Web Push services do (404/410 gone, 429, 5xx).
    if 200 <= response.status_code <= 299:
        return Result(outcome=Outcome.SENT, status=response.status_code)
    return webpush.result_for(response)


class FpasSender:
    """Sends FPAS payloads: encrypted through the Web Push sender, plain by one POST."""

    channel = FPAS

    def __init__(self, settings: Settings, key: webpush.VapidKey) -> None:
        self._settings = settings
        self._webpush = webpush.WebPushSender(settings, key)
        self._client = gateway_client(settings)
        self.vapid_public_b64 = key.public_b64

    def host(self, push: Push) -> str:
        return (urlsplit(str(push.target.get("endpoint", ""))).hostname or "").lower()

    async def send(self, push: Push) -> Result:
        """Each payload of the alert in turn; the first that does not go is the answer (a
        retry sends them all again: each is idempotent for the client)."""
        result = Result(outcome=Outcome.PERMANENT, reason="nothing-to-send")
        for body in payloads_for(push):
            result = await self.post(push, body)
            if result.outcome is not Outcome.SENT:
                return result
        return result

    async def post(self, push: Push, body: bytes) -> Result:
        """One payload to the subscription's endpoint."""
        if push.target.get("service") == UNIFIED_PUSH_ENCRYPTED:
            # No Topic: a push service replaces a pending message of the same Topic, and an
            # Update's `removed` must not replace its `update` on a phone that is offline.
            return await self._webpush.send(replace(push, payload=body, topic=""))
        return await self._post_plain(push, body)

    async def _post_plain(self, push: Push, body: bytes) -> Result:
        endpoint = str(push.target.get("endpoint", ""))
        headers = {"TTL": str(max(0, int(push.ttl_s))), "Urgency": "high", "Content-Type": "application/json"}
        try:
            async with asyncio.timeout(self._settings.push_timeout_s):
                async with self._client.stream("POST", endpoint, content=body, headers=headers) as response:
                    result = _plain_result(response)
                    await webpush._read_answer(response)
        except (TimeoutError, httpx.TimeoutException):
            return Result(outcome=Outcome.RETRY, reason="timeout")
        except httpx.HTTPError:
            return Result(outcome=Outcome.RETRY, reason="connect")
        return result

    async def confirm(self, target: dict[str, Any], device_id: str, confirmation_id: str) -> Result:
        """The confirmation push of a new subscription, sent before it is stored."""
        delivery = Delivery(alert_id="", seq=0, channel=FPAS, destination=device_id,
                            expires_at=time.time() + CONFIRMATION_TTL_S, urgent=False)
        push = Push(delivery=delivery, target=target, payload=b"", pointer=b"", topic="", severity="Unknown",
                    status="System", ttl_s=CONFIRMATION_TTL_S)
        return await self.post(push, confirmation(confirmation_id))

    async def aclose(self) -> None:
        await self._webpush.aclose()
        await self._client.aclose()


def make_sender(settings: Settings) -> FpasSender:
    return FpasSender(settings, webpush.vapid_key(settings))

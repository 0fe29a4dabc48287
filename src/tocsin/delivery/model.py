"""What the planner, the dispatchers and the channel senders share.

A `Delivery` is one work-queue message: one alert to one destination (a device or a CAP
route). A `Sender` turns a `Push` (the delivery, the device's push fields and the payload)
into one request to its gateway and says what became of it as a `Result`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from tocsin.store.base import Envelope

# The channels a device may register with besides "live" (SSE or WebSocket while connected).
WEBPUSH, FCM, APNS = "webpush", "fcm", "apns"
PUSH_CHANNELS = (WEBPUSH, FCM, APNS)
# The FPAS client API's subscriptions (channels/fpas.py, api/fpas.py), and the `msg_type`
# of the push that withdraws an alert once it expired (Delivery.removal).
FPAS = "fpas"
EXPIRED = "Expired"
# A CAP route's deliveries (routes.py): not a device channel.
CAP = "cap"

# A work-queue message is small: ids, a channel, a few numbers.
MAX_DELIVERY_BYTES = 1024
# What a push payload may hold (Web Push: 4096 bytes of ciphertext, RFC 8291 takes 103 of
# them for its header, padding delimiter and tag; FCM data and APNs payloads: 4096 bytes).
PUSH_BUDGET_BYTES = 3993


class Outcome(StrEnum):
    """What became of one attempt; also a metric label."""

    SENT = "sent"
    RETRY = "retry"  # the gateway or the link failed: again after a backoff
    RATE_LIMITED = "rate-limited"  # again, not before Retry-After (or the backoff)
    PERMANENT = "permanent"  # this message can never be delivered (too large, refused): given up
    GONE = "gone"  # the token or subscription is no more: the registration is removed


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    outcome: Outcome
    # A short stable reason for progress and metrics: "http-500", "UNREGISTERED", "timeout".
    reason: str = ""
    retry_after_s: float | None = None
    status: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """One alert to one destination, as the work queue holds it (JSON, bounded)."""

    alert_id: str
    seq: int
    channel: str
    destination: str  # a device id, or a route name for CAP
    expires_at: float  # Unix seconds: never sent after, given up at
    urgent: bool  # Extreme Actual: dispatched before anything else
    # FPAS: not the alert but its withdrawal once it expired (planner.withdrawals), sent
    # without the alert, which the index no longer holds.
    removal: bool = False

    @property
    def msg_id(self) -> str:
        """The work queue's dedupe id: a planner that plans an alert twice enqueues it once."""
        return f"{self.alert_id}.{self.channel}.{self.destination}" + (".removed" if self.removal else "")

    def to_bytes(self) -> bytes:
        fields: dict[str, object] = {
            "alert_id": self.alert_id, "seq": self.seq, "channel": self.channel,
            "destination": self.destination, "expires_at": self.expires_at, "urgent": self.urgent,
        }
        if self.removal:
            fields["removal"] = True
        return json.dumps(fields, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Delivery:
        """Raises ValueError on anything but a delivery this module wrote."""
        if len(raw) > MAX_DELIVERY_BYTES:
            raise ValueError("delivery message too large")
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("delivery message is not an object")
        try:
            found = cls(
                alert_id=str(data["alert_id"]), seq=int(data["seq"]), channel=str(data["channel"]),
                destination=str(data["destination"]), expires_at=float(data["expires_at"]),
                urgent=bool(data["urgent"]), removal=data.get("removal") is True,
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"delivery message lacks a field: {exc}") from None
        return found


@dataclass(frozen=True, slots=True, kw_only=True)
class Push:
    """What a sender needs for one request."""

    delivery: Delivery
    # The device record's "push" field as its channel's `check_target` wrote it.
    target: dict[str, Any]
    # The app payload (`push_payload`): the signed alert, or a signed pointer to it; and the
    # pointer alone, for a gateway whose own fields leave too little room (APNs `aps`).
    payload: bytes
    pointer: bytes
    # Replaces what the device holds for the same alert chain (an Update or Cancel replaces
    # its alert): Web Push Topic, FCM collapse key, APNs collapse id. ≤ 32 url-safe chars.
    topic: str
    # The alert's severity and status, for priority and interruption level.
    severity: str
    status: str
    # Seconds until the alert expires (>= 0) at the time the request is made.
    ttl_s: int
    # What a platform shows before the app runs (APNs alert, FCM notification): the headline
    # and the start of the description of the info in the device's language. The app still
    # verifies the signed payload and may replace or withdraw it.
    headline: str = ""
    body: str = ""
    # FPAS (channels/fpas.py): the alert's msgType and the ids of the alerts it references
    # (an Update or Cancel), which its pushes name; EXPIRED for an expired alert's withdrawal.
    msg_type: str = "Alert"
    references: tuple[str, ...] = ()


class Sender(Protocol):
    """One gateway kind. `send` never raises for what a gateway or the link does: it says
    so in the Result (a bug may raise; the dispatcher then retries after a backoff)."""

    channel: str

    def host(self, push: Push) -> str:
        """The gateway host this push goes to: the circuit breaker's key."""
        ...

    async def send(self, push: Push) -> Result: ...

    async def aclose(self) -> None: ...


def topic_for(root_alert_id: str) -> str:
    """The replace-key of an alert chain: the id of its first alert (32 hex digits)."""
    return root_alert_id[:32]


def pointer_payload(envelope: Envelope, seq: int, *, pointer_url: str) -> bytes:
    """The pointer form of `push_payload` (a few hundred bytes)."""
    pointer = {"seq": seq, "id": envelope.alert_id, "kid": envelope.kid, "sig": envelope.sig,
               "sha256": base64.urlsafe_b64encode(hashlib.sha256(envelope.payload).digest()).decode().rstrip("="),
               "url": pointer_url}
    return json.dumps(pointer, separators=(",", ":")).encode()


def push_payload(envelope: Envelope, seq: int, *, pointer_url: str, budget: int = PUSH_BUDGET_BYTES) -> bytes:
    """The payload an app receives: the event exactly as SSE sends it (`seq`, `id`, `kid`,
    `sig`, `cap`), so that the app verifies the signature before it shows anything; when
    that does not fit in `budget` bytes, a pointer instead: the same `id`, `kid` and `sig`
    with the CAP's SHA-256 and the URL the app fetches it from (`GET /api/v1/events/{id}`).
    The signature covers the CAP bytes, so neither form can be forged by a gateway."""
    body = {"seq": seq, "id": envelope.alert_id, "kid": envelope.kid, "sig": envelope.sig,
            "cap": envelope.payload.decode("utf-8")}
    full = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return full if len(full) <= budget else pointer_payload(envelope, seq, pointer_url=pointer_url)

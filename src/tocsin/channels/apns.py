"""apns: iPhones through the Apple Push Notification service (docs/mobile-push.md).

Token-based authentication: one ES256 provider token (header `kid`, claims `iss` = team,
`iat`) signs every request; Apple refuses a token older than an hour and one made again
within 20 minutes of the last (TooManyProviderTokenUpdates), so it is made anew every
`TOKEN_REUSE_S` and when Apple says ExpiredProviderToken. Each alert is an `alert` push at
priority 10 that expires with the alert and collapses with its chain. `mutable-content`
hands it to the app's notification service extension, which verifies the signed tocsin
payload before the text shows (and withdraws what fails); critical alerts, which sound
through silent mode, are only for Extreme Actual alerts of an entitled app.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from tocsin.channels.gateway_sender import GatewaySender, registered_token, retry_after_s
from tocsin.delivery.jws import es256
from tocsin.delivery.model import APNS, Outcome, Push, Result, Sender
from tocsin.settings import Settings, SettingsError

log = logging.getLogger(__name__)

# Apple's limit on a notification's JSON body.
MAX_PAYLOAD_BYTES = 4096
MAX_COLLAPSE_ID_BYTES = 64
# Device tokens are 32 bytes today; Apple says they may grow, so up to 100 bytes in hex.
TOKEN = re.compile(r"[0-9A-Fa-f]{64,200}")
# A provider token is used this long (Apple: not refreshed within 20 min, refused after 60).
TOKEN_REUSE_S = 45 * 60.0
KEY_ID = re.compile(r"[A-Z0-9]{10}")
TEAM_ID = re.compile(r"[A-Z0-9]{10}")
BUNDLE_ID = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
# What the platform shows before the app's extension runs: bounded so that the body always
# fits beside the pointer.
MAX_HEADLINE_BYTES = 256
MAX_BODY_BYTES = 1024
# The title of an alert that has no headline (no info block): the extension replaces it.
FALLBACK_TITLE = "Alert"
CRITICAL_SOUND = {"critical": 1, "name": "default", "volume": 1.0}
# Apple's documented reasons (Handling error responses from APNs).
REASONS = frozenset({
    "BadCollapseId", "BadDeviceToken", "BadExpirationDate", "BadMessageId", "BadPriority", "BadTopic",
    "DeviceTokenNotForTopic", "DuplicateHeaders", "IdleTimeout", "InvalidPushType", "MissingDeviceToken",
    "MissingTopic", "PayloadEmpty", "TopicDisallowed", "BadCertificate", "BadCertificateEnvironment",
    "ExpiredProviderToken", "Forbidden", "InvalidProviderToken", "MissingProviderToken", "UnrelatedKeyIdInToken",
    "BadEnvironmentKeyIdInToken", "BadPath", "MethodNotAllowed", "ExpiredToken", "Unregistered", "PayloadTooLarge",
    "TooManyProviderTokenUpdates", "TooManyRequests", "InternalServerError", "ServiceUnavailable", "Shutdown",
})
# Answers that say the device token is no more (or never was) for this app.
_GONE = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered", "ExpiredToken"})
_REFRESH = frozenset({"ExpiredProviderToken", "InvalidProviderToken"})


def enabled(settings: Settings) -> bool:
    return bool(settings.apns_key_file)


def check_target(document: dict[str, Any], settings: Settings, *, canary: bool) -> dict[str, Any]:
    """`{"token": ...}` from the registration's `token`: an APNs device token in hex.

    Raises:
        Rejected: 422 device.push-target-invalid naming `token`.
    """
    return {"token": registered_token(document, TOKEN, "an APNs device token: 64 to 200 hexadecimal digits").lower()}


def make_sender(settings: Settings) -> Sender:
    """Raises SettingsError naming the APNs setting that is missing or wrong."""
    return ApnsSender(settings, load_key(settings))


def _setting(settings: Settings, name: str, pattern: re.Pattern[str], what: str) -> str:
    value = str(getattr(settings, name))
    if not pattern.fullmatch(value):
        raise SettingsError(f"TOCSIN_{name.upper()}: {what}; got {value[:80]!r}")
    return value


def load_key(settings: Settings) -> ec.EllipticCurvePrivateKey:
    """Check the APNs settings and read the .p8 key at start.

    Raises:
        SettingsError: the key file cannot be read or is not an EC P-256 private key, or the
            key id, team id or topic is missing or malformed.
    """
    _setting(settings, "apns_key_id", KEY_ID, "the 10-character key id of the .p8 key (Apple Developer: Keys)")
    _setting(settings, "apns_team_id", TEAM_ID, "the 10-character team id (Apple Developer: Membership)")
    _setting(settings, "apns_topic", BUNDLE_ID, "the app's bundle id, such as org.example.alerts")
    path = settings.apns_key_file
    try:
        raw = Path(path).read_bytes()[: 16 * 1024 + 1]
    except OSError as exc:
        raise SettingsError(f"TOCSIN_APNS_KEY_FILE: cannot read {path}: {exc.strerror}") from None
    try:
        key = load_pem_private_key(raw, password=None)
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"TOCSIN_APNS_KEY_FILE: {path} is not an unencrypted PEM (.p8) private key: "
                            f"{exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SettingsError(f"TOCSIN_APNS_KEY_FILE: {path} must be an EC P-256 key (ES256), as Apple's .p8 keys are")
    return key


class ProviderTokens:
    """The provider token every request carries: one at a time, made anew after
    `TOKEN_REUSE_S` or when Apple refuses it, never twice for one refusal."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, *, key_id: str, team_id: str,
                 clock: Callable[[], float]) -> None:
        self._key, self._key_id, self._team_id, self._clock = key, key_id, team_id, clock
        self._token = ""
        self._made = 0.0
        self._lock = asyncio.Lock()

    def current(self) -> str:
        if not self._token or self._clock() - self._made >= TOKEN_REUSE_S:
            self._make()
        return self._token

    async def refresh(self, refused: str) -> str:
        async with self._lock:
            if self._token == refused:
                self._make()
        return self._token

    def _make(self) -> None:
        self._made = self._clock()
        self._token = es256(self._key, {"iss": self._team_id, "iat": int(self._made)}, kid=self._key_id)


def _clip(text: str, limit: int) -> str:
    """At most `limit` bytes of UTF-8, cut on a character boundary."""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


def is_critical(push: Push, settings: Settings) -> bool:
    return settings.apns_critical_alerts and push.severity == "Extreme" and push.status == "Actual"


def notification(push: Push, settings: Settings) -> bytes:
    """The JSON body: `aps` for the platform, `tocsin` for the app (the signed event, or
    the pointer to it when the whole would pass Apple's 4096 bytes)."""
    critical = is_critical(push, settings)
    aps: dict[str, Any] = {
        # iOS runs the app's extension only for an alert with text: never an empty one.
        "alert": {"title": _clip(push.headline or FALLBACK_TITLE, MAX_HEADLINE_BYTES),
                  "body": _clip(push.body, MAX_BODY_BYTES)},
        "mutable-content": 1,
        "sound": CRITICAL_SOUND if critical else "default",
        "interruption-level": "critical" if critical else "time-sensitive",
    }
    for app_payload in (push.payload, push.pointer):
        body = json.dumps({"aps": aps, "tocsin": json.loads(app_payload)}, ensure_ascii=False,
                          separators=(",", ":")).encode()
        if len(body) <= MAX_PAYLOAD_BYTES:
            break
    return body


def headers(push: Push, settings: Settings, token: str) -> dict[str, str]:
    return {
        "authorization": f"bearer {token}",
        "apns-topic": settings.apns_topic,
        "apns-push-type": "alert",
        "apns-priority": "10",
        "apns-expiration": str(int(push.delivery.expires_at)),
        "apns-collapse-id": _clip(push.topic, MAX_COLLAPSE_ID_BYTES),
        # The same id on every attempt of one delivery: Apple's and our logs meet on it.
        "apns-id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"tocsin:{push.delivery.msg_id}")),
        "content-type": "application/json",
    }


def classify(status: int, body: dict[str, Any], response_headers: httpx.Headers) -> Result:
    """Apple's answer as an outcome (docs/mobile-push.md has the table)."""
    reason = body.get("reason") if body.get("reason") in REASONS else ""  # a metric label: Apple's words only
    if status == 200:
        return Result(outcome=Outcome.SENT, status=status)
    if status == 410 or reason in _GONE:
        return Result(outcome=Outcome.GONE, reason=reason or "http-410", status=status)
    if status in (400, 413, 404, 405):
        # PayloadTooLarge and every other malformed request: sending it again cannot help.
        return Result(outcome=Outcome.PERMANENT, reason=reason or f"http-{status}", status=status)
    if status == 429:
        return Result(outcome=Outcome.RATE_LIMITED, reason=reason or "http-429", status=status,
                      retry_after_s=retry_after_s(response_headers))
    # 403 (the deployment's key, team or topic), 500, 503: retried, the breaker counts.
    return Result(outcome=Outcome.RETRY, reason=reason or f"http-{status}", status=status,
                  retry_after_s=retry_after_s(response_headers))


class ApnsSender(GatewaySender):
    """One app (apns_topic) at one APNs environment, over one HTTP/2 client."""

    channel = APNS

    def __init__(self, settings: Settings, key: ec.EllipticCurvePrivateKey, *,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(settings, settings.apns_url, TOKEN)
        self._tokens = ProviderTokens(key, key_id=settings.apns_key_id, team_id=settings.apns_team_id, clock=clock)
        self._base = settings.apns_url.rstrip("/")

    async def _send(self, push: Push) -> Result:
        body = notification(push, self._settings)
        token = self._tokens.current()
        result = await self._post(push, body, token)
        if result.reason in _REFRESH:
            result = await self._post(push, body, await self._tokens.refresh(token))
            if result.reason in _REFRESH:
                # A new token refused too: the key, key id or team is wrong (ours to mend).
                log.warning("APNs refused a new provider token", extra={"reason": result.reason,
                                                                         "key_id": self._settings.apns_key_id})
        return result

    async def _post(self, push: Push, body: bytes, token: str) -> Result:
        return await self._exchange(f"{self._base}/3/device/{push.target['token']}", classify, content=body,
                                    headers=headers(push, self._settings, token))

"""fcm: Android devices through Firebase Cloud Messaging's HTTP v1 API (docs/mobile-push.md).

The deployment's Google service account signs an RS256 assertion that Google's token
endpoint exchanges for an OAuth2 access token (kept until shortly before it expires,
fetched again once when FCM says UNAUTHENTICATED). Each alert goes as a high-priority
*data* message: the app is woken, verifies the signed payload and only then shows the
alert; FCM shows nothing on its own (a `notification` block would let the platform show
text the app has not verified). The collapse key replaces what a phone holds for the same
alert chain, and the Android TTL makes FCM drop the message when the alert expires.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from tocsin.channels.gateway_sender import GatewaySender, json_object, read_bounded, registered_token, retry_after_s
from tocsin.delivery.jws import rs256
from tocsin.delivery.model import FCM, Outcome, Push, Result, Sender
from tocsin.settings import Settings, SettingsError

log = logging.getLogger(__name__)

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# The key an app reads the tocsin payload from in the message's data.
DATA_KEY = "tocsin"
# FCM's limit on a message's data, keys and values together.
MAX_DATA_BYTES = 4096
# FCM refuses an Android TTL over four weeks.
MAX_TTL_S = 2_419_200
# Registration tokens are opaque, about 150-200 characters of base64url and ':' today;
# the bound leaves room for growth and keeps a stranger's token from costing anything.
TOKEN = re.compile(r"[A-Za-z0-9_:-]{32,1024}")
MAX_ACCOUNT_FILE_BYTES = 64 * 1024
PROJECT_ID = re.compile(r"[a-z0-9][a-z0-9.:-]{0,99}")
# An access token is used until this long before Google says it expires.
TOKEN_MARGIN_S = 300.0
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
# FCM's documented error codes (ErrorCode) and the canonical statuses it answers with.
FCM_CODES = frozenset({
    "UNSPECIFIED_ERROR", "INVALID_ARGUMENT", "UNREGISTERED", "SENDER_ID_MISMATCH", "QUOTA_EXCEEDED", "UNAVAILABLE",
    "INTERNAL", "THIRD_PARTY_AUTH_ERROR", "UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND", "RESOURCE_EXHAUSTED",
    "DEADLINE_EXCEEDED", "FAILED_PRECONDITION",
})
# OAuth2's error codes (RFC 6749 §5.2), as a refused grant's reason.
OAUTH_ERRORS = frozenset({"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
                          "unsupported_grant_type", "invalid_scope"})
# A token endpoint that refused a grant is not asked again for this long.
GRANT_RETRY_S = 5.0
# The assertion's lifetime: Google takes at most one hour.
ASSERTION_LIFETIME_S = 3600
_ACCOUNT_SETTING = "TOCSIN_FCM_SERVICE_ACCOUNT_FILE"


def enabled(settings: Settings) -> bool:
    return bool(settings.fcm_service_account_file)


def check_target(document: dict[str, Any], settings: Settings, *, canary: bool) -> dict[str, Any]:
    """`{"token": ...}` from the registration's `token`: an FCM registration token.

    Raises:
        Rejected: 422 device.push-target-invalid naming `token`.
    """
    return {"token": registered_token(document, TOKEN, "an FCM registration token: 32 to 1024 characters of "
                                                       "A-Z a-z 0-9 _ - :")}


def make_sender(settings: Settings) -> Sender:
    """Raises SettingsError naming what is wrong with the service-account file."""
    return FcmSender(settings, load_service_account(settings.fcm_service_account_file))


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceAccount:
    """What FCM needs of a Google service-account key file."""

    project_id: str
    client_email: str
    token_uri: str
    private_key: rsa.RSAPrivateKey


def _field(account: dict[str, Any], name: str, pattern: re.Pattern[str] | None = None) -> str:
    value = account.get(name)
    if not isinstance(value, str) or not value or len(value) > 8192:
        raise SettingsError(f"{_ACCOUNT_SETTING}: the service account has no {name!r} (a string)")
    if pattern is not None and not pattern.fullmatch(value):
        raise SettingsError(f"{_ACCOUNT_SETTING}: {name!r} is not valid: {value[:80]!r}")
    return value


def _rsa_key(pem: str) -> rsa.RSAPrivateKey:
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"{_ACCOUNT_SETTING}: 'private_key' is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
        raise SettingsError(f"{_ACCOUNT_SETTING}: 'private_key' must be an RSA key of at least 2048 bits (RS256)")
    return key


def load_service_account(path: str) -> ServiceAccount:
    """Read and check the service-account JSON at start.

    Raises:
        SettingsError: the file cannot be read, is not a service account's JSON, or one of
            type, project_id, private_key, client_email, token_uri is missing or wrong.
    """
    try:
        raw = Path(path).read_bytes()[: MAX_ACCOUNT_FILE_BYTES + 1]
    except OSError as exc:
        raise SettingsError(f"{_ACCOUNT_SETTING}: cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_ACCOUNT_FILE_BYTES:
        raise SettingsError(f"{_ACCOUNT_SETTING}: {path} is larger than a service-account file")
    account = json_object(raw)
    if not account:
        raise SettingsError(f"{_ACCOUNT_SETTING}: {path} is not a JSON object")
    if account.get("type") != "service_account":
        raise SettingsError(f"{_ACCOUNT_SETTING}: 'type' is {account.get('type')!r}, not 'service_account'")
    token_uri = _field(account, "token_uri")
    if urlsplit(token_uri).scheme != "https" or not urlsplit(token_uri).hostname:
        raise SettingsError(f"{_ACCOUNT_SETTING}: 'token_uri' must be an https URL: {token_uri[:80]!r}")
    return ServiceAccount(
        project_id=_field(account, "project_id", PROJECT_ID),
        client_email=_field(account, "client_email", re.compile(r"[^@\s]{1,128}@[^@\s]{1,128}")),
        token_uri=token_uri,
        private_key=_rsa_key(_field(account, "private_key")),
    )


class GrantRefused(Exception):
    """The token endpoint gave no access token; `reason` says what it answered."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AccessTokens:
    """The OAuth2 access token, shared by every send: fetched once while many sends wait,
    kept until `TOKEN_MARGIN_S` before it expires, fetched again once when FCM refuses it.
    A refused grant is remembered for `GRANT_RETRY_S`: the sends waiting meanwhile are
    answered its refusal at once instead of each asking the token endpoint in turn."""

    def __init__(self, client: httpx.AsyncClient, account: ServiceAccount, clock: Callable[[], float]) -> None:
        self._client, self._account, self._clock = client, account, clock
        self._token = ""
        self._until = 0.0
        self._refused: tuple[str, float] = ("", 0.0)  # the last refusal and until when it holds
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return bool(self._token) and self._clock() < self._until

    async def current(self) -> str:
        """Raises GrantRefused."""
        if not self._fresh():
            async with self._lock:
                if not self._fresh():
                    await self._fetch()
        return self._token

    async def refresh(self, refused: str) -> str:
        """A token other than `refused` (FCM said UNAUTHENTICATED to it). Raises GrantRefused."""
        async with self._lock:
            if self._token == refused or not self._fresh():
                await self._fetch()
        return self._token

    def _assertion(self) -> str:
        now = int(self._clock())
        return rs256(self._account.private_key, {
            "iss": self._account.client_email, "scope": SCOPE, "aud": self._account.token_uri,
            "iat": now, "exp": now + ASSERTION_LIFETIME_S,
        })

    async def _fetch(self) -> None:
        reason, until = self._refused
        if self._clock() < until:
            raise GrantRefused(reason)
        try:
            await self._grant()
        except GrantRefused as exc:
            # Ours to mend (a deleted key, a wrong clock): said at most once per GRANT_RETRY_S.
            log.warning("FCM token endpoint refused the service account's grant",
                        extra={"reason": exc.reason, "account": self._account.client_email})
            self._refused = (exc.reason, self._clock() + GRANT_RETRY_S)
            raise

    async def _grant(self) -> None:
        form = {"grant_type": GRANT_TYPE, "assertion": self._assertion()}
        async with self._client.stream("POST", self._account.token_uri, data=form) as response:
            body = json_object(await read_bounded(response))
        token, expires_in = body.get("access_token"), body.get("expires_in")
        if response.status_code != 200:
            error = body.get("error")
            raise GrantRefused(f"oauth-{error if error in OAUTH_ERRORS else response.status_code}")
        if not isinstance(token, str) or not 0 < len(token) <= 4096 or not token.isascii() or not token.isprintable():
            raise GrantRefused("oauth-no-token")
        lifetime = float(expires_in) if isinstance(expires_in, int) and 0 < expires_in <= 86_400 else 3600.0
        self._token = token
        # Shortly before it expires; a short-lived token is used for half its life.
        self._until = self._clock() + (lifetime - TOKEN_MARGIN_S if lifetime > 2 * TOKEN_MARGIN_S else lifetime / 2)


def message(push: Push) -> bytes:
    """The messages:send body: a high-priority data message to one registration token."""
    payload = push.payload if len(push.payload) + len(DATA_KEY) <= MAX_DATA_BYTES else push.pointer
    return json.dumps({"message": {
        "token": push.target["token"],
        "data": {DATA_KEY: payload.decode("utf-8")},
        "android": {"priority": "HIGH", "collapse_key": push.topic, "ttl": f"{min(max(push.ttl_s, 0), MAX_TTL_S)}s"},
    }}, ensure_ascii=False, separators=(",", ":")).encode()


def _error(body: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """Google's error object and its details, whatever shape the body has."""
    error = body.get("error")
    if not isinstance(error, dict):
        return {}, []
    details = error.get("details")
    return error, details if isinstance(details, list) else []


def error_code(body: dict[str, Any]) -> str:
    """The FCM error code (an `FcmError` detail's errorCode), else the canonical status;
    "" for one neither documents (a reason is a metric label: never a stranger's text)."""
    error, details = _error(body)
    for detail in details:
        if isinstance(detail, dict) and detail.get("@type") == FCM_ERROR_TYPE:
            code = detail.get("errorCode")
            return code if code in FCM_CODES else ""
    status = error.get("status")
    return status if status in FCM_CODES else ""


def _about_token(body: dict[str, Any]) -> bool:
    """An INVALID_ARGUMENT about the registration token (not about the message): a field
    violation of `message.token`, or FCM's message that the token is not valid."""
    error, details = _error(body)
    for detail in details:
        violations = detail.get("fieldViolations") if isinstance(detail, dict) else None
        for violation in violations if isinstance(violations, list) else []:
            if isinstance(violation, dict) and violation.get("field") == "message.token":
                return True
    return "registration token" in str(error.get("message", ""))[:400].lower()


def classify(status: int, body: dict[str, Any], headers: httpx.Headers) -> Result:
    """FCM's answer as an outcome (docs/mobile-push.md has the table)."""
    code = error_code(body)
    if status == 200:
        return Result(outcome=Outcome.SENT, status=status)
    if code == "UNREGISTERED" or code == "SENDER_ID_MISMATCH":
        return Result(outcome=Outcome.GONE, reason=code, status=status)
    if status == 400:
        if _about_token(body):
            return Result(outcome=Outcome.GONE, reason="INVALID_ARGUMENT:token", status=status)
        return Result(outcome=Outcome.PERMANENT, reason=code or "http-400", status=status)
    if status == 429:
        # FCM asks for a backoff of at least a minute when it sends no Retry-After.
        wait = retry_after_s(headers)
        return Result(outcome=Outcome.RATE_LIMITED, reason=code or "http-429", status=status,
                      retry_after_s=60.0 if wait is None else wait)
    # 5xx, and 401/403/404 that do not name the token: the deployment's credentials or
    # project, or FCM itself. Retried (and counted by the breaker), never a token removed.
    return Result(outcome=Outcome.RETRY, reason=code or f"http-{status}", status=status,
                  retry_after_s=retry_after_s(headers))


class FcmSender(GatewaySender):
    """One FCM project: one HTTP/2 client to fcm_url and to the token endpoint."""

    channel = FCM

    def __init__(self, settings: Settings, account: ServiceAccount, *,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(settings, settings.fcm_url, TOKEN)
        self._tokens = AccessTokens(self._client, account, clock)
        self._url = f"{settings.fcm_url.rstrip('/')}/v1/projects/{account.project_id}/messages:send"

    async def _send(self, push: Push) -> Result:
        body = message(push)
        try:
            token = await self._tokens.current()
            result = await self._post(body, token)
            if result.status == 401 and result.reason != "THIRD_PARTY_AUTH_ERROR":
                # Our access token was refused (revoked, or expired early): once more.
                result = await self._post(body, await self._tokens.refresh(token))
        except GrantRefused as exc:
            return Result(outcome=Outcome.RETRY, reason=exc.reason)
        return result

    async def _post(self, body: bytes, token: str) -> Result:
        headers = {"authorization": f"Bearer {token}", "content-type": "application/json; charset=utf-8"}
        return await self._exchange(self._url, classify, content=body, headers=headers)

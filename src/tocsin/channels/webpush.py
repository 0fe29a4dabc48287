"""Web Push (RFC 8030) with payload encryption (RFC 8291) and VAPID (RFC 8292): docs/webpush.md.

A browser subscribes with the deployment's VAPID public key (`GET /api/v1/webpush/key`) and
registers the subscription it got (`PushSubscription.toJSON()`). A push then goes to the
subscription's endpoint, a URL at the browser vendor's push service: this module checks at
registration that the URL names one of the push services the deployment allows
(`webpush_hosts`), so a stranger can never make a node post where they like (SSRF).

The VAPID key is the deployment's, like the signing key: a subscription is bound to the key
it was made with, so every node of a cluster must hold the same one. By default it lies
beside the signing key (DATA_DIR/keys/vapid.pem), made at first start.

Web Push is on unless `webpush_hosts` is empty (no endpoint could be registered then).
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import ipaddress
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tocsin.channels.webpush_crypto import MAX_PLAINTEXT, encrypt, load_public, public_bytes
from tocsin.delivery.http import gateway_client
from tocsin.delivery.jws import b64url, b64url_decode, es256
from tocsin.delivery.model import WEBPUSH, Outcome, Push, Result
from tocsin.errors import PUSH_HOST_REFUSED, PUSH_TARGET_INVALID, Rejected
from tocsin.secret_file import write_secret
from tocsin.settings import Settings

log = logging.getLogger(__name__)

# Push services' endpoints are a few hundred bytes; a longer one is not a real subscription.
MAX_ENDPOINT_BYTES = 1024
# RFC 8291 §3.2: the auth secret is 16 bytes; p256dh an uncompressed P-256 point (65 bytes).
AUTH_BYTES = 16
# RFC 8292 §2: a VAPID token may be valid at most 24 hours. Ours are made for 12 h and made
# again when fewer than 1 h remain, so none is near its end in flight or under clock skew.
TOKEN_LIFETIME_S = 12 * 3600
TOKEN_RENEW_S = 3600
# RFC 8030 §5.4: a Topic is at most 32 characters of the URL- and filename-safe base64 alphabet.
MAX_TOPIC = 32
_HOST = re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?\.?")
_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
# A Retry-After longer than this is taken as this: the dispatcher gives up at expiry anyway.
MAX_RETRY_AFTER_S = 24 * 3600.0


def enabled(settings: Settings) -> bool:
    """On unless no push service is allowed (`webpush_hosts` empty)."""
    return bool(allowed_hosts(settings))


def allowed_hosts(settings: Settings) -> tuple[str, ...]:
    return tuple(h.strip().lower() for h in settings.webpush_hosts.split(",") if h.strip())


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """`host` is one of `allowed`, or under a domain given as ".example.com" (not the
    domain itself: "push.apple.com" is not a subdomain of ".push.apple.com")."""
    host = host.lower().rstrip(".")
    return any(host.endswith(entry) if entry.startswith(".") else host == entry for entry in allowed)


# ---------------------------------------------------------------------------------------
# The VAPID key
# ---------------------------------------------------------------------------------------


def vapid_key_path(settings: Settings) -> Path:
    """`webpush_vapid_key_file`, or vapid.pem beside the signing key (DATA_DIR/keys/ by
    default): a cluster that shares its signing key file shares this one too."""
    if settings.webpush_vapid_key_file:
        return Path(settings.webpush_vapid_key_file)
    return settings.signing_key_path.with_name("vapid.pem")


@dataclass(frozen=True, slots=True)
class VapidKey:
    private: ec.EllipticCurvePrivateKey
    # The uncompressed public point, base64url: the `k` of the Authorization header and the
    # browser's applicationServerKey.
    public_b64: str

    @classmethod
    def of(cls, private: ec.EllipticCurvePrivateKey) -> VapidKey:
        return cls(private, b64url(public_bytes(private.public_key())))


def _load(path: Path) -> VapidKey:
    private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(private, ec.EllipticCurvePrivateKey) or not isinstance(private.curve, ec.SECP256R1):
        raise ValueError(f"{path} does not hold a P-256 private key (VAPID needs one)")
    return VapidKey.of(private)


def load_or_create_vapid_key(path: Path) -> VapidKey:
    """The P-256 key at `path`, or a new one written there (0600, atomically; when another
    node of the cluster wrote it first, theirs wins).

    Raises:
        ValueError: the file holds something else than a P-256 private key.
    """
    try:
        return _load(path)
    except FileNotFoundError:
        pass
    key = VapidKey.of(ec.generate_private_key(ec.SECP256R1()))
    pem = key.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    try:
        write_secret(path, pem, replace=False)
    except FileExistsError:
        return _load(path)
    log.info("VAPID key created", extra={"path": str(path)})
    return key


@functools.lru_cache(maxsize=16)
def _cached_key(path: Path, version: tuple[int, int]) -> VapidKey:
    return _load(path)


def vapid_key(settings: Settings) -> VapidKey:
    """The deployment's VAPID key, made if absent; read again only when the file changes.

    Raises:
        ValueError: the file holds something else than a P-256 private key.
    """
    path = vapid_key_path(settings)
    if not path.exists():
        return load_or_create_vapid_key(path)
    return _cached_key(path, _version(path))


def _version(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError:
        return (0, 0)
    return (stat.st_mtime_ns, stat.st_size)


def key_document(settings: Settings) -> dict[str, Any]:
    """What `GET /api/v1/webpush/key` answers: what `pushManager.subscribe` needs."""
    key = vapid_key(settings)
    return {
        "publicKey": key.public_b64,
        "userVisibleOnly": True,
        "register": {"method": "POST", "path": "/api/v1/devices", "channel": WEBPUSH},
    }


# ---------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------


def _invalid(field: str, detail: str) -> Rejected:
    return Rejected(PUSH_TARGET_INVALID, f"{field}: {detail}")


def _text(value: object, field: str, limit: int) -> str:
    if not isinstance(value, str) or not value:
        raise _invalid(field, "must be a non-empty string")
    if len(value) > limit:
        raise _invalid(field, f"at most {limit} characters")
    return value


def _key_bytes(value: object, field: str) -> bytes:
    text = _text(value, field, 200)
    if not set(text.rstrip("=")) <= _B64URL:
        raise _invalid(field, "must be base64url")
    try:
        return b64url_decode(text)
    except ValueError:
        raise _invalid(field, "must be base64url") from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(value: object, settings: Settings, *, canary: bool) -> str:
    """The endpoint URL, refused unless https at an allowed push service (a canary of the
    prober, authenticated as an issuer, may name its own receiver on loopback)."""
    field = "subscription.endpoint"
    endpoint = _text(value, field, MAX_ENDPOINT_BYTES)
    if len(endpoint.encode()) > MAX_ENDPOINT_BYTES or not endpoint.isprintable() or " " in endpoint:
        raise _invalid(field, f"a URL of at most {MAX_ENDPOINT_BYTES} bytes without spaces")
    try:
        url = urlsplit(endpoint)
        host = url.hostname or ""
        _ = url.port  # read only to refuse a port that is not a number (ValueError)
    except ValueError as exc:
        raise _invalid(field, f"not a URL: {exc}") from None
    if url.username is not None or url.password is not None or "@" in url.netloc:
        raise _invalid(field, "must not hold user information")
    if not host:
        raise _invalid(field, "names no host")
    if not (_HOST.fullmatch(host) or _is_loopback(host)):
        # Only the letters a host name has: "a\\.push.apple.com" reads differently elsewhere.
        raise _invalid(field, "the host must be a DNS name (letters, digits, dots, hyphens)")
    if canary and _is_loopback(host) and url.scheme in ("http", "https"):
        return endpoint
    if url.scheme != "https":
        raise _invalid(field, "must be an https URL")
    if not host_allowed(host, allowed_hosts(settings)):
        raise Rejected(PUSH_HOST_REFUSED, f"{field}: {host[:100]!r} is not a push service this deployment "
                                          f"posts to ({settings.webpush_hosts})")
    return endpoint


def check_target(document: dict[str, Any], settings: Settings, *, canary: bool) -> dict[str, Any]:
    """The registration's `subscription` (what PushSubscription.toJSON() gives) as the
    record's `push` field: endpoint, p256dh and auth.

    Raises:
        Rejected: 422 device.push-target-invalid naming the field, or device.push-host-refused.
    """
    subscription = document.get("subscription")
    if not isinstance(subscription, dict):
        raise _invalid("subscription", "must be an object (PushSubscription.toJSON())")
    unknown = set(subscription) - {"endpoint", "keys", "expirationTime"}
    if unknown:
        raise _invalid(f"subscription.{sorted(unknown)[0][:40]}", "is not a field of a push subscription")
    expiration = subscription.get("expirationTime")
    if expiration is not None and (isinstance(expiration, bool) or not isinstance(expiration, (int, float))
                                   or not math.isfinite(expiration)):
        raise _invalid("subscription.expirationTime", "must be null or a number")
    keys = subscription.get("keys")
    if not isinstance(keys, dict):
        raise _invalid("subscription.keys", "must be an object with p256dh and auth")
    extra = set(keys) - {"p256dh", "auth"}
    if extra:
        raise _invalid(f"subscription.keys.{sorted(extra)[0][:40]}", "is not a key of a push subscription")
    endpoint = check_endpoint(subscription.get("endpoint"), settings, canary=canary)
    p256dh = _key_bytes(keys.get("p256dh"), "subscription.keys.p256dh")
    try:
        load_public(p256dh)
    except ValueError:
        raise _invalid("subscription.keys.p256dh", "must be an uncompressed P-256 point on the curve") from None
    auth = _key_bytes(keys.get("auth"), "subscription.keys.auth")
    if len(auth) != AUTH_BYTES:
        raise _invalid("subscription.keys.auth", f"must be {AUTH_BYTES} bytes")
    return {"endpoint": endpoint, "p256dh": b64url(p256dh), "auth": b64url(auth)}


# ---------------------------------------------------------------------------------------
# Sending
# ---------------------------------------------------------------------------------------


def origin(endpoint: str) -> str:
    """RFC 8292 §2: the token's audience is the push resource's origin."""
    url = urlsplit(endpoint)
    default = {"https": 443, "http": 80}.get(url.scheme)
    port = f":{url.port}" if url.port is not None and url.port != default else ""
    return f"{url.scheme}://{(url.hostname or '').lower()}{port}"


def retry_after_s(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After as seconds (RFC 9110 §10.2.3: delay-seconds or an HTTP date); None when
    absent or unreadable; bounded to MAX_RETRY_AFTER_S."""
    if not value:
        return None
    value = value.strip()[:64]
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)


def result_for(response: httpx.Response) -> Result:
    """A push service's answer as a Result (RFC 8030 §5, and what FCM, Mozilla autopush,
    Apple and Microsoft document for their Web Push endpoints)."""
    status = response.status_code
    later = retry_after_s(response.headers.get("retry-after"))
    if status in (201, 202):
        return Result(outcome=Outcome.SENT, status=status)
    if status in (404, 410):  # the subscription expired or was unsubscribed
        return Result(outcome=Outcome.GONE, reason=f"http-{status}", status=status)
    if status == 429:
        return Result(outcome=Outcome.RATE_LIMITED, reason="http-429", retry_after_s=later, status=status)
    if status in (401, 403):  # the VAPID token or key refused: ours to mend, the push may go later
        return Result(outcome=Outcome.RETRY, reason=f"vapid-refused-{status}", retry_after_s=later, status=status)
    if status >= 500:
        return Result(outcome=Outcome.RETRY, reason=f"http-{status}", retry_after_s=later, status=status)
    # 400 (a header or body the service refuses), 413 (too large) and anything else: this
    # message can never go as it is.
    return Result(outcome=Outcome.PERMANENT, reason=f"http-{status}", status=status)


# What is read of a push service's answer at most (they answer a few hundred bytes); a
# longer one is closed unread past this.
MAX_ANSWER_BYTES = 8192


async def _read_answer(response: httpx.Response) -> None:
    """Read the answer's body to its end, or until MAX_ANSWER_BYTES, and drop it."""
    size = 0
    async for chunk in response.aiter_raw():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            return


class WebPushSender:
    """Posts pushes to the subscriptions' push services through one HTTP/2 client."""

    channel = WEBPUSH

    def __init__(self, settings: Settings, key: VapidKey, *, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._key = key
        self._clock = clock
        self._client = gateway_client(settings)
        # Per origin: the token and when it expires. Bounded by the allowed push services
        # (a handful of origins); canary loopback receivers add one each.
        self._tokens: dict[str, tuple[str, float]] = {}

    def host(self, push: Push) -> str:
        return (urlsplit(str(push.target.get("endpoint", ""))).hostname or "").lower()

    def authorization(self, endpoint: str) -> str:
        """`vapid t=<JWT>, k=<public key>` (RFC 8292 §3), the token made once per origin and
        again before it nears its end."""
        audience = origin(endpoint)
        now = self._clock()
        cached = self._tokens.get(audience)
        if cached is None or cached[1] - now < TOKEN_RENEW_S:
            expires = int(now) + TOKEN_LIFETIME_S
            claims = {"aud": audience, "exp": expires, "sub": self._settings.webpush_subject}
            cached = (es256(self._key.private, claims), float(expires))
            if len(self._tokens) >= 64:
                self._tokens.clear()
            self._tokens[audience] = cached
        return f"vapid t={cached[0]}, k={self._key.public_b64}"

    def request_headers(self, push: Push) -> dict[str, str]:
        endpoint = str(push.target["endpoint"])
        headers = {
            "Authorization": self.authorization(endpoint),
            "TTL": str(max(0, int(push.ttl_s))),
            "Urgency": "high",
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
        }
        topic = push.topic[:MAX_TOPIC]
        if topic and set(topic) <= _B64URL:
            headers["Topic"] = topic
        return headers

    async def send(self, push: Push) -> Result:
        if len(push.payload) > MAX_PLAINTEXT:  # push_payload keeps within it: a bug upstream
            return Result(outcome=Outcome.PERMANENT, reason="payload-too-large")
        try:
            endpoint = str(push.target["endpoint"])
            body = encrypt(push.payload, b64url_decode(str(push.target["p256dh"])),
                           b64url_decode(str(push.target["auth"])))
        except (KeyError, ValueError):  # a record check_target did not write
            return Result(outcome=Outcome.PERMANENT, reason="target-invalid")
        try:
            # One deadline for the whole exchange (httpx's bound each read, not the sum).
            # The status and headers say all, but the answer's (small) body is read to its
            # end, bounded: httpcore frees the request's slot on its HTTP/2 connection when
            # the response closes, while h2 counts the stream as open until the service's
            # END_STREAM; closed before it, the streams of a busy connection passed the
            # service's SETTINGS_MAX_CONCURRENT_STREAMS (100 at many) and every push over it
            # failed with h2's TooManyStreamsError (bench/push_bench.py, docs/performance.md).
            async with asyncio.timeout(self._settings.push_timeout_s):
                async with self._client.stream("POST", endpoint, content=body,
                                               headers=self.request_headers(push)) as response:
                    result = result_for(response)
                    await _read_answer(response)
        except (TimeoutError, httpx.TimeoutException):
            return Result(outcome=Outcome.RETRY, reason="timeout")
        except httpx.HTTPError as exc:
            log.debug("push service unreachable", extra={"host": self.host(push), "error": str(exc)[:200]})
            return Result(outcome=Outcome.RETRY, reason="connect")
        if result.reason.startswith("vapid-refused"):
            # Ours to mend: most often subscriptions made with another node's VAPID key.
            log.warning("push service refused the VAPID token", extra={"host": self.host(push),
                                                                        "status": result.status})
        return result

    async def aclose(self) -> None:
        await self._client.aclose()


def make_sender(settings: Settings) -> WebPushSender:
    return WebPushSender(settings, vapid_key(settings))

"""Bearer tokens: issuer accounts and devices, looked up in the replicated buckets."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from starlette.requests import HTTPConnection

from tocsin.api.device_records import is_expired, renew_if_due
from tocsin.api.services import Services
from tocsin.errors import DEVICE_UNKNOWN, UNAUTHENTICATED, UNKNOWN_TOKEN, Rejected
from tocsin.policy import Issuer

_UNCACHED = object()


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def bearer(conn: HTTPConnection, *, query: bool = False) -> str | None:
    """The bearer token; `?token=` only where a browser cannot set headers (device streams)."""
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return (conn.query_params.get("token") or None) if query else None


async def issuer_for(conn: HTTPConnection, services: Services) -> Issuer:
    """The issuer account behind the request's bearer token.

    Raises:
        Rejected: no token (401 auth.missing-token) or an unknown one (401).
    """
    token = bearer(conn)
    if not token:
        raise Rejected(UNAUTHENTICATED, headers={"WWW-Authenticate": "Bearer"})
    digest = token_digest(token)
    record: Any = services.issuer_cache.get(digest, _UNCACHED)
    if record is _UNCACHED:
        record = await services.store.issuers.get(digest)
        services.issuer_cache.put(digest, record)  # None too: a repeated wrong token costs no read
    if record is None:
        raise Rejected(UNKNOWN_TOKEN, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return Issuer.from_json(record)


async def device_for(conn: HTTPConnection, services: Services, *, renew: bool = True) -> tuple[str, dict[str, Any]]:
    """The device behind a device token (`<device id>.<secret>`); its record renewed if due.

    Raises:
        Rejected: 401 device.unknown (also once expired), so the client registers again.
    """
    token = bearer(conn, query=True) or ""
    device_id, _, secret = token.partition(".")
    record = services.device_cache.get(device_id)
    if record is None and device_id:
        record = await services.store.devices.get(device_id)
        if record is not None:
            services.device_cache[device_id] = record
    now = services.clock()
    if (record is None or is_expired(record, now, services.settings)
            or not hmac.compare_digest(str(record.get("secret_sha256", "")), token_digest(secret))):
        raise Rejected(DEVICE_UNKNOWN, "register the device again", headers={"WWW-Authenticate": "Bearer"})
    if renew:
        await renew_if_due(services.store.devices, services.device_cache, device_id, record, now, services.settings)
    return device_id, record

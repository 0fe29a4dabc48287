"""Bearer tokens: issuer accounts (accounts/book.py) and devices, from the replicated buckets."""

from __future__ import annotations

import hmac
from typing import Any

from starlette.requests import HTTPConnection

from tocsin.accounts.model import new_token, token_digest
from tocsin.api.device_records import is_expired, renew_if_due
from tocsin.api.ratelimit import RatesByKey, retry_after
from tocsin.api.services import Services
from tocsin.errors import (
    DEVICE_UNKNOWN, ISSUER_RATE_LIMITED, ROLE_REQUIRED, UNAUTHENTICATED, UNKNOWN_TOKEN, Problem, Rejected,
)
from tocsin.policy import Issuer, Role

__all__ = ["bearer", "device_for", "issuer_for", "new_token", "require", "take_alert_slot", "token_digest"]


def bearer(conn: HTTPConnection, *, query: bool = False) -> str | None:
    """The bearer token; `?token=` only where a browser cannot set headers (device streams)."""
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return (conn.query_params.get("token") or None) if query else None


async def issuer_for(conn: HTTPConnection, services: Services) -> Issuer:
    """The acting Issuer behind the request's bearer token: token -> principal ->
    organisation, from this node's mirror of the accounts bucket (accounts/book.py).

    Raises:
        Rejected: 401 auth.missing-token, auth.unknown-token, auth.token-expired,
            auth.token-revoked, auth.account-disabled.
    """
    token = bearer(conn)
    if not token:
        raise Rejected(UNAUTHENTICATED, headers={"WWW-Authenticate": "Bearer"})
    digest = token_digest(token)
    if services.issuer_cache.get(digest, False) is None:  # known to name no account, lately
        raise Rejected(UNKNOWN_TOKEN, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    try:
        return await services.accounts.resolve(digest, services.clock())
    except Rejected as refused:
        if refused.problem is UNKNOWN_TOKEN and services.accounts.mirror.get(f"token.{digest}") is None:
            services.issuer_cache.put(digest, None)  # a repeated wrong token costs no read
        raise


def require(issuer: Issuer, role: Role) -> None:
    """Refuse an issuer without `role`.

    Raises:
        Rejected: 403 auth.role-required.
    """
    if not issuer.has(role):
        raise Rejected(ROLE_REQUIRED, f"{issuer.principal or issuer.name} lacks the {role.value} role")


def take_alert_slot(issuer: Issuer, services: Services) -> None:
    """Count one alert against its organisation's rate on this node (0: no limit).

    Raises:
        Rejected: 429 policy.issuer-rate-limited with Retry-After.
    """
    take_org_slot(services.issuer_rates, issuer.name, issuer.alerts_per_min, ISSUER_RATE_LIMITED,
                  f"{issuer.name!r} may send {issuer.alerts_per_min} alerts a minute on this node")


def take_org_slot(rates: RatesByKey, org: str, per_min: int, problem: Problem, detail: str) -> None:
    """Count one request of `org` against `per_min` on this node (0: no limit).

    Raises:
        Rejected: `problem` (a 429) with `detail` and Retry-After.
    """
    if per_min <= 0:
        return
    wait_s = rates.take(org, per_min)
    if wait_s > 0:
        raise Rejected(problem, detail, headers={"Retry-After": retry_after(wait_s)})


async def device_for(conn: HTTPConnection, services: Services, *, renew: bool = True) -> tuple[str, dict[str, Any]]:
    """The device behind a device token (`<device id>.<secret>`); its record renewed if due.

    Raises:
        Rejected: 401 device.unknown (also once expired), so the client registers again.
    """
    token = bearer(conn, query=True) or ""
    device_id, _, secret = token.partition(".")
    record = services.device_cache.get(device_id)
    if record is None and device_id:
        # Read, not put in the index: only the device feed writes it in the bucket's order
        # (a read put here could undo a delete the feed applied meanwhile, and the index
        # snapshot would keep it across restarts). The feed brings the record within
        # milliseconds of its write; until then each connect of it reads the bucket.
        record = await services.store.devices.get(device_id)
    now = services.clock()
    if (record is None or is_expired(record, now, services.settings)
            or not hmac.compare_digest(str(record.get("secret_sha256", "")), token_digest(secret))):
        raise Rejected(DEVICE_UNKNOWN, "register the device again", headers={"WWW-Authenticate": "Bearer"})
    if renew:
        await renew_if_due(services.store.devices, services.device_cache, device_id, record, now, services.settings)
    return device_id, record

"""The accounts every deployment starts with: the deployment's own organisation and its admin.

The bootstrap admin is `user:admin` with the admin role in the deployment's organisation
(DEPLOYMENT_ORG). Its token is TOCSIN_ADMIN_TOKEN when set, else one made on the
deployment's first start and printed once. Each record is created only if absent, so a
rotated or revoked admin token stays so across restarts, whatever the environment says.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tocsin.accounts.model import (
    BOOTSTRAP_ADMIN,
    DEPLOYMENT_ORG,
    Organisation,
    Principal,
    Token,
    new_token,
    org_key,
    principal_key,
    token_digest,
    token_key,
)
from tocsin.policy import DEFAULT_STATUSES, Role
from tocsin.store.base import Records

_BOOTSTRAP_KEY = "bootstrap"


async def bootstrap_admin(records: Records, admin_token: str) -> str | None:
    """Create the deployment's organisation, its admin and the admin's token where absent;
    return the token only when this call made it up (to be shown once)."""
    now = datetime.now(UTC)
    org = Organisation(name=DEPLOYMENT_ORG, senders=("*",), statuses=DEFAULT_STATUSES, admin=True,
                       alerts_per_min=0, created=now.isoformat())
    await _create_absent(records, org_key(DEPLOYMENT_ORG), org.as_json())
    admin = Principal(id=BOOTSTRAP_ADMIN, org=DEPLOYMENT_ORG, roles=frozenset({Role.ADMIN}), created=now.isoformat())
    await _create_absent(records, principal_key(BOOTSTRAP_ADMIN), admin.as_json())
    made = None
    if not admin_token:
        if not await records.create(_BOOTSTRAP_KEY, {"created": now.isoformat()}):
            return None
        admin_token = made = new_token("tca")
    digest = token_digest(admin_token)
    token = Token(digest=digest, org=DEPLOYMENT_ORG, principal=BOOTSTRAP_ADMIN, created=now, label="bootstrap admin")
    await _create_absent(records, token_key(digest), token.as_json())
    return made


async def _create_absent(records: Records, key: str, value: dict[str, Any]) -> None:
    """Create the record unless present (read first: a restart writes nothing)."""
    if await records.get(key) is None:
        await records.create(key, value)

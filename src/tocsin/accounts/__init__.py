"""Accounts: issuer organisations, the users and API clients acting for them, their tokens.

`grant` is how code outside this package (the bootstrap, tests, benches) gives a token the
rights of an `Issuer`; the accounts file and the admin API write the same records
(accounts/model.py) in the accounts bucket.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from tocsin.accounts.model import Organisation, Principal, Token, org_key, principal_key, token_digest, token_key
from tocsin.policy import Issuer, Role
from tocsin.store.base import Store


async def grant(store: Store, token: str, issuer: Issuer) -> None:
    """Let `token` act as `issuer` (its organisation's rights, its principal and roles).

    The organisation's record becomes `issuer`'s rights (the last grant for an organisation
    sets them; its state, creation date and pending proposal stay); the principal, when
    `issuer` names one, gets `issuer.roles`; the token is valid, without expiry.
    """
    await grant_digest(store, token_digest(token), issuer)


async def grant_digest(store: Store, digest: str, issuer: Issuer) -> None:
    """`grant` for a token known only by its SHA-256."""
    records = store.accounts
    now = datetime.now(UTC)
    existing = await records.get(org_key(issuer.name))
    old = Organisation.from_json(existing) if existing is not None else None
    org = Organisation.of_issuer(issuer, created=old.created if old else now.isoformat())
    if old is not None:
        org = replace(org, proposed=old.proposed, active=old.active)
    await records.put(org_key(issuer.name), org.as_json())
    roles = issuer.roles | {Role.ADMIN} if issuer.admin else issuer.roles
    if issuer.principal:
        principal = Principal(id=issuer.principal, org=issuer.name, roles=roles, created=now.isoformat())
        await records.put(principal_key(issuer.principal), principal.as_json())
    token = Token(digest=digest, org=issuer.name, principal=issuer.principal,
                  roles=frozenset() if issuer.principal else roles, created=now)
    await records.put(token_key(digest), token.as_json())


"""Accounts: issuer organisations, the users and API clients acting for them, their tokens.

`grant` is how code outside this package (the bootstrap, tests, benches, the fault suite's
fleet through the accounts file) gives a token the rights of an `Issuer`.
"""

from __future__ import annotations

from tocsin.api.auth import token_digest
from tocsin.policy import Issuer
from tocsin.store.base import Store


async def grant(store: Store, token: str, issuer: Issuer) -> None:
    """Let `token` act as `issuer` (its organisation's rights, its principal and roles)."""
    await grant_digest(store, token_digest(token), issuer)


async def grant_digest(store: Store, digest: str, issuer: Issuer) -> None:
    """`grant` for a token known only by its SHA-256 (an accounts file holds no secret)."""
    await store.issuers.put(digest, issuer.as_json())

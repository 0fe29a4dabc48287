"""The accounts bucket as a node sees it: an in-memory mirror, token resolution, writes.

Every node mirrors the whole bucket (`Records.mirror`), so a token revoked on one node is
refused on every node as soon as the bucket's watch delivers the change (milliseconds),
and a request costs no bucket read. A key the mirror does not hold yet (written on another
node a moment ago, or before the mirror's first pass) is read from the bucket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

from tocsin.accounts.model import Organisation, Principal, Token, org_key, principal_key, token_key
from tocsin.errors import ACCOUNT_DISABLED, TOKEN_EXPIRED, TOKEN_REVOKED, UNKNOWN_TOKEN, Rejected
from tocsin.policy import Issuer
from tocsin.store.base import Records

# A write waits this long for the mirror to show it, so that the next read on this node
# (a listing right after a create) sees it; past that it returns anyway.
SEEN_WAIT_S = 2.0


class Mirror(dict[str, dict[str, Any]]):
    """The bucket's records by key, kept by `Records.mirror`; a writer may wait for a value."""

    def __init__(self) -> None:
        super().__init__()
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}

    def __setitem__(self, key: str, value: dict[str, Any]) -> None:
        super().__setitem__(key, value)
        # Any write of the key wakes its writers: a newer one came after theirs, or was theirs.
        for future in self._waiting.pop(key, []):
            if not future.done():
                future.set_result(None)

    async def seen(self, key: str, value: dict[str, Any], timeout_s: float = SEEN_WAIT_S) -> bool:
        """Wait until the key is written (with `value` or a later one); False on timeout."""
        if self.get(key) == value:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        try:
            async with asyncio.timeout(timeout_s):
                await future
            return True
        except TimeoutError:
            return False
        finally:
            waiting = self._waiting.get(key)
            if waiting is not None:
                waiting[:] = [w for w in waiting if w is not future]
                if not waiting:
                    self._waiting.pop(key, None)


def _unknown() -> Rejected:
    return Rejected(UNKNOWN_TOKEN, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class Accounts:
    """Organisations, principals and tokens on one node: read from the mirror, written through."""

    def __init__(self, records: Callable[[], Records]) -> None:
        self._records = records  # called on use: the bucket exists once the store is ensured
        self.mirror = Mirror()
        # Decoded records by key, with the raw value they came from: a request decodes
        # nothing again until the record changes (a territory's polygons are parsed once).
        self._decoded_by_key: dict[str, tuple[dict[str, Any], Any]] = {}

    @property
    def records(self) -> Records:
        return self._records()

    async def get(self, key: str) -> dict[str, Any] | None:
        found = self.mirror.get(key)
        if found is None:
            found = await self.records.get(key)
        return found

    async def put(self, key: str, value: dict[str, Any]) -> None:
        """Write the record, then wait (bounded) until this node's mirror shows it."""
        await self.records.put(key, value)
        await self.mirror.seen(key, value)

    async def create(self, key: str, value: dict[str, Any]) -> bool:
        """Create unless present; False when it already was."""
        created = await self.records.create(key, value)
        if created:
            await self.mirror.seen(key, value)
        return created

    async def org(self, name: str) -> Organisation | None:
        found: Organisation | None = await self._one(org_key(name), Organisation.from_json)
        return found

    async def principal(self, principal: str) -> Principal | None:
        found: Principal | None = await self._one(principal_key(principal), Principal.from_json)
        return found

    async def token(self, digest: str) -> Token | None:
        found: Token | None = await self._one(token_key(digest), Token.from_json)
        return found

    async def _one(self, key: str, decode: Callable[[dict[str, Any]], Any]) -> Any:
        raw = await self.get(key)
        if raw is None:
            return None
        cached = self._decoded_by_key.get(key)
        if cached is not None and cached[0] is raw:
            return cached[1]
        decoded = decode(raw)
        if key in self.mirror:  # what the bucket read returned may be gone tomorrow: not kept
            if len(self._decoded_by_key) > 2 * len(self.mirror) + 64:
                self._decoded_by_key.clear()  # keys the mirror dropped
            self._decoded_by_key[key] = (raw, decoded)
        return decoded

    def orgs(self) -> list[Organisation]:
        return sorted(self._decoded("org.", Organisation.from_json), key=lambda o: o.name)

    def principals(self, org: str = "", kind: str = "") -> list[Principal]:
        found = [p for p in self._decoded("principal.", Principal.from_json)
                 if (not org or p.org == org) and (not kind or p.kind == kind)]
        return sorted(found, key=lambda p: p.id)

    def tokens(self, org: str = "", principal: str = "") -> list[Token]:
        found = [t for t in self._decoded("token.", Token.from_json)
                 if (not org or t.org == org) and (not principal or t.principal == principal)]
        return sorted(found, key=lambda t: t.created)

    def token_by_id(self, token_id: str) -> Token | None:
        return next((t for t in self._decoded("token.", Token.from_json) if t.id == token_id), None)

    def _decoded(self, prefix: str, decode: Callable[[dict[str, Any]], Any]) -> list[Any]:
        values = [decode(v) for k, v in list(self.mirror.items()) if k.startswith(prefix)]
        return [v for v in values if v is not None]

    async def resolve(self, digest: str, now: datetime) -> Issuer:
        """token -> principal -> organisation -> the acting Issuer.

        Raises:
            Rejected: 401 auth.unknown-token, auth.token-expired, auth.token-revoked,
                auth.account-disabled (the principal or organisation is disabled).
        """
        token = await self.token(digest)
        if token is None or token.digest != digest:
            raise _unknown()
        if token.revoked is not None:
            raise Rejected(TOKEN_REVOKED, f"token {token.id} was revoked")
        if token.is_expired(now):
            raise Rejected(TOKEN_EXPIRED, f"token {token.id} expired at {token.expires}")
        org = await self.org(token.org)
        if org is None or org.name != token.org:  # a record under another's key names no one
            raise _unknown()
        if not org.active:
            raise Rejected(ACCOUNT_DISABLED, f"organisation {org.name!r} is disabled")
        if not token.principal:
            return org.issuer("", token.roles)
        principal = await self.principal(token.principal)
        if principal is None or principal.id != token.principal or principal.org != org.name:
            raise _unknown()
        if not principal.active:
            raise Rejected(ACCOUNT_DISABLED, f"{principal.id} is disabled")
        return org.issuer(principal.id, principal.roles)

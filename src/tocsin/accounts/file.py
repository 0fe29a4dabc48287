"""The declarative accounts file (TOML), applied at every start (TOCSIN_ACCOUNTS_FILE).

    [[issuers]]
    name = "seismic-network"              # the organisation
    senders = ["eew@seismo.example.org"]
    statuses = ["Actual", "Exercise", "Test"]
    approval = { mode = "none" }          # an automated source: published at once
    territory = { polygons = ["45,5 45,7 47,7 47,5 45,5"] }
    alerts_per_min = 120

    [[issuers.clients]]                   # API clients (and [[issuers.users]]) acting for it
    name = "eew-feed"
    roles = ["author"]
    token_sha256 = "9f86d0..."            # or token_file = "/run/secrets/eew-token"
    expires = 2027-06-30T00:00:00Z        # optional

    [[issuers.tokens]]                    # tokens of the organisation itself (no principal)
    token_file = "prober-token"
    roles = ["author"]

The file holds no secret: a token is named by its SHA-256, or read from a file of its own.
Applying it is idempotent: a record equal to what the file says is not written again, and
each record written is audited with actor "file:<path>". The file is the deployment's own
automation: an approval policy it sets takes effect without a second admin. It never
revives a token an admin revoked, and it removes nothing it no longer lists.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tocsin.accounts import validate
from tocsin.accounts.model import Organisation, Principal, Token, org_key, principal_key, token_key
from tocsin.accounts.validate import Invalid
from tocsin.errors import ACCOUNTS_FILE_INVALID, Rejected
from tocsin.policy import Role
from tocsin.store.audit import Action, AuditEntry
from tocsin.store.base import Store

_TOKEN_FIELDS = frozenset({"token_sha256", "token_file", "expires"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Declared:
    """Everything the file declares, read and checked before anything is written."""

    orgs: tuple[Organisation, ...]
    principals: tuple[Principal, ...]
    tokens: tuple[Token, ...]


def read_accounts_file(path: Path, now: datetime | None = None) -> Declared:
    """Every organisation, user, client and token the file declares.

    Raises:
        Rejected: accounts.file-invalid, naming the file and the entry.
    """
    now = now or datetime.now(UTC)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise Rejected(ACCOUNTS_FILE_INVALID, f"{path}: {exc}") from None
    orgs: list[Organisation] = []
    principals: list[Principal] = []
    tokens: list[Token] = []
    for n, entry in enumerate(_tables(data.get("issuers"), f"{path}: issuers")):
        where = f"{path}: issuers[{n}]"
        fields = {k: v for k, v in entry.items() if k not in ("users", "clients", "tokens")}
        try:
            name = validate.org_name(fields.get("name"))
            org = validate.organisation(fields, Organisation(name=name, created=now.isoformat()))
        except Invalid as exc:
            raise Rejected(ACCOUNTS_FILE_INVALID, f"{where} ({entry.get('name', '?')}): {exc}") from None
        orgs.append(org)
        for kind in ("users", "clients"):
            for m, member in enumerate(_tables(entry.get(kind), f"{where}.{kind}")):
                spot = f"{where}.{kind}[{m}] ({member.get('name', '?')})"
                principal, token = _member(member, kind[:-1] if kind == "users" else "client", org, path, now, spot)
                principals.append(principal)
                tokens.extend(token)
        for m, item in enumerate(_tables(entry.get("tokens"), f"{where}.tokens")):
            spot = f"{where}.tokens[{m}]"
            try:
                validate.unknown_fields(item, _TOKEN_FIELDS | {"roles"})
                roles = validate.roles(item.get("roles", ["author"]))
            except Invalid as exc:
                raise Rejected(ACCOUNTS_FILE_INVALID, f"{spot}: {exc}") from None
            tokens.append(_token(item, org.name, "", roles, path.parent, now, spot))
    _unique([o.name for o in orgs], path, "organisation")
    _unique([p.id for p in principals], path, "user or client")
    _unique([t.digest for t in tokens], path, "token")
    return Declared(orgs=tuple(orgs), principals=tuple(principals), tokens=tuple(tokens))


def _member(member: dict[str, Any], kind: str, org: Organisation, path: Path, now: datetime,
            spot: str) -> tuple[Principal, list[Token]]:
    fields = {k: v for k, v in member.items() if k not in _TOKEN_FIELDS}
    try:
        principal_id = validate.principal_id(kind, fields.pop("name", None))
        fields.setdefault("roles", ["author"])
        principal = validate.principal(fields, Principal(id=principal_id, org=org.name, created=now.isoformat()))
    except Invalid as exc:
        raise Rejected(ACCOUNTS_FILE_INVALID, f"{spot}: {exc}") from None
    if "token_sha256" not in member and "token_file" not in member:
        return principal, []
    return principal, [_token(member, org.name, principal.id, frozenset(), path.parent, now, spot)]


def _token(entry: dict[str, Any], org: str, principal: str, roles: frozenset[Role], base: Path,
           now: datetime, spot: str) -> Token:
    try:
        expires = validate.expiry(entry.get("expires"), now)
    except Invalid as exc:
        raise Rejected(ACCOUNTS_FILE_INVALID, f"{spot}: {exc}") from None
    return Token(digest=_digest(entry, base, spot), org=org, principal=principal, roles=roles, created=now,
                 expires=expires, label="accounts file")


async def apply_accounts_file(store: Store, path: Path,
                              known: Callable[[str, str], Awaitable[bool]] | None = None) -> int:
    """Write what the file declares and differs from the bucket, auditing each write as
    "file:<path>"; returns how many records were written (0 on an unchanged restart).
    `known(scheme, code)`: whether a named area a territory gives exists (None: not checked).

    Raises:
        Rejected: accounts.file-invalid (nothing was written).
    """
    declared = read_accounts_file(path)
    if known is not None:
        for org in declared.orgs:
            for n, (scheme, code) in enumerate(org.territory.named() if org.territory else ()):
                if not await known(scheme, code):
                    raise Rejected(ACCOUNTS_FILE_INVALID,
                                   f"{path}: issuers ({org.name}): territory.areas[{n}]: {scheme} has no code {code!r}")
    actor = f"file:{path}"
    records = store.accounts
    written = 0

    async def audit(action: Action, subject: str, org: str, detail: dict[str, Any]) -> None:
        await store.audit.append(AuditEntry(action=action, subject=subject, actor=actor, org=org, source=actor,
                                            detail=detail))

    for org in declared.orgs:
        raw = await records.get(org_key(org.name))
        old = None if raw is None else Organisation.from_json(raw)
        if old is not None and org.same_as(old):
            continue
        await records.put(org_key(org.name), (org if old is None else _kept(org, old)).as_json())
        written += 1
        await audit(Action.ACCOUNT_CREATED if old is None else Action.ACCOUNT_CHANGED, org.name, org.name,
                    {"kind": "organisation"})
        if old is not None and old.approval != org.approval:
            await audit(Action.POLICY_CHANGED, org.name, org.name, {"approval": org.approval.as_json(), "by": actor})
    for principal in declared.principals:
        raw = await records.get(principal_key(principal.id))
        found = None if raw is None else Principal.from_json(raw)
        if found is not None and principal.same_as(found):
            continue
        await records.put(principal_key(principal.id), principal.as_json())
        written += 1
        action = Action.ACCOUNT_CREATED if found is None else Action.ACCOUNT_CHANGED
        await audit(action, principal.id, principal.org, {"kind": principal.kind, "roles": sorted(principal.roles)})
    for token in declared.tokens:
        written += await _apply_token(store, token, audit)
    return written


def _kept(org: Organisation, old: Organisation) -> Organisation:
    """What the file says, keeping the creation date (a pending admin proposal is dropped:
    the file decides the policy)."""
    return replace(org, created=old.created or org.created)


Audit = Callable[[Action, str, str, dict[str, Any]], Awaitable[None]]


async def _apply_token(store: Store, token: Token, audit: Audit) -> int:
    raw = await store.accounts.get(token_key(token.digest))
    found = None if raw is None else Token.from_json(raw)
    if found is not None:
        if found.revoked is not None:  # an admin revoked it: the file does not bring it back
            return 0
        same = (found.org, found.principal, found.roles, found.expires) == (
            token.org, token.principal, token.roles, token.expires)
        if same:
            return 0
        token = Token(digest=token.digest, org=token.org, principal=token.principal, roles=token.roles,
                      created=found.created, expires=token.expires, label=token.label)
    await store.accounts.put(token_key(token.digest), token.as_json())
    await audit(Action.TOKEN_CREATED, token.id, token.org,
                {"principal": token.principal, "expires": token.as_json()["expires"], "changed": found is not None})
    return 1


def _tables(raw: object, where: str) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise Rejected(ACCOUNTS_FILE_INVALID, f"{where} must be an array of tables")
    return raw


def _unique(names: list[str], path: Path, what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise Rejected(ACCOUNTS_FILE_INVALID, f"{path}: {what} {name!r} is declared twice")
        seen.add(name)


def _digest(member: dict[str, Any], base: Path, where: str) -> str:
    digest = member.get("token_sha256")
    if isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest):
        return digest
    token_file = member.get("token_file")
    if isinstance(token_file, str) and token_file:
        try:
            token = (base / token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise Rejected(ACCOUNTS_FILE_INVALID, f"{where}: token_file {token_file}: {exc.strerror}") from None
        if token:
            return hashlib.sha256(token.encode()).hexdigest()
    raise Rejected(ACCOUNTS_FILE_INVALID, f"{where} needs token_sha256 (64 hex digits) or a non-empty token_file")

"""The declarative accounts file (TOML), applied at start (TOCSIN_ACCOUNTS_FILE).

    [[issuers]]
    name = "seismic-network"              # the organisation
    senders = ["eew@seismo.example.org"]
    statuses = ["Actual", "Exercise", "Test"]
    approval = { mode = "none" }          # an automated source: published at once

    [[issuers.clients]]                   # API clients (and [[issuers.users]]) acting for it
    name = "eew-feed"
    roles = ["author"]
    token_sha256 = "9f86d0..."            # or token_file = "/run/secrets/eew-token"

The file holds no secret: a token is named by its SHA-256, or read from a file of its own.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tocsin.errors import ACCOUNTS_FILE_INVALID, Rejected
from tocsin.policy import Issuer
from tocsin.store.base import Store

from tocsin.accounts import grant_digest


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    """One token of the file, with the rights it gets."""

    digest: str
    issuer: Issuer


def read_accounts_file(path: Path) -> list[Grant]:
    """Every token the file declares, with its rights (decoded fail-closed).

    Raises:
        Rejected: accounts.file-invalid, naming the file and the entry.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise Rejected(ACCOUNTS_FILE_INVALID, f"{path}: {exc}") from None
    grants: list[Grant] = []
    for n, org in enumerate(_tables(data.get("issuers"), f"{path}: issuers")):
        where = f"{path}: issuers[{n}]"
        for kind in ("users", "clients"):
            for m, member in enumerate(_tables(org.get(kind), f"{where}.{kind}")):
                record: dict[str, Any] = {k: v for k, v in org.items() if k not in ("users", "clients")}
                principal = f"{kind[:-1] if kind == 'users' else 'client'}:{member.get('name', '')}"
                record.update(principal=principal, roles=member.get("roles", ["author"]))
                try:
                    issuer = Issuer.from_json(record)
                except (KeyError, TypeError) as exc:
                    raise Rejected(ACCOUNTS_FILE_INVALID, f"{where}: {exc}") from None
                grants.append(Grant(digest=_digest(member, path.parent, f"{where}.{kind}[{m}]"), issuer=issuer))
    return grants


async def apply_accounts_file(store: Store, path: Path) -> int:
    """Grant every token the file declares; returns how many."""
    grants = read_accounts_file(path)
    for g in grants:
        await grant_digest(store, g.digest, g.issuer)
    return len(grants)


def _tables(raw: object, where: str) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise Rejected(ACCOUNTS_FILE_INVALID, f"{where} must be an array of tables")
    return raw


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

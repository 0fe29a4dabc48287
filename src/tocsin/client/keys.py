"""The keys a device trusts: where trust comes from, validity dates, key-set statements.

Trust starts from configuration (a key file), the key set shipped with the client, or,
only when asked, the first node's keys. After that only a statement signed by a key
already trusted changes the set; a node serving other keys changes nothing
(docs/security.md, Keys).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from tocsin.errors import TocsinError
from tocsin.signing import MAX_STATEMENTS, STATEMENT_TYPE, is_valid_at, keys_by_kid, verify

log = logging.getLogger(__name__)

Keys = dict[str, dict[str, Any]]

# The key set a build of the client ships with (empty in the source tree: a deployment
# that builds its own app puts its keys there).
SHIPPED_FILE = "trusted-keys.json"


class NoTrustedKeys(TocsinError):
    """The client was given no key to trust and was not told to trust on first use."""


class KeyFileInvalid(TocsinError, ValueError):
    """A key file that cannot be read as a key set holding at least one Ed25519 key."""


def valid_keys(keys: Keys, now: datetime) -> Keys:
    """The keys that may verify something at `now`."""
    return {kid: jwk for kid, jwk in keys.items() if is_valid_at(jwk, now)}


def verify_at(keys: Keys, now: datetime, kid: str, payload: bytes, signature: str) -> bool:
    """Whether a key trusted and valid at `now` signed exactly `payload`; never raises."""
    jwk = keys.get(kid)
    if jwk is None or not is_valid_at(jwk, now):
        return False
    return verify({kid: jwk}, kid, payload, signature)


def parse_key_set(text: str, where: str) -> Keys:
    """The Ed25519 keys of a key-set document (`{"keys": [JWK, ...]}`, as nodes serve).

    Raises:
        KeyFileInvalid: not JSON, or no Ed25519 key in it.
    """
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise KeyFileInvalid(f"{where} is not JSON: {exc}") from None
    keys = keys_by_kid(body.get("keys") if isinstance(body, dict) else None)
    if not keys:
        raise KeyFileInvalid(f"{where} holds no Ed25519 key (expected {{\"keys\": [JWK, ...]}})")
    return keys


def load_key_file(path: Path) -> Keys:
    """The keys in a key file.

    Raises:
        KeyFileInvalid: the file cannot be read or holds no key.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeyFileInvalid(f"{path}: {exc.strerror or exc}") from None
    return parse_key_set(text, str(path))


def shipped_keys() -> Keys:
    """The key set shipped with this client; empty when none was."""
    try:
        text = resources.files("tocsin.client").joinpath(SHIPPED_FILE).read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        return {}
    try:
        return parse_key_set(text, SHIPPED_FILE)
    except KeyFileInvalid:
        return {}


@dataclass(frozen=True, slots=True, kw_only=True)
class Statement:
    """One signed key-set statement, not yet checked."""

    text: str
    kid: str
    sig: str
    issued_at: datetime
    keys: Keys

    @classmethod
    def parse(cls, raw: object) -> Statement | None:
        """The statement in a node's `statements` entry; None when it is not one."""
        if not isinstance(raw, dict):
            return None
        text, kid, sig = raw.get("statement"), raw.get("kid"), raw.get("sig")
        if not (isinstance(text, str) and isinstance(kid, str) and isinstance(sig, str)):
            return None
        try:
            body = json.loads(text)
            if body.get("type") != STATEMENT_TYPE:
                return None
            issued_at = datetime.fromisoformat(str(body["issued_at"]))
        except (AttributeError, KeyError, TypeError, ValueError):
            return None
        keys = keys_by_kid(body.get("keys"))
        if issued_at.tzinfo is None or not keys:
            return None
        return cls(text=text, kid=kid, sig=sig, issued_at=issued_at, keys=keys)


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted:
    """What a pass over a node's statements left: the trusted set and what changed."""

    keys: Keys
    since: datetime | None
    added: tuple[str, ...] = ()
    retired: tuple[str, ...] = ()
    refused: int = 0


def accept_statements(keys: Keys, since: datetime | None, statements: object, now: datetime) -> Accepted:
    """Apply, oldest first, each statement newer than `since` signed by a key trusted then.

    A statement replaces the whole set; keys it leaves out are retired. One signed by a
    key not trusted (or not valid now), or whose signature fails, is refused and counted.
    """
    entries = statements[:MAX_STATEMENTS] if isinstance(statements, list) else []
    parsed = [Statement.parse(raw) for raw in entries]
    refused = sum(1 for statement in parsed if statement is None)
    trusted, at = dict(keys), since
    for statement in sorted((s for s in parsed if s is not None), key=lambda s: s.issued_at):
        if at is not None and statement.issued_at <= at:
            continue  # already applied, or older than what was: a replay changes nothing
        if not verify_at(trusted, now, statement.kid, statement.text.encode("utf-8"), statement.sig):
            refused += 1
            continue
        trusted, at = dict(statement.keys), statement.issued_at
    return Accepted(
        keys=trusted,
        since=at,
        added=tuple(sorted(set(trusted) - set(keys))),
        retired=tuple(sorted(set(keys) - set(trusted))),
        refused=refused,
    )

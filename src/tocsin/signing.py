"""Ed25519 keys of a deployment: sign and verify the exact bytes of a payload."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from tocsin.secret_file import write_secret

log = logging.getLogger(__name__)

# RFC 8037 §2: an Ed25519 public key is 32 raw bytes, in a JWK as "x" (base64url).
_PUBLIC_KEY_BYTES = 32


def b64url_encode(data: bytes) -> str:
    """Base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding.

    Raises:
        ValueError: the text is not base64url.
    """
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded, altchars=b"-_", validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("not base64url") from exc


def key_id(public_raw: bytes) -> str:
    """The short stable id of a public key: first 16 hex chars of sha256 of its raw bytes."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


class SigningKey:
    """A deployment's Ed25519 private key, with its id and public JWK."""

    __slots__ = ("_private", "_public_raw", "kid")

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self._public_raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.kid = key_id(self._public_raw)

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh key, kept only in memory."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        """The PEM key at `path`.

        Raises:
            FileNotFoundError: there is no file.
            ValueError: the file holds no Ed25519 private key.
        """
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return cls(private)

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKey:
        """Load the PEM key at `path`, or create it (mode 0600, atomically) when absent.

        Raises:
            ValueError: the file exists but holds no Ed25519 private key.
        """
        try:
            return cls.load(path)
        except FileNotFoundError:
            key = cls.generate()
        try:
            key.save(path, replace=False)
        except FileExistsError:  # another process created the key meanwhile: theirs wins
            return cls.load(path)
        log.info("signing key created", extra={"kid": key.kid, "path": str(path)})
        return key

    def save(self, path: Path, *, replace: bool) -> None:
        """Write the private key as PEM, mode 0600, atomically.

        Raises:
            FileExistsError: `replace` is false and the file exists.
        """
        pem = self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_secret(path, pem, replace=replace)

    @property
    def public_raw(self) -> bytes:
        """The 32 raw bytes of the public key."""
        return self._public_raw

    def sign(self, payload: bytes) -> str:
        """The Ed25519 signature of exactly `payload`, base64url without padding."""
        return b64url_encode(self._private.sign(payload))

    def public_jwk(self) -> dict[str, str]:
        """The public key as a JWK (RFC 8037)."""
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64url_encode(self._public_raw),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        }


def public_key_from_jwk(jwk: Mapping[str, Any]) -> Ed25519PublicKey:
    """The Ed25519 public key in a JWK.

    Raises:
        ValueError: the JWK is not an Ed25519 public key.
    """
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise ValueError("not an Ed25519 JWK")
    x = jwk.get("x")
    if not isinstance(x, str):
        raise ValueError("JWK has no x")
    raw = b64url_decode(x)
    if len(raw) != _PUBLIC_KEY_BYTES:
        raise ValueError("JWK x is not 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def verify(jwks: Mapping[str, Mapping[str, Any]], kid: str, payload: bytes, signature: str) -> bool:
    """Whether `signature` is the key `kid`'s signature of exactly `payload`; never raises."""
    try:
        jwk = jwks.get(kid)
        if jwk is None:
            return False
        public = public_key_from_jwk(jwk)
        public.verify(b64url_decode(signature), payload)
    except (InvalidSignature, ValueError, TypeError, AttributeError):
        return False
    return True


def keys_by_kid(keys: object) -> dict[str, dict[str, Any]]:
    """Index a JWKS `keys` list by kid, skipping entries that are not Ed25519 JWKs."""
    found: dict[str, dict[str, Any]] = {}
    if not isinstance(keys, list):
        return found
    for jwk in keys:
        if isinstance(jwk, dict) and isinstance(jwk.get("kid"), str):
            try:
                public = public_key_from_jwk(jwk)
            except ValueError:
                continue
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            # The kid must be the key's own: a mislabelled key is not trusted.
            if key_id(raw) == jwk["kid"]:
                found[jwk["kid"]] = dict(jwk)
    return found


# A key-set statement: the whole set of keys a client is to trust from now on, each with
# its validity, signed by a key the client already trusts (docs/security.md, Keys).
STATEMENT_TYPE = "tocsin.key-set"


def with_validity(
    jwk: Mapping[str, Any], *, not_before: datetime | None = None, not_after: datetime | None = None
) -> dict[str, Any]:
    """The JWK with its validity dates (ISO 8601 UTC); a date left out keeps the JWK's own."""
    dated = dict(jwk)
    if not_before is not None:
        dated["not_before"] = not_before.isoformat()
    if not_after is not None:
        dated["not_after"] = not_after.isoformat()
    return dated


def key_statement(signer: SigningKey, keys: Sequence[Mapping[str, Any]], issued_at: datetime) -> dict[str, str]:
    """A statement, signed by `signer`, that `keys` (with their validity) are the key set.

    The signature covers the exact bytes of the `statement` text, as alerts' do.
    """
    body = {"type": STATEMENT_TYPE, "issued_at": issued_at.isoformat(), "keys": [dict(k) for k in keys]}
    text = json.dumps(body, separators=(",", ":"), sort_keys=True)
    return {"statement": text, "kid": signer.kid, "sig": signer.sign(text.encode("utf-8"))}


def _when(jwk: Mapping[str, Any], name: str) -> datetime | None:
    raw = jwk.get(name)
    if raw is None:
        return None
    when = datetime.fromisoformat(str(raw))
    if when.tzinfo is None:
        raise ValueError(f"{name} has no time zone")
    return when


def is_valid_at(jwk: Mapping[str, Any], now: datetime) -> bool:
    """Whether `now` lies within the key's not_before and not_after (each optional)."""
    try:
        not_before, not_after = _when(jwk, "not_before"), _when(jwk, "not_after")
    except (TypeError, ValueError):
        return False  # a date nobody can read bounds nothing: the key is not used
    return (not_before is None or not_before <= now) and (not_after is None or now < not_after)


# The node serves this many of the latest statements (a device further behind needs a
# fresh key file).
MAX_STATEMENTS = 16


def read_key_set(path: Path) -> dict[str, Any] | None:
    """The key-set file (`{"keys": [...], "statements": [...]}`), or None when absent.

    Raises:
        ValueError: the file is not a key set.
    """
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
        raise ValueError(f"{path} is not a key set")
    if not isinstance(body.get("statements", []), list):
        raise ValueError(f"{path}: statements is not a list")
    return body


def published_key_set(signer: SigningKey, path: Path) -> dict[str, Any]:
    """What a node serves: the key-set file's keys and statements, and its own key."""
    try:
        body = read_key_set(path)
    except (OSError, ValueError) as exc:
        log.warning("key set unreadable", extra={"path": str(path), "error": str(exc)[:200]})
        body = None
    keys = list(body["keys"]) if body else []
    if signer.kid not in keys_by_kid(keys):
        keys.append(signer.public_jwk())
    statements = list(body.get("statements", []))[-MAX_STATEMENTS:] if body else []
    return {"keys": keys, "statements": statements}


def rotate(key_path: Path, key_set_path: Path, now: datetime, overlap: timedelta) -> tuple[SigningKey, SigningKey]:
    """Make a new signing key and a statement, signed by the current key, that trusts it.

    The current key stays valid for `overlap` (alerts it signed keep verifying), keys
    already expired are dropped; the key-set file is written first, then the new key
    (the current one is kept as `<name>-<kid>.pem`), so a crash leaves a usable pair.

    Raises:
        FileNotFoundError: there is no current key.
        ValueError: the current key or the key-set file cannot be read.
    """
    old = SigningKey.load(key_path)
    body = read_key_set(key_set_path) or {"keys": [old.public_jwk()], "statements": []}
    new = SigningKey.generate()
    keys = [k for kid, k in keys_by_kid(body["keys"]).items() if kid != old.kid and is_valid_at(k, now)]
    keys.append(with_validity(old.public_jwk(), not_after=now + overlap))
    keys.append(with_validity(new.public_jwk(), not_before=now))
    statements = [*body.get("statements", []), key_statement(old, keys, now)][-MAX_STATEMENTS:]
    write_secret(key_set_path, json.dumps({"keys": keys, "statements": statements}, indent=2))
    old.save(key_path.with_name(f"{key_path.stem}-{old.kid}.pem"), replace=True)
    new.save(key_path, replace=True)
    log.info("signing key rotated", extra={"old_kid": old.kid, "new_kid": new.kid, "path": str(key_path)})
    return old, new

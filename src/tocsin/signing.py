"""Ed25519 keys of a deployment: sign and verify the exact bytes of a payload."""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from collections.abc import Mapping
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
    def load_or_create(cls, path: Path) -> SigningKey:
        """Load the PEM key at `path`, or create it (mode 0600, atomically) when absent.

        Raises:
            ValueError: the file exists but holds no Ed25519 private key.
        """
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            return cls._create(path)
        private = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return cls(private)

    @classmethod
    def _create(cls, path: Path) -> SigningKey:
        key = cls.generate()
        pem = key._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            write_secret(path, pem, replace=False)
        except FileExistsError:  # another process created the key meanwhile: theirs wins
            return cls.load_or_create(path)
        log.info("signing key created", extra={"kid": key.kid, "path": str(path)})
        return key

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

"""Compact JWS tokens as the push gateways take them: ES256 (VAPID, APNs) and RS256 (the
OAuth2 grant of an FCM service account). Signed with `cryptography`; nothing is parsed here."""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def b64url_decode(text: str) -> bytes:
    """Raises ValueError on text that is not unpadded (or padded) base64url."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not base64url: {exc}") from None


def _signing_input(header: dict[str, Any], claims: dict[str, Any]) -> bytes:
    def part(value: dict[str, Any]) -> str:
        return b64url(json.dumps(value, separators=(",", ":")).encode())

    return f"{part(header)}.{part(claims)}".encode("ascii")


def es256(key: ec.EllipticCurvePrivateKey, claims: dict[str, Any], *, kid: str | None = None) -> str:
    """A JWT signed with ES256: the signature is r || s, 32 bytes each (RFC 7518 §3.4)."""
    header: dict[str, Any] = {"typ": "JWT", "alg": "ES256"}
    if kid is not None:
        header = {"alg": "ES256", "kid": kid}
    signing_input = _signing_input(header, claims)
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return f"{signing_input.decode()}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def rs256(key: rsa.RSAPrivateKey, claims: dict[str, Any], *, kid: str | None = None) -> str:
    header: dict[str, Any] = {"typ": "JWT", "alg": "RS256"}
    if kid is not None:
        header["kid"] = kid
    signing_input = _signing_input(header, claims)
    return f"{signing_input.decode()}.{b64url(key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256()))}"

"""RFC 8291 both ways, refereed by http_ece (an independent implementation): what tocsin
encrypts a browser opens, and what another sender encrypts tocsin's canary opens."""

from __future__ import annotations

import os

import http_ece
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tocsin.channels.webpush_crypto import MAX_PLAINTEXT, DecryptError, decrypt, encrypt, public_bytes


def _subscription() -> tuple[ec.EllipticCurvePrivateKey, bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, public_bytes(key.public_key()), os.urandom(16)


@pytest.mark.parametrize("size", [0, 1, 1000, MAX_PLAINTEXT])
def test_what_tocsin_encrypts_http_ece_decrypts(size: int) -> None:
    key, public, auth = _subscription()
    message = os.urandom(size)
    body = encrypt(message, public, auth)
    assert len(body) == size + 103 and len(body) <= 4096
    assert http_ece.decrypt(body, private_key=key, auth_secret=auth, version="aes128gcm") == message
    assert decrypt(body, key, auth) == message


def test_what_http_ece_encrypts_the_canary_decrypts() -> None:
    key, public, auth = _subscription()
    sender = ec.generate_private_key(ec.SECP256R1())
    body = http_ece.encrypt(b"an alert", private_key=sender, dh=public, auth_secret=auth, version="aes128gcm")
    assert decrypt(body, key, auth) == b"an alert"


def test_a_payload_over_the_budget_and_a_wrong_key_are_refused() -> None:
    key, public, auth = _subscription()
    with pytest.raises(ValueError, match="holds"):
        encrypt(b"x" * (MAX_PLAINTEXT + 1), public, auth)
    body = encrypt(b"secret", public, auth)
    other, _, _ = _subscription()
    with pytest.raises(DecryptError, match="tag"):
        decrypt(body, other, auth)
    with pytest.raises(DecryptError):
        decrypt(body, key, os.urandom(16))
    with pytest.raises(DecryptError):
        decrypt(body[:50], key, auth)

"""Ed25519 signing: exact payload bytes, key ids, key files."""

from __future__ import annotations

import stat
from pathlib import Path

from tocsin.signing import SigningKey, b64url_decode, keys_by_kid, verify


def test_signature_verifies_with_public_jwk() -> None:
    key = SigningKey.generate()
    sig = key.sign(b"<alert/>")
    assert "=" not in sig
    assert len(b64url_decode(sig)) == 64
    assert verify({key.kid: key.public_jwk()}, key.kid, b"<alert/>", sig)


def test_tampered_payload_fails() -> None:
    key = SigningKey.generate()
    sig = key.sign(b"<alert>1</alert>")
    assert not verify({key.kid: key.public_jwk()}, key.kid, b"<alert>2</alert>", sig)


def test_wrong_kid_fails() -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    sig = key.sign(b"x")
    jwks = {key.kid: key.public_jwk(), other.kid: other.public_jwk()}
    assert not verify(jwks, other.kid, b"x", sig)
    assert not verify(jwks, "nope", b"x", sig)


def test_bad_input_returns_false_without_raising() -> None:
    key = SigningKey.generate()
    jwks = {key.kid: key.public_jwk()}
    assert not verify(jwks, key.kid, b"x", "***not base64***")
    assert not verify(jwks, key.kid, b"x", "")
    assert not verify({key.kid: {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}}, key.kid, b"x", key.sign(b"x"))
    assert not verify({key.kid: {"kty": "RSA"}}, key.kid, b"x", key.sign(b"x"))


def test_public_jwk_shape() -> None:
    key = SigningKey.generate()
    jwk = key.public_jwk()
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519"
    assert jwk["alg"] == "EdDSA" and jwk["use"] == "sig"
    assert jwk["kid"] == key.kid and len(key.kid) == 16
    assert b64url_decode(jwk["x"]) == key.public_raw


def test_key_file_persists_across_loads(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "signing.pem"
    first = SigningKey.load_or_create(path)
    second = SigningKey.load_or_create(path)
    assert first.kid == second.kid
    assert verify({first.kid: first.public_jwk()}, second.kid, b"p", second.sign(b"p"))
    assert [p.name for p in path.parent.iterdir()] == ["signing.pem"]


def test_key_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "signing.pem"
    SigningKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_keys_by_kid_skips_mislabelled_keys() -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    mislabelled = dict(other.public_jwk(), kid=key.kid)
    assert keys_by_kid([key.public_jwk()]) == {key.kid: key.public_jwk()}
    assert keys_by_kid([mislabelled, {"kid": 1}, "x"]) == {}
    assert keys_by_kid("nope") == {}

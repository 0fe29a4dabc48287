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


def test_rotations_chain_and_drop_keys_that_expired(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from tocsin.client.keys import accept_statements
    from tocsin.signing import read_key_set, rotate

    key_path, set_path = tmp_path / "signing-key.pem", tmp_path / "key-set.json"
    first = SigningKey.load_or_create(key_path)
    start = datetime(2030, 1, 1, tzinfo=UTC)
    _, second = rotate(key_path, set_path, start, timedelta(days=1))
    _, third = rotate(key_path, set_path, start + timedelta(days=2), timedelta(days=1))
    body = read_key_set(set_path)
    assert body is not None
    # The first key expired a day after the first rotation: the second one drops it.
    assert [k["kid"] for k in body["keys"]] == [second.kid, third.kid]
    assert (tmp_path / f"signing-key-{first.kid}.pem").exists()
    assert oct((tmp_path / "signing-key.pem").stat().st_mode & 0o777) == "0o600"
    # A device that trusted only the first key follows both statements, in order; the
    # third key is trusted but verifies nothing before its not_before.
    from tocsin.client.keys import valid_keys

    soon = start + timedelta(hours=1)
    accepted = accept_statements({first.kid: first.public_jwk()}, None, body["statements"], soon)
    assert set(accepted.keys) == {second.kid, third.kid} and accepted.refused == 0
    assert set(valid_keys(accepted.keys, soon)) == {second.kid}
    # Once the first key expired (as the device knows it), its statement brings no one in.
    from tocsin.signing import with_validity

    dated = {first.kid: with_validity(first.public_jwk(), not_after=start + timedelta(days=1))}
    late = accept_statements(dated, None, body["statements"], start + timedelta(days=3))
    assert set(late.keys) == {first.kid} and late.refused == 2

"""Web Push message encryption (RFC 8291, the aes128gcm content coding of RFC 8188), both
ways: the node encrypts for a subscription, the prober's canary decrypts as a browser does.

One record: header (salt 16, record size 4, key id length 1, the sender's public key 65),
then the plaintext with its delimiter 0x02, AES-128-GCM. 103 bytes of overhead: a push
service takes 4096-byte bodies, so 3993 bytes of plaintext (delivery/model.PUSH_BUDGET_BYTES).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

RECORD_SIZE = 4096
OVERHEAD = 16 + 4 + 1 + 65 + 1 + 16
MAX_PLAINTEXT = RECORD_SIZE - OVERHEAD


class DecryptError(ValueError):
    """Not a message this subscription's keys open."""


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def public_bytes(key: ec.EllipticCurvePublicKey) -> bytes:
    """The uncompressed point (65 bytes), as `p256dh` carries it."""
    return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def load_public(raw: bytes) -> ec.EllipticCurvePublicKey:
    """Raises ValueError unless `raw` is an uncompressed P-256 point on the curve."""
    if len(raw) != 65 or raw[0] != 4:
        raise ValueError("not an uncompressed P-256 point (65 bytes starting 0x04)")
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)


def _keys(secret: bytes, auth: bytes, ua_public: bytes, as_public: bytes, salt: bytes) -> tuple[bytes, bytes]:
    # RFC 8291 §3.4: the input keying material from the ECDH secret and the auth secret,
    # then RFC 8188 §2.2: the content-encryption key and the nonce from the salt.
    prk_key = _hmac(auth, secret)
    ikm = _hmac(prk_key, b"WebPush: info\x00" + ua_public + as_public + b"\x01")
    prk = _hmac(salt, ikm)
    cek = _hmac(prk, b"Content-Encoding: aes128gcm\x00\x01")[:16]
    nonce = _hmac(prk, b"Content-Encoding: nonce\x00\x01")[:12]
    return cek, nonce


def encrypt(plaintext: bytes, ua_public: bytes, auth: bytes) -> bytes:
    """The body of a push message for the subscription (`p256dh`, `auth` decoded).

    Raises:
        ValueError: the plaintext is over MAX_PLAINTEXT, or the keys are not P-256 / 16 bytes.
    """
    if len(plaintext) > MAX_PLAINTEXT:
        raise ValueError(f"{len(plaintext)} bytes of payload; a push message holds {MAX_PLAINTEXT}")
    if len(auth) != 16:
        raise ValueError("the auth secret must be 16 bytes")
    receiver = load_public(ua_public)
    sender = ec.generate_private_key(ec.SECP256R1())
    as_public = public_bytes(sender.public_key())
    salt = os.urandom(16)
    cek, nonce = _keys(sender.exchange(ec.ECDH(), receiver), auth, ua_public, as_public, salt)
    ciphertext = AESGCM(cek).encrypt(nonce, plaintext + b"\x02", None)
    return salt + struct.pack("!IB", RECORD_SIZE, len(as_public)) + as_public + ciphertext


def decrypt(body: bytes, ua_private: ec.EllipticCurvePrivateKey, auth: bytes) -> bytes:
    """What a browser reads of a push message body.

    Raises:
        DecryptError: a header that is not RFC 8291's, a wrong key, a broken tag or padding.
    """
    if len(body) < 16 + 5 + 65 + 17:
        raise DecryptError("shorter than the aes128gcm header and one record")
    salt, (record_size, id_length) = body[:16], struct.unpack("!IB", body[16:21])
    if id_length != 65 or record_size < 18:
        raise DecryptError("the key id is not a P-256 public key")
    as_public, ciphertext = body[21:86], body[86:]
    if len(ciphertext) > record_size:
        raise DecryptError("more than one record: a push message holds one")
    try:
        sender = load_public(as_public)
    except ValueError as exc:
        raise DecryptError(str(exc)) from None
    ua_public = public_bytes(ua_private.public_key())
    cek, nonce = _keys(ua_private.exchange(ec.ECDH(), sender), auth, ua_public, as_public, salt)
    try:
        padded = AESGCM(cek).decrypt(nonce, ciphertext, None)
    except InvalidTag:
        raise DecryptError("the tag does not match: not encrypted for these keys") from None
    end = padded.rstrip(b"\x00")
    if not end.endswith(b"\x02"):
        raise DecryptError("no last-record delimiter")
    return end[:-1]

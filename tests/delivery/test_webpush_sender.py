"""The Web Push sender against the fake push service: what a browser receives, and what
each of the push service's answers becomes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tocsin.channels import webpush
from tocsin.channels.webpush import WebPushSender, check_target, make_sender, vapid_key
from tocsin.channels.webpush_crypto import public_bytes
from tocsin.delivery.jws import b64url, b64url_decode
from tocsin.delivery.model import WEBPUSH, Delivery, Outcome, Push
from tocsin.settings import Settings

from tests.fakes.h2 import _free_port
from tests.fakes.tls import gateway_ca
from tests.fakes.webpush import FakePushService, webpush_fake

TOPIC = "0123456789abcdef0123456789abcdef"


def _settings(tmp_path: Path, **changes: Any) -> Settings:
    return Settings(data_dir=tmp_path, push_ca_file=str(gateway_ca().ca_file), webpush_hosts="127.0.0.1",
                    webpush_subject="mailto:ops@example.org", push_timeout_s=2.0).replace(**changes)


def _push(settings: Settings, subscription: dict[str, Any], payload: bytes = b'{"id":"x"}', *,
          topic: str = TOPIC, ttl_s: int = 600) -> Push:
    delivery = Delivery(alert_id="a" * 32, seq=7, channel=WEBPUSH, destination="d" * 32,
                        expires_at=time.time() + ttl_s, urgent=True)
    target = check_target({"subscription": subscription}, settings, canary=False)
    return Push(delivery=delivery, target=target, payload=payload, pointer=b"{}", topic=topic,
                severity="Extreme", status="Actual", ttl_s=ttl_s)


async def _with(tmp_path: Path, **changes: Any) -> tuple[Settings, WebPushSender]:
    settings = _settings(tmp_path, **changes)
    return settings, make_sender(settings)


async def test_a_push_reaches_the_browser_decrypted_signed_and_with_its_headers(tmp_path: Path) -> None:
    async with webpush_fake() as fake:
        settings, sender = await _with(tmp_path)
        try:
            key = vapid_key(settings).public_b64
            subscription = fake.subscribe(server_key=key)
            payload = json.dumps({"seq": 7, "id": "a" * 32, "cap": "<alert/>" * 300}).encode()
            result = await sender.send(_push(settings, subscription, payload, ttl_s=321))
            again = await sender.send(_push(settings, subscription, b"second"))
        finally:
            await sender.aclose()
    assert (result.outcome, result.status) == (Outcome.SENT, 201) and again.outcome is Outcome.SENT
    browser = fake.subscription(subscription["endpoint"])
    assert [m.payload for m in browser.received] == [payload, b"second"]
    first = browser.received[0]
    assert first.headers["ttl"] == "321" and first.urgency == "high" and first.topic == TOPIC
    assert first.headers["content-encoding"] == "aes128gcm"
    assert first.headers["content-type"] == "application/octet-stream"
    # The token, checked here too: ES256 by the deployment's key, for the fake's origin.
    token, k = first.headers["authorization"].removeprefix("vapid t=").split(", k=")
    assert k == key
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(k))
    claims = jwt.decode(token, key=public, algorithms=["ES256"], audience=fake.url)
    assert claims["sub"] == "mailto:ops@example.org"
    assert time.time() < claims["exp"] <= time.time() + 24 * 3600
    # The same Topic replaced what the browser held: the user sees the second only.
    assert [m.payload for m in browser.held] == [b"second"]
    assert fake.undecryptable == 0 and fake.answers == [201, 201]


async def test_one_http2_connection_serves_every_push(tmp_path: Path) -> None:
    seen: list[str] = []

    async with webpush_fake() as fake:
        settings, sender = await _with(tmp_path)
        try:
            subscription = fake.subscribe()
            for n in range(3):
                await sender.send(_push(settings, subscription, f"m{n}".encode(), topic=f"t{n}"))
            seen = [str(id(c)) for c in sender._client._transport._pool.connections]  # type: ignore[attr-defined]
            http_version = sender._client._transport._pool.connections[0]._connection  # type: ignore[attr-defined]
        finally:
            await sender.aclose()
    assert len(seen) == 1 and type(http_version).__name__ == "AsyncHTTP2Connection"
    assert len(fake.subscription(subscription["endpoint"]).held) == 3  # three topics: three shown


async def test_concurrent_pushes_share_the_connection_and_each_arrives_once(tmp_path: Path) -> None:
    async with webpush_fake() as fake:
        settings, sender = await _with(tmp_path)
        try:
            browsers = [fake.subscribe() for _ in range(20)]
            results = await asyncio.gather(*(sender.send(_push(settings, b, f"to {n}".encode()))
                                             for n, b in enumerate(browsers)))
            connections = len(sender._client._transport._pool.connections)  # type: ignore[attr-defined]
        finally:
            await sender.aclose()
    assert all(r.outcome is Outcome.SENT for r in results) and fake.requests == 20
    assert [[m.payload for m in fake.subscription(b["endpoint"]).received] for b in browsers] == [
        [f"to {n}".encode()] for n in range(20)]
    assert connections == 1  # HTTP/2 streams on one connection, not 20 handshakes


async def test_more_pushes_at_once_than_the_service_allows_streams_wait_for_a_stream(tmp_path: Path) -> None:
    # The fake (hypercorn) allows 100 concurrent streams per connection, as many push
    # services do. A stream whose answer was not read to its end stays open in h2 after the
    # client gave its slot back: the 101st then failed with TooManyStreamsError (a retry).
    async with webpush_fake() as fake:
        # 250 pushes encrypted here and decrypted by the fake, all at once: on a loaded
        # machine the last answers come after the 10 s default; what is tested is streams.
        settings, sender = await _with(tmp_path, push_timeout_s=60.0, delivery_ack_wait_s=120.0)
        try:
            browsers = [fake.subscribe() for _ in range(250)]
            results = await asyncio.gather(*(sender.send(_push(settings, b, f"to {n}".encode()))
                                             for n, b in enumerate(browsers)))
        finally:
            await sender.aclose()
    assert [r.reason for r in results if r.outcome is not Outcome.SENT] == []
    assert fake.requests == 250 and fake.undecryptable == 0


async def test_the_token_is_made_once_per_origin_and_renewed_before_it_ends(tmp_path: Path) -> None:
    now = [1_000_000.0]
    settings = _settings(tmp_path)
    sender = WebPushSender(settings, vapid_key(settings), clock=lambda: now[0])
    try:
        first = sender.authorization("https://127.0.0.1:9/push/a")
        assert sender.authorization("https://127.0.0.1:9/push/b") == first
        other = sender.authorization("https://push.example:443/x")
        assert other != first and "https://push.example" in json.dumps(
            jwt.decode(other.split("t=")[1].split(",")[0], options={"verify_signature": False}))
        now[0] += webpush.TOKEN_LIFETIME_S - webpush.TOKEN_RENEW_S - 1
        assert sender.authorization("https://127.0.0.1:9/push/a") == first
        now[0] += 2
        renewed = sender.authorization("https://127.0.0.1:9/push/a")
        assert renewed != first
        claims = jwt.decode(renewed.split("t=")[1].split(",")[0], options={"verify_signature": False})
        assert claims["exp"] - now[0] <= 24 * 3600
    finally:
        await sender.aclose()


async def _answer(tmp_path: Path, fake: FakePushService, **changes: Any) -> Any:
    settings, sender = await _with(tmp_path, **changes)
    try:
        return await sender.send(_push(settings, fake.subscribe()))
    finally:
        await sender.aclose()


async def test_429_is_rate_limited_with_its_retry_after_in_seconds_or_as_a_date(tmp_path: Path) -> None:
    async with webpush_fake() as fake:
        fake.fail("429", times=1, retry_after="7")
        seconds = await _answer(tmp_path, fake)
        fake.fail("429", times=1, retry_after=formatdate(time.time() + 60, usegmt=True))
        dated = await _answer(tmp_path, fake)
        after = await _answer(tmp_path, fake)  # told once each: the third goes
    assert (seconds.outcome, seconds.retry_after_s, seconds.reason) == (Outcome.RATE_LIMITED, 7.0, "http-429")
    assert dated.outcome is Outcome.RATE_LIMITED and dated.retry_after_s is not None
    assert 55 <= dated.retry_after_s <= 61
    assert after.outcome is Outcome.SENT


async def test_5xx_is_a_retry_honouring_retry_after(tmp_path: Path) -> None:
    async with webpush_fake() as fake:
        fake.fail("500", times=1)
        plain = await _answer(tmp_path, fake)
        fake.fail("503", times=1, retry_after="30")
        later = await _answer(tmp_path, fake)
    assert (plain.outcome, plain.reason, plain.retry_after_s) == (Outcome.RETRY, "http-500", None)
    assert (later.outcome, later.reason, later.retry_after_s) == (Outcome.RETRY, "http-503", 30.0)


async def test_410_and_an_unsubscribed_browser_are_gone(tmp_path: Path) -> None:
    async with webpush_fake() as fake:
        settings, sender = await _with(tmp_path)
        try:
            told = fake.subscribe()
            fake.fail("410", subscription=told["endpoint"])
            left = fake.subscribe()
            fake.unsubscribe(left["endpoint"])
            results = [await sender.send(_push(settings, s)) for s in (told, left)]
            fine = await sender.send(_push(settings, fake.subscribe()))  # only that one was told
        finally:
            await sender.aclose()
    assert [(r.outcome, r.reason) for r in results] == [(Outcome.GONE, "http-410")] * 2
    assert fine.outcome is Outcome.SENT


async def test_413_and_400_are_permanent(tmp_path: Path) -> None:
    async with webpush_fake() as fake:
        fake.fail("413", times=1)
        large = await _answer(tmp_path, fake)
        fake.fail("400", times=1)
        refused = await _answer(tmp_path, fake)
    assert (large.outcome, large.reason) == (Outcome.PERMANENT, "http-413")
    assert (refused.outcome, refused.reason) == (Outcome.PERMANENT, "http-400")


async def test_a_payload_over_the_budget_is_permanent_without_a_request(tmp_path: Path) -> None:
    async with webpush_fake() as fake:
        settings, sender = await _with(tmp_path)
        try:
            result = await sender.send(_push(settings, fake.subscribe(), b"x" * 3994))
        finally:
            await sender.aclose()
    assert (result.outcome, result.reason) == (Outcome.PERMANENT, "payload-too-large") and fake.requests == 0


async def test_a_record_that_is_not_a_subscription_is_permanent_without_a_request(tmp_path: Path) -> None:
    async with webpush_fake() as fake:
        settings, sender = await _with(tmp_path)
        try:
            push = _push(settings, fake.subscribe())
            broken = dataclasses.replace(push, target={"endpoint": fake.url})
            result = await sender.send(broken)
        finally:
            await sender.aclose()
    assert (result.outcome, result.reason) == (Outcome.PERMANENT, "target-invalid") and fake.requests == 0


async def test_a_key_the_subscription_was_not_made_with_is_a_vapid_refusal_to_retry(tmp_path: Path) -> None:
    other = webpush.VapidKey.of(ec.generate_private_key(ec.SECP256R1())).public_b64
    async with webpush_fake() as fake:
        settings, sender = await _with(tmp_path)
        try:
            result = await sender.send(_push(settings, fake.subscribe(server_key=other)))
        finally:
            await sender.aclose()
    assert (result.outcome, result.reason, result.status) == (Outcome.RETRY, "vapid-refused-403", 403)
    assert fake.subscriptions and not any(s.received for s in fake.subscriptions.values())


async def test_a_hanging_push_service_is_a_timeout_within_push_timeout_s(tmp_path: Path) -> None:
    async with webpush_fake() as fake:
        fake.fail("hang")
        started = time.monotonic()
        result = await _answer(tmp_path, fake, push_timeout_s=0.5)
        took = time.monotonic() - started
        assert fake.hanging == 1  # the service still holds the request: nobody answered
    assert (result.outcome, result.reason) == (Outcome.RETRY, "timeout")
    assert took < 0.5 + 1.5  # the sender's own deadline, key loading and the handshake


async def test_a_refused_connection_is_a_retry(tmp_path: Path) -> None:
    async with webpush_fake() as fake:
        subscription = fake.subscribe()
    closed = {**subscription, "endpoint": f"https://127.0.0.1:{_free_port()}/push/x"}
    settings, sender = await _with(tmp_path)
    try:
        result = await sender.send(_push(settings, closed))
    finally:
        await sender.aclose()
    assert (result.outcome, result.reason) == (Outcome.RETRY, "connect")


async def test_the_host_is_the_endpoints(tmp_path: Path) -> None:
    settings = _settings(tmp_path, webpush_hosts="fcm.googleapis.com")
    sender = make_sender(settings)
    key = ec.generate_private_key(ec.SECP256R1())
    subscription = {"endpoint": "https://FCM.googleapis.com/fcm/send/abc", "expirationTime": None,
                    "keys": {"p256dh": b64url(public_bytes(key.public_key())), "auth": b64url(b"\x01" * 16)}}
    try:
        assert sender.host(_push(settings, subscription)) == "fcm.googleapis.com"
    finally:
        await sender.aclose()


@pytest.mark.parametrize(("value", "expected"), [
    ("0", 0.0), ("120", 120.0), (" 5 ", 5.0), ("", None), (None, None), ("soon", None), ("-3", None),
    ("999999999", webpush.MAX_RETRY_AFTER_S), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
])
def test_retry_after_is_read_as_seconds_or_a_date_and_bounded(value: str | None, expected: float | None) -> None:
    assert webpush.retry_after_s(value) == expected


def test_the_vapid_key_is_made_once_private_and_kept(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    first = vapid_key(settings)
    path = tmp_path / "keys" / "vapid.pem"
    assert path.stat().st_mode & 0o777 == 0o600
    assert webpush.load_or_create_vapid_key(path).public_b64 == first.public_b64 == vapid_key(settings).public_b64
    assert len(b64url_decode(first.public_b64)) == 65
    (tmp_path / "other.pem").write_text("not a key")
    with pytest.raises(ValueError):
        vapid_key(settings.replace(webpush_vapid_key_file=str(tmp_path / "other.pem")))

"""The APNs sender against the fake APNs (HTTP/2 only, provider token and headers checked,
Apple's documented reasons)."""

from __future__ import annotations

import dataclasses
import json
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.channels import mobile_pushes
from tests.channels.mobile_pushes import check_a_hang_is_a_timely_retry, push
from tests.fakes.apns import FakeApns, write_p8
from tests.fakes.gateway_faults import FakeClock
from tests.fakes.tls import gateway_ca
from tocsin.channels import apns
from tocsin.channels.apns import ApnsSender, load_key
from tocsin.delivery.model import APNS, Outcome
from tocsin.errors import PUSH_TARGET_INVALID, Rejected
from tocsin.settings import Settings, SettingsError

TOKEN = "5f0c" * 16
OTHER = "a7e1" * 16


Rig = mobile_pushes.Rig[FakeApns, ApnsSender]


def _settings(fake: FakeApns, folder: Path, **changes: Any) -> Settings:
    fields: dict[str, Any] = {"push_ca_file": str(gateway_ca().ca_file), "push_timeout_s": 2.0,
                              **fake.node_settings(folder)}
    return Settings(**(fields | changes))


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    clock = FakeClock()
    fake = FakeApns(clock=clock)
    async with fake.serve():
        settings = _settings(fake, tmp_path)
        sender = ApnsSender(settings, load_key(settings), clock=clock)
        try:
            yield Rig(fake=fake, sender=sender, clock=clock, settings=settings)
        finally:
            await sender.aclose()


async def test_a_push_is_an_alert_at_priority_10_that_expires_and_collapses_with_its_alert(rig: Rig) -> None:
    sent = push(APNS, TOKEN)
    result = await rig.sender.send(sent)
    assert result.outcome is Outcome.SENT and result.status == 200
    [received] = rig.fake.received[TOKEN]
    headers, body = received["headers"], received["body"]
    assert headers["apns-topic"] == "org.example.tocsin"
    assert (headers["apns-push-type"], headers["apns-priority"]) == ("alert", "10")
    assert headers["apns-expiration"] == str(int(sent.delivery.expires_at))
    assert headers["apns-collapse-id"] == sent.topic
    assert body["aps"] == {"alert": {"title": "Flood warning", "body": "Leave the river banks now."},
                           "mutable-content": 1, "sound": "default", "interruption-level": "time-sensitive"}
    assert body["tocsin"] == json.loads(sent.payload)  # the signed event, for the extension to verify
    assert rig.sender.host(sent) == "127.0.0.1"


async def test_the_apns_id_is_the_same_on_every_attempt_of_one_delivery(rig: Rig) -> None:
    sent = push(APNS, TOKEN)
    await rig.sender.send(sent)
    await rig.sender.send(sent)
    first, second = (r["headers"]["apns-id"] for r in rig.fake.received[TOKEN])
    assert first == second


async def test_an_update_replaces_what_the_user_sees(rig: Rig) -> None:
    first, update = push(APNS, TOKEN), push(APNS, TOKEN, alert_id="c3" * 16, headline="Flood warning updated")
    await rig.sender.send(first)
    await rig.sender.send(update)
    assert len(rig.fake.received[TOKEN]) == 2
    assert list(rig.fake.shown[TOKEN]) == [first.topic]
    assert json.loads(rig.fake.shown[TOKEN][first.topic]) == json.loads(update.payload)
    assert rig.fake.received[TOKEN][-1]["body"]["aps"]["alert"]["title"] == "Flood warning updated"


async def test_an_alert_without_a_headline_still_has_a_title_for_the_extension_to_run(rig: Rig) -> None:
    assert (await rig.sender.send(push(APNS, TOKEN, headline="", body=""))).outcome is Outcome.SENT
    assert rig.fake.received[TOKEN][0]["body"]["aps"]["alert"] == {"title": "Alert", "body": ""}


async def test_a_body_that_would_pass_4096_bytes_carries_the_pointer(rig: Rig) -> None:
    sent = push(APNS, TOKEN, cap_bytes=3700, body="é" * 2000)  # a full payload and a long text
    assert len(sent.payload) > 3500
    assert (await rig.sender.send(sent)).outcome is Outcome.SENT
    body = rig.fake.received[TOKEN][0]["body"]
    assert body["tocsin"] == json.loads(sent.pointer)
    assert len(body["aps"]["alert"]["body"].encode()) <= apns.MAX_BODY_BYTES


async def test_a_small_alert_with_a_long_text_still_carries_the_whole_payload(rig: Rig) -> None:
    sent = push(APNS, TOKEN, cap_bytes=300, body="y" * 5000)
    assert (await rig.sender.send(sent)).outcome is Outcome.SENT
    assert rig.fake.received[TOKEN][0]["body"]["tocsin"] == json.loads(sent.payload)


async def test_an_extreme_actual_alert_is_critical_only_when_the_app_is_entitled(tmp_path: Path) -> None:
    fake = FakeApns()
    async with fake.serve():
        for entitled, severity, status, level in [(True, "Extreme", "Actual", "critical"),
                                                  (True, "Extreme", "Exercise", "time-sensitive"),
                                                  (True, "Severe", "Actual", "time-sensitive"),
                                                  (False, "Extreme", "Actual", "time-sensitive")]:
            settings = _settings(fake, tmp_path, apns_critical_alerts=entitled)
            sender = ApnsSender(settings, load_key(settings))
            try:
                assert (await sender.send(push(APNS, TOKEN, severity=severity, status=status))).outcome is Outcome.SENT
            finally:
                await sender.aclose()
            aps = fake.received[TOKEN][-1]["body"]["aps"]
            assert aps["interruption-level"] == level, (entitled, severity, status)
            assert aps["sound"] == ({"critical": 1, "name": "default", "volume": 1.0} if level == "critical"
                                    else "default")


async def test_the_provider_token_is_reused_for_forty_minutes_then_made_anew(rig: Rig) -> None:
    await rig.sender.send(push(APNS, TOKEN))
    rig.clock.advance(30 * 60)
    await rig.sender.send(push(APNS, TOKEN))
    assert len(rig.fake.provider_tokens) == 1  # Apple refuses a new one within 20 minutes
    rig.clock.advance(20 * 60)
    assert (await rig.sender.send(push(APNS, TOKEN))).outcome is Outcome.SENT
    assert len(rig.fake.provider_tokens) == 2 and len(rig.fake.received[TOKEN]) == 3


async def test_an_expired_provider_token_is_made_anew_once_and_the_push_sent(rig: Rig) -> None:
    await rig.sender.send(push(APNS, TOKEN))
    rig.clock.advance(25 * 60)  # the sender would reuse its token for 20 more minutes
    rig.fake.expire_provider_tokens()
    result = await rig.sender.send(push(APNS, TOKEN))
    assert result.outcome is Outcome.SENT
    assert rig.fake.requests == 3  # sent; 403 ExpiredProviderToken; sent with a new token
    assert len(rig.fake.provider_tokens) == 2 and len(rig.fake.received[TOKEN]) == 2


async def test_a_provider_token_apple_keeps_refusing_is_a_retry(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeApns()
    async with fake.serve():
        settings = _settings(fake, tmp_path, apns_key_id="OTHERKEY01")
        sender = ApnsSender(settings, load_key(settings))
        try:
            with caplog.at_level(logging.WARNING, logger="tocsin.channels.apns"):
                result = await sender.send(push(APNS, TOKEN))
        finally:
            await sender.aclose()
    assert [r.getMessage() for r in caplog.records] == ["APNs refused a new provider token"]
    assert (result.outcome, result.reason, result.status) == (Outcome.RETRY, "InvalidProviderToken", 403)
    assert fake.requests == 2  # refused, made anew, refused again: no more


@pytest.mark.parametrize(("kind", "outcome", "reason", "status"), [
    ("Unregistered", Outcome.GONE, "Unregistered", 410),
    ("BadDeviceToken", Outcome.GONE, "BadDeviceToken", 400),
    ("429", Outcome.RATE_LIMITED, "TooManyRequests", 429),
    ("500", Outcome.RETRY, "InternalServerError", 500),
    ("503", Outcome.RETRY, "ServiceUnavailable", 503),
])
async def test_each_documented_reason_maps_to_its_outcome(rig: Rig, kind: str, outcome: Outcome, reason: str,
                                                          status: int) -> None:
    rig.fake.fail(kind, token=TOKEN, times=2)
    results = [await rig.sender.send(push(APNS, TOKEN)) for _ in range(3)]
    assert [(r.outcome, r.reason, r.status) for r in results[:2]] == [(outcome, reason, status)] * 2
    assert results[2].outcome is Outcome.SENT  # told twice, then healed
    assert (await rig.sender.send(push(APNS, OTHER))).outcome is Outcome.SENT


async def test_a_token_for_another_app_is_gone_and_a_malformed_request_permanent(rig: Rig, tmp_path: Path) -> None:
    other_app = ApnsSender(dataclasses.replace(rig.settings, apns_topic="org.example.other"), load_key(rig.settings))
    try:
        result = await other_app.send(push(APNS, TOKEN))
    finally:
        await other_app.aclose()
    assert (result.outcome, result.reason) == (Outcome.GONE, "DeviceTokenNotForTopic")
    too_large = apns.classify(413, {"reason": "PayloadTooLarge"}, httpx.Headers())
    bad_collapse = apns.classify(400, {"reason": "BadCollapseId"}, httpx.Headers())
    assert (too_large.outcome, bad_collapse.outcome) == (Outcome.PERMANENT, Outcome.PERMANENT)


async def test_a_hung_gateway_is_a_retry_within_push_timeout(tmp_path: Path) -> None:
    fake = FakeApns()
    async with fake.serve():
        settings = _settings(fake, tmp_path, push_timeout_s=0.5)
        sender = ApnsSender(settings, load_key(settings))
        try:
            await check_a_hang_is_a_timely_retry(fake, sender, push(APNS, TOKEN), 0.5)
        finally:
            await sender.aclose()


async def test_the_fake_refuses_http1_as_apple_does(rig: Rig) -> None:
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=gateway_ca().ca_file), http2=False) as client:
        response = await client.post(f"{rig.fake.url}/3/device/{TOKEN}", content=b"{}")
    assert response.status_code == 505 and rig.fake.received[TOKEN] == []


def test_enabled_with_a_key_file() -> None:
    assert not apns.enabled(Settings())
    assert apns.enabled(Settings(apns_key_file="/etc/tocsin/AuthKey.p8"))


def test_check_target_keeps_a_device_token_lowercased() -> None:
    assert apns.check_target({"token": TOKEN.upper()}, Settings(), canary=False) == {"token": TOKEN}
    assert apns.check_target({"token": "ab" * 100}, Settings(), canary=False) == {"token": "ab" * 100}


@pytest.mark.parametrize("token", [None, 7, "", "ab" * 31, "ab" * 100 + "c", "zz" * 32, TOKEN + " ", "0x" + TOKEN])
def test_check_target_refuses_what_is_no_device_token(token: object) -> None:
    with pytest.raises(Rejected) as refused:
        apns.check_target({} if token is None else {"token": token}, Settings(), canary=False)
    assert refused.value.problem is PUSH_TARGET_INVALID
    assert [v.path for v in refused.value.violations] == ["token"]


@pytest.mark.parametrize(("changes", "named"), [
    ({"apns_key_id": ""}, "TOCSIN_APNS_KEY_ID"),
    ({"apns_key_id": "short"}, "TOCSIN_APNS_KEY_ID"),
    ({"apns_team_id": ""}, "TOCSIN_APNS_TEAM_ID"),
    ({"apns_topic": ""}, "TOCSIN_APNS_TOPIC"),
    ({"apns_topic": "no bundle id"}, "TOCSIN_APNS_TOPIC"),
    ({"apns_key_file": "/nonexistent/AuthKey.p8"}, "cannot read"),
])
def test_bad_apns_settings_are_refused_at_start_naming_the_setting(tmp_path: Path, changes: dict[str, Any],
                                                                   named: str) -> None:
    settings = Settings(**(FakeApns().node_settings(tmp_path) | changes))
    with pytest.raises(SettingsError, match=named):
        apns.make_sender(settings)


def test_a_key_file_that_is_no_p256_key_is_refused_at_start(tmp_path: Path) -> None:
    base = FakeApns().node_settings(tmp_path)
    garbage = tmp_path / "garbage.p8"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    other_curve = tmp_path / "p384.p8"
    write_p8(ec.generate_private_key(ec.SECP384R1()), other_curve)
    rsa_key = write_p8(rsa.generate_private_key(public_exponent=65537, key_size=2048), tmp_path / "rsa.p8")
    empty = tmp_path / "empty.p8"
    empty.write_bytes(b"")
    for path, named in [(garbage, "not an unencrypted PEM"), (other_curve, "EC P-256"), (rsa_key, "EC P-256"),
                        (empty, "not an unencrypted PEM")]:
        with pytest.raises(SettingsError, match=named) as refused:
            apns.make_sender(Settings(**(base | {"apns_key_file": str(path)})))
        assert "TOCSIN_APNS_KEY_FILE" in str(refused.value)


def test_a_reason_apple_does_not_document_is_no_reason() -> None:
    """Reasons are metric labels: a gateway's own words never become one."""
    odd = apns.classify(400, {"reason": "y" * 500}, httpx.Headers())
    assert (odd.outcome, odd.reason) == (Outcome.PERMANENT, "http-400")

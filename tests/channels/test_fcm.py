"""The FCM sender against the fake FCM (HTTP/2, OAuth2 grant checked, documented errors)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.channels import mobile_pushes
from tests.channels.mobile_pushes import check_a_hang_is_a_timely_retry, push
from tests.fakes.fcm import FakeFcm
from tests.fakes.gateway_faults import FakeClock
from tests.fakes.tls import gateway_ca
from tocsin.channels import fcm
from tocsin.channels.fcm import FcmSender, load_service_account
from tocsin.delivery.model import FCM, Outcome
from tocsin.errors import PUSH_TARGET_INVALID, Rejected
from tocsin.settings import Settings, SettingsError

TOKEN = "dQw4w9WgXcQ:APA91bH" + "a1B2c3D4e5F6_-" * 10
OTHER = "eX4mpl3T0k3n:APA91bG" + "z9Y8x7W6v5U4_-" * 10


Rig = mobile_pushes.Rig[FakeFcm, FcmSender]


def _settings(fake: FakeFcm, folder: Path, **changes: Any) -> Settings:
    fields: dict[str, Any] = {"push_ca_file": str(gateway_ca().ca_file), "fcm_url": fake.url, "push_timeout_s": 2.0,
                              "fcm_service_account_file": str(fake.service_account_file(folder))}
    return Settings(**(fields | changes))


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    clock = FakeClock()
    fake = FakeFcm(clock=clock)
    async with fake.serve():
        settings = _settings(fake, tmp_path)
        sender = FcmSender(settings, load_service_account(settings.fcm_service_account_file), clock=clock)
        try:
            yield Rig(fake=fake, sender=sender, clock=clock, settings=settings)
        finally:
            await sender.aclose()


async def test_a_push_goes_as_a_high_priority_data_message_that_collapses_and_expires_with_the_alert(rig: Rig) -> None:
    sent = push(FCM, TOKEN, ttl_s=1800)
    result = await rig.sender.send(sent)
    assert result.outcome is Outcome.SENT and result.status == 200
    [message] = rig.fake.received[TOKEN]
    assert message["data"] == {"tocsin": sent.payload.decode()}
    assert json.loads(message["data"]["tocsin"])["sig"] == "c2ln" * 22  # the signed event, whole
    assert message["android"] == {"priority": "HIGH", "collapse_key": sent.topic, "ttl": "1800s"}
    assert "notification" not in message  # nothing shows before the app has verified it
    assert rig.sender.host(sent) == "127.0.0.1"


async def test_an_update_replaces_what_the_user_sees_for_the_same_alert_chain(rig: Rig) -> None:
    first, update = push(FCM, TOKEN), push(FCM, TOKEN, alert_id="c3" * 16)
    assert (await rig.sender.send(first)).outcome is Outcome.SENT
    assert (await rig.sender.send(update)).outcome is Outcome.SENT
    assert len(rig.fake.received[TOKEN]) == 2
    assert rig.fake.shown[TOKEN] == {first.topic: update.payload.decode()}


async def test_data_that_would_pass_the_fcm_limit_goes_as_the_pointer(rig: Rig) -> None:
    big = dataclasses.replace(push(FCM, TOKEN), payload=json.dumps({"cap": "x" * 4090}).encode())
    assert (await rig.sender.send(big)).outcome is Outcome.SENT
    assert rig.fake.received[TOKEN][0]["data"]["tocsin"] == big.pointer.decode()


async def test_a_message_fcm_refuses_is_given_up_not_retried(rig: Rig) -> None:
    huge = json.dumps({"cap": "x" * 4200}).encode()
    refused = dataclasses.replace(push(FCM, TOKEN), payload=huge, pointer=huge)
    result = await rig.sender.send(refused)
    assert (result.outcome, result.status) == (Outcome.PERMANENT, 400)
    assert rig.fake.received[TOKEN] == []


async def test_the_access_token_is_fetched_once_for_many_sends_at_once(rig: Rig) -> None:
    results = await asyncio.gather(*(rig.sender.send(push(FCM, TOKEN)) for _ in range(8)))
    assert {r.outcome for r in results} == {Outcome.SENT}
    assert rig.fake.token_requests == 1 and rig.fake.requests == 8


async def test_the_access_token_is_fetched_again_shortly_before_it_expires(rig: Rig) -> None:
    assert (await rig.sender.send(push(FCM, TOKEN))).outcome is Outcome.SENT
    rig.clock.advance(3350)  # still valid for the fake (3600 s), but within the sender's 300 s margin
    assert (await rig.sender.send(push(FCM, TOKEN))).outcome is Outcome.SENT
    assert rig.fake.token_requests == 2 and rig.fake.requests == 2  # no request was refused


async def test_a_refused_access_token_is_refreshed_once_and_the_push_sent(rig: Rig) -> None:
    assert (await rig.sender.send(push(FCM, TOKEN))).outcome is Outcome.SENT
    rig.fake.expire_access_tokens()
    assert (await rig.sender.send(push(FCM, TOKEN))).outcome is Outcome.SENT
    assert rig.fake.token_requests == 2
    assert rig.fake.requests == 3  # sent; refused with 401 UNAUTHENTICATED; sent again
    assert len(rig.fake.received[TOKEN]) == 2


async def test_a_grant_the_token_endpoint_refuses_is_a_retry_naming_it_asked_again_only_later(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.fake.client_email = "someone-else@tocsin-test.iam.gserviceaccount.com"
    with caplog.at_level(logging.WARNING, logger="tocsin.channels.fcm"):
        results = await asyncio.gather(*(rig.sender.send(push(FCM, TOKEN)) for _ in range(5)))
    assert {(r.outcome, r.reason) for r in results} == {(Outcome.RETRY, "oauth-invalid_grant")}
    assert [r.getMessage() for r in caplog.records] == ["FCM token endpoint refused the service account's grant"]
    assert rig.fake.requests == 0 and rig.fake.token_requests == 1  # the waiting sends did not ask again
    rig.fake.client_email = FakeFcm().client_email  # the operator mended the account
    rig.clock.advance(fcm.GRANT_RETRY_S)
    assert (await rig.sender.send(push(FCM, TOKEN))).outcome is Outcome.SENT
    assert rig.fake.token_requests == 2


@pytest.mark.parametrize(("kind", "outcome", "reason", "status"), [
    ("UNREGISTERED", Outcome.GONE, "UNREGISTERED", 404),
    ("INVALID_TOKEN", Outcome.GONE, "INVALID_ARGUMENT:token", 400),
    ("SENDER_ID_MISMATCH", Outcome.GONE, "SENDER_ID_MISMATCH", 403),
    ("500", Outcome.RETRY, "INTERNAL", 500),
    ("503", Outcome.RETRY, "UNAVAILABLE", 503),
    ("THIRD_PARTY_AUTH_ERROR", Outcome.RETRY, "THIRD_PARTY_AUTH_ERROR", 401),
])
async def test_each_documented_error_maps_to_its_outcome(rig: Rig, kind: str, outcome: Outcome, reason: str,
                                                         status: int) -> None:
    rig.fake.fail(kind, token=TOKEN)
    result = await rig.sender.send(push(FCM, TOKEN))
    assert (result.outcome, result.reason, result.status) == (outcome, reason, status)
    assert result.retry_after_s is None
    assert rig.fake.token_requests == 1  # no refresh: our own token was not what failed
    assert (await rig.sender.send(push(FCM, OTHER))).outcome is Outcome.SENT  # only that token fails


async def test_quota_exceeded_is_rate_limited_for_the_retry_after_given_or_a_minute(rig: Rig) -> None:
    rig.fake.fail("429", retry_after_s=17, times=1)
    result = await rig.sender.send(push(FCM, TOKEN))
    assert (result.outcome, result.reason, result.retry_after_s) == (Outcome.RATE_LIMITED, "QUOTA_EXCEEDED", 17.0)
    rig.fake.fail("429", times=1)
    assert (await rig.sender.send(push(FCM, TOKEN))).retry_after_s == 60.0
    assert (await rig.sender.send(push(FCM, TOKEN))).outcome is Outcome.SENT


async def test_an_unavailable_service_is_retried_after_its_retry_after_until_healed(rig: Rig) -> None:
    rig.fake.fail("503", retry_after_s=5, times=2)
    first, second, third = [await rig.sender.send(push(FCM, TOKEN)) for _ in range(3)]
    assert (first.outcome, first.retry_after_s) == (Outcome.RETRY, 5.0)
    assert second.outcome is Outcome.RETRY and third.outcome is Outcome.SENT
    assert rig.fake.requests == 3


async def test_a_hung_gateway_is_a_retry_within_push_timeout(tmp_path: Path) -> None:
    fake = FakeFcm()
    async with fake.serve():
        settings = _settings(fake, tmp_path, push_timeout_s=0.5)
        sender = FcmSender(settings, load_service_account(settings.fcm_service_account_file))
        try:
            await check_a_hang_is_a_timely_retry(fake, sender, push(FCM, TOKEN), 0.5)
        finally:
            await sender.aclose()


def test_enabled_only_with_a_service_account_file() -> None:
    assert not fcm.enabled(Settings())
    assert fcm.enabled(Settings(fcm_service_account_file="/etc/tocsin/fcm.json"))


def test_check_target_keeps_a_registration_token() -> None:
    assert fcm.check_target({"token": TOKEN, "cells": []}, Settings(), canary=False) == {"token": TOKEN}


@pytest.mark.parametrize("token", [None, 42, "", "short:APA91", "has space" + "x" * 40, "x" * 1025,
                                   "ok" * 20 + "/..", "é" * 40])
def test_check_target_refuses_what_is_no_registration_token(token: object) -> None:
    with pytest.raises(Rejected) as refused:
        fcm.check_target({} if token is None else {"token": token}, Settings(), canary=False)
    assert refused.value.problem is PUSH_TARGET_INVALID
    assert [v.path for v in refused.value.violations] == ["token"]


def _ec_pem() -> str:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


@pytest.mark.parametrize(("changes", "named"), [
    ({"type": "authorized_user"}, "'type'"),
    ({"project_id": None}, "'project_id'"),
    ({"project_id": "Bad Project/.."}, "'project_id'"),
    ({"client_email": None}, "'client_email'"),
    ({"client_email": "no-at-sign"}, "'client_email'"),
    ({"token_uri": "http://oauth2.example.org/token"}, "'token_uri'"),
    ({"private_key": "not a key"}, "'private_key'"),
    ({"private_key": _ec_pem()}, "RSA"),
])
def test_a_bad_service_account_file_is_refused_at_start_naming_the_problem(tmp_path: Path, changes: dict[str, Any],
                                                                           named: str) -> None:
    fake = FakeFcm()
    fake.url = "https://oauth2.example.org"
    path = fake.service_account_file(tmp_path, **changes)
    with pytest.raises(SettingsError) as refused:
        fcm.make_sender(Settings(fcm_service_account_file=str(path)))
    assert "TOCSIN_FCM_SERVICE_ACCOUNT_FILE" in str(refused.value) and named in str(refused.value)


@pytest.mark.parametrize(("content", "named"), [(None, "cannot read"), (b"[1, 2]", "not a JSON object"),
                                                (b"{nope", "not a JSON object")])
def test_an_unreadable_service_account_file_is_refused_at_start(tmp_path: Path, content: bytes | None,
                                                                named: str) -> None:
    path = tmp_path / "account.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SettingsError, match=named):
        load_service_account(str(path))


def test_a_code_fcm_does_not_document_is_no_reason() -> None:
    """Reasons are metric labels: a gateway's own words never become one."""
    odd = fcm.classify(500, {"error": {"status": "X" * 500, "details": [{"@type": fcm.FCM_ERROR_TYPE,
                                                                       "errorCode": "<b>new</b>"}]}}, httpx.Headers())
    assert (odd.outcome, odd.reason) == (Outcome.RETRY, "http-500")

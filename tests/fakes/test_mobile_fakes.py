"""The FCM and APNs fakes refuse what the real services refuse, as they answer it, and run
as processes for the fault suite with their control API and state file."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.channels.mobile_pushes import push
from tests.datafiles import ROOT
from tests.fakes.apns import FakeApns
from tests.fakes.fcm import SCOPE, FakeFcm
from tests.fakes.tls import gateway_ca
from tests.waiting import until
from tocsin.delivery import channels
from tocsin.delivery.jws import es256, rs256
from tocsin.delivery.model import APNS, FCM, Outcome
from tocsin.settings import Settings

DEVICE = "ab" * 32
FCM_TOKEN = "fcm:APA91bH" + "x" * 140


def _client() -> httpx.AsyncClient:
    """Opened inside the fake's block, so it is closed first: the fake's server waits for
    its connections to close when it stops."""
    return httpx.AsyncClient(http2=True, verify=ssl.create_default_context(cafile=gateway_ca().ca_file))


def _assertion(fake: FakeFcm, key: rsa.RSAPrivateKey | None = None, **changes: Any) -> str:
    now = int(time.time())
    claims = {"iss": fake.client_email, "scope": SCOPE, "aud": fake.token_uri, "iat": now, "exp": now + 3600}
    return rs256(key or fake.key, claims | changes)


async def _grant(client: httpx.AsyncClient, fake: FakeFcm, assertion: str) -> httpx.Response:
    return await client.post(fake.token_uri, data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                                   "assertion": assertion})


@pytest.mark.parametrize("change", [
    {"key": rsa.generate_private_key(public_exponent=65537, key_size=2048)},
    {"aud": "https://oauth2.example.org/token"},
    {"iss": "someone@example.org"},
    {"scope": "https://www.googleapis.com/auth/cloud-platform.read-only"},
    {"exp": int(time.time()) + 7200},
])
async def test_the_fake_token_endpoint_refuses_a_wrong_assertion(change: dict[str, Any]) -> None:
    fake = FakeFcm()
    async with fake.serve(), _client() as client:
        assert (await _grant(client, fake, _assertion(fake))).status_code == 200
        response = await _grant(client, fake, _assertion(fake, **change))
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


async def test_the_fake_fcm_refuses_a_bearer_it_did_not_issue_and_messages_fcm_would_refuse() -> None:
    fake = FakeFcm()
    async with fake.serve(), _client() as client:
        token = (await _grant(client, fake, _assertion(fake))).json()["access_token"]
        url = f"{fake.url}/v1/projects/{fake.project_id}/messages:send"

        async def send(message: dict[str, Any], bearer: str = token) -> httpx.Response:
            return await client.post(url, json={"message": message}, headers={"authorization": f"Bearer {bearer}"})

        good: dict[str, Any] = {"token": FCM_TOKEN, "data": {"tocsin": "{}"},
                                "android": {"priority": "HIGH", "ttl": "60s"}}
        assert (await send(good)).status_code == 200
        assert (await send(good, "ya29.forged")).json()["error"]["status"] == "UNAUTHENTICATED"
        for bad in [good | {"data": {"tocsin": "x" * 4096}}, good | {"data": {"tocsin": 12}},
                    good | {"data": {"google.x": "1"}}, good | {"unknown": 1},
                    good | {"android": {"priority": "URGENT"}}, good | {"android": {"ttl": "2419201s"}},
                    good | {"token": "not a token"}]:
            response = await send(bad)
            assert (response.status_code, response.json()["error"]["status"]) == (400, "INVALID_ARGUMENT"), bad
        other = await client.post(f"{fake.url}/v1/projects/another/messages:send", json={"message": good},
                                  headers={"authorization": f"Bearer {token}"})
        assert other.status_code == 403
    assert list(fake.received) == [FCM_TOKEN] and len(fake.received[FCM_TOKEN]) == 1


def _provider(fake: FakeApns, *, key: ec.EllipticCurvePrivateKey | None = None, kid: str | None = None,
              iat: float | None = None, iss: str | None = None) -> str:
    claims = {"iss": iss or fake.team_id, "iat": int(time.time() if iat is None else iat)}
    return es256(key or fake.key, claims, kid=kid or fake.key_id)


async def _push(client: httpx.AsyncClient, fake: FakeApns, token: str, body: bytes = b'{"aps":{"alert":"x"}}',
                headers: dict[str, str] | None = None) -> httpx.Response:
    base = {"authorization": f"bearer {token}", "apns-topic": fake.topic, "apns-push-type": "alert",
            "apns-priority": "10", "apns-expiration": "0"}
    return await client.post(f"{fake.url}/3/device/{DEVICE}", content=body, headers=base | (headers or {}))


async def test_the_fake_apns_checks_the_provider_token_as_apple_does() -> None:
    fake = FakeApns()
    async with fake.serve(), _client() as client:
        good = _provider(fake)
        answers = [
            await _push(client, fake, _provider(fake, key=ec.generate_private_key(ec.SECP256R1()))),
            await _push(client, fake, _provider(fake, kid="OTHERKEY99")),
            await _push(client, fake, _provider(fake, iss="OTHERTEAM9")),
            await _push(client, fake, _provider(fake, iat=time.time() - 3700)),
            await _push(client, fake, good),
            await _push(client, fake, _provider(fake, iat=time.time() - 60)),  # a new token too soon
            await _push(client, fake, ""),
        ]
    assert [(r.status_code, r.json()["reason"] if r.content else "") for r in answers] == [
        (403, "InvalidProviderToken"), (403, "InvalidProviderToken"), (403, "InvalidProviderToken"),
        (403, "ExpiredProviderToken"), (200, ""), (429, "TooManyProviderTokenUpdates"),
        (403, "MissingProviderToken")]
    assert answers[4].headers["apns-id"]


async def test_the_fake_apns_checks_headers_and_body_as_apple_does() -> None:
    fake = FakeApns()
    async with fake.serve(), _client() as client:
        token = _provider(fake)
        aps = json.dumps({"aps": {"alert": "x"}, "pad": "y" * 4096}).encode()
        answers = [
            await _push(client, fake, token, headers={"apns-topic": "org.example.other"}),
            await _push(client, fake, token, headers={"apns-collapse-id": "c" * 65}),
            await _push(client, fake, token, headers={"apns-priority": "11"}),
            await _push(client, fake, token, headers={"apns-expiration": "soon"}),
            await _push(client, fake, token, headers={"apns-push-type": "shout"}),
            await _push(client, fake, token, headers={"apns-id": "not-a-uuid"}),
            await _push(client, fake, token, body=aps),
            await _push(client, fake, token, body=b""),
        ]
    assert [(r.status_code, r.json()["reason"]) for r in answers] == [
        (400, "DeviceTokenNotForTopic"), (400, "BadCollapseId"), (400, "BadPriority"), (400, "BadExpirationDate"),
        (400, "InvalidPushType"), (400, "BadMessageId"), (413, "PayloadTooLarge"), (400, "PayloadEmpty")]
    assert fake.received == {}


@pytest.mark.parametrize(("module", "channel", "token"), [("tests.fakes.fcm", FCM, FCM_TOKEN),
                                                          ("tests.fakes.apns", APNS, DEVICE)])
async def test_each_fake_as_a_process_with_its_control_api_and_state_file(tmp_path: Path, module: str, channel: str,
                                                                          token: str) -> None:
    state = tmp_path / "state.jsonl"
    process = subprocess.Popen([sys.executable, "-m", module, "--state", str(state), "--dir", str(tmp_path / "keys"),
                                "--ca-dir", str(tmp_path / "ca")], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        ready = json.loads(await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 20))
        assert ready["ca_file"] == str(tmp_path / "ca" / "ca.pem")
        settings = Settings(push_ca_file=ready["ca_file"], **ready["settings"])
        sender = channels.make_senders(settings)[channel]
        sent = push(channel, token)
        async with httpx.AsyncClient(base_url=ready["url"],
                                     verify=ssl.create_default_context(cafile=ready["ca_file"])) as control:
            failing = await control.post("/control/fail", json={"mode": "503", "token": token, "times": 1,
                                                                "retry_after": 4})
            assert failing.status_code == 200
            assert (await control.post("/control/fail", json={"mode": "teapot"})).status_code == 400
            outcomes = [(await sender.send(sent)).outcome for _ in range(2)]
            seen = (await control.get("/control/state")).json()
        await sender.aclose()
        assert outcomes == [Outcome.RETRY, Outcome.SENT]
        assert seen["requests"] == 2
        assert seen["devices"] == {token: {"received": 1, "shown": {sent.topic: {"alert_id": "a1" * 16, "seq": 7}}}}
        await until(lambda: state.read_text().count('"message"') == 1)
        events = [json.loads(line) for line in state.read_text().splitlines()]
        assert [e["event"] for e in events] == ["ready", "message"]
        assert (events[1]["token"], events[1]["collapse"], events[1]["alert_id"]) == (token, sent.topic, "a1" * 16)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()

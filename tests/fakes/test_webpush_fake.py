"""The fake push service refuses what a real one refuses, and runs as a process for the
fault suite with its control API and state file."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tocsin.channels import webpush
from tocsin.channels.webpush_crypto import encrypt
from tocsin.delivery.jws import b64url_decode, es256
from tocsin.delivery.model import WEBPUSH, Delivery, Outcome, Push
from tocsin.settings import Settings

from tests.datafiles import ROOT
from tests.fakes.h2 import _free_port
from tests.fakes.tls import gateway_ca
from tests.fakes.webpush import webpush_fake
from tests.waiting import until

KEY = ec.generate_private_key(ec.SECP256R1())
K = webpush.VapidKey.of(KEY).public_b64


def _token(aud: str, **claims: Any) -> str:
    return es256(KEY, {"aud": aud, "exp": int(time.time()) + 3600, "sub": "mailto:a@example.org", **claims})


def _request(url: str, subscription: dict[str, Any], **changes: Any) -> dict[str, Any]:
    keys = subscription["keys"]
    body = encrypt(b"hello", b64url_decode(keys["p256dh"]), b64url_decode(keys["auth"]))
    headers = {"Authorization": f"vapid t={_token(url)}, k={K}", "TTL": "60", "Urgency": "high",
               "Topic": "abc", "Content-Encoding": "aes128gcm"}
    headers.update({k: v for k, v in changes.items() if k != "body" and v is not None})
    for gone in [k for k, v in changes.items() if v is None]:
        headers.pop(gone)
    return {"headers": headers, "content": changes.get("body", body)}


@pytest.mark.parametrize(("change", "status"), [
    ({}, 201),
    ({"Authorization": None}, 401),
    ({"Authorization": "WebPush abc"}, 401),
    ({"Authorization": "vapid t=a.b.c, k=" + K}, 401),
    ({"aud": "https://elsewhere.example"}, 401),
    ({"exp": 25 * 3600}, 401),
    ({"exp": -10}, 401),
    ({"sub": "ops@example.org"}, 401),
    ({"other_key": True}, 403),
    ({"TTL": None}, 400),
    ({"TTL": "-1"}, 400),
    ({"TTL": "soon"}, 400),
    ({"Urgency": "urgent"}, 400),
    ({"Topic": "x" * 33}, 400),
    ({"Topic": "a/b"}, 400),
    ({"Content-Encoding": "aesgcm"}, 400),
    ({"body": b"x" * 4097}, 413),
])
async def test_the_fake_refuses_what_a_push_service_refuses(change: dict[str, Any], status: int) -> None:
    async with webpush_fake() as fake:
        subscription = fake.subscribe(server_key=K)
        change = dict(change)
        claims = {name: change.pop(name) for name in ("aud", "exp", "sub") if name in change}
        if "exp" in claims:
            claims["exp"] += int(time.time())
        if change.pop("other_key", False):
            other = ec.generate_private_key(ec.SECP256R1())
            change["Authorization"] = (f"vapid t={es256(other, {'aud': fake.url, 'exp': int(time.time()) + 60, 'sub': 'mailto:a@b'})}"
                                       f", k={webpush.VapidKey.of(other).public_b64}")
        elif claims:
            change["Authorization"] = f"vapid t={_token(claims.pop('aud', fake.url), **claims)}, k={K}"
        async with httpx.AsyncClient(http2=True, verify=ssl.create_default_context(cafile=gateway_ca().ca_file)) as client:
            response = await client.post(subscription["endpoint"], **_request(fake.url, subscription, **change))
            unknown = await client.post(fake.url + "/push/nobody", **_request(fake.url, subscription))
    assert response.status_code == status, response.text
    assert unknown.status_code == 410
    browser = fake.subscription(subscription["endpoint"])
    assert [m.payload for m in browser.received] == ([b"hello"] if status == 201 else [])
    if status == 201:
        assert response.headers["location"].startswith(fake.url + "/message/")
    assert fake.requests == 2


async def test_a_body_not_encrypted_for_the_browser_is_taken_but_never_shown() -> None:
    async with webpush_fake() as fake:
        subscription = fake.subscribe()
        async with httpx.AsyncClient(http2=True, verify=ssl.create_default_context(cafile=gateway_ca().ca_file)) as client:
            response = await client.post(subscription["endpoint"],
                                         **_request(fake.url, subscription, body=os.urandom(200)))
    assert response.status_code == 201 and fake.undecryptable == 1
    assert not fake.subscription(subscription["endpoint"]).received


async def test_the_fake_as_a_process_with_its_control_api_and_state_file(tmp_path: Path) -> None:
    state = tmp_path / "state.jsonl"
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "tests.fakes.webpush", "--port", str(port), "--state", str(state),
                                "--ca-dir", str(tmp_path / "ca")], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        ready = json.loads(await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 20))
        assert ready["url"] == f"https://127.0.0.1:{port}" and ready["ca_file"] == str(tmp_path / "ca" / "ca.pem")
        settings = Settings(data_dir=tmp_path, push_ca_file=ready["ca_file"], webpush_hosts="127.0.0.1")
        sender = webpush.make_sender(settings)
        async with httpx.AsyncClient(base_url=ready["url"], verify=ssl.create_default_context(cafile=ready["ca_file"])) as control:
            subscription = (await control.post("/control/subscribe", json={
                "server_key": webpush.vapid_key(settings).public_b64})).json()
            push = _push(settings, subscription, {"seq": 3, "id": "e" * 32})
            assert (await control.post("/control/fail", json={"mode": "503", "times": 1, "retry_after": "4"})).status_code == 200
            failed = await sender.send(push)
            sent = await sender.send(push)
            assert (await control.post("/control/fail", json={"mode": "hang"})).status_code == 200
            assert (await control.post("/control/clear")).status_code == 200
            again = await sender.send(push)
            await control.post("/control/unsubscribe", json={"id": subscription["id"]})
            gone = await sender.send(push)
            seen = (await control.get("/control/state")).json()
        await sender.aclose()
        assert (failed.outcome, failed.retry_after_s) == (Outcome.RETRY, 4.0)
        assert (sent.outcome, again.outcome, gone.outcome) == (Outcome.SENT, Outcome.SENT, Outcome.GONE)
        assert seen["requests"] == 4
        mine = seen["subscriptions"][subscription["id"]]
        assert mine["received"] == 2 and [h["alert_id"] for h in mine["held"]] == ["e" * 32]  # one topic
        await until(lambda: state.read_text().count('"message"') == 2)
        lines = [json.loads(line) for line in state.read_text().splitlines()]
        assert lines[0]["event"] == "ready"
        messages = [line for line in lines if line["event"] == "message"]
        assert {(m["subscription"], m["alert_id"], m["seq"], m["topic"]) for m in messages} == {
            (subscription["id"], "e" * 32, 3, "t" * 32)}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def _push(settings: Settings, subscription: dict[str, Any], payload: dict[str, Any]) -> Push:
    document = {"subscription": {k: v for k, v in subscription.items() if k != "id"}}
    delivery = Delivery(alert_id="e" * 32, seq=3, channel=WEBPUSH, destination="d" * 32,
                        expires_at=time.time() + 60, urgent=False)
    return Push(delivery=delivery, target=webpush.check_target(document, settings, canary=False),
                payload=json.dumps(payload).encode(), pointer=b"{}", topic="t" * 32, severity="Severe",
                status="Actual", ttl_s=60)


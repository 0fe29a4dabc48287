"""The gateway channels' canaries: the Web Push canary's push service and browser (fed real
pushes encrypted here as a sender would, with a node's signed alert), and the FCM/APNs
canaries' count of what a dispatcher reports sent."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import unique_name
from tests.e2e.conftest import ISSUER_TOKEN, node_settings, running_node
from tests.samples import alert_xml
from tests.waiting import until
from tocsin.app import Node
from tocsin.channels.webpush_crypto import encrypt
from tocsin.cluster.nats_server import NatsServer
from tocsin.delivery.jws import b64url, b64url_decode, es256
from tocsin.delivery.model import FCM, Delivery, Push, push_payload
from tocsin.channels.webpush_crypto import public_bytes
from tocsin.prober.probe import Prober, _Pending
from tocsin.prober.push_canary import GatewayCanary, Registration, WebPushCanary
from tocsin.prober.relay import CanarySentRelay
from tocsin.store.base import AlertId

ISSUE = {"Content-Type": "application/cap+xml", "Authorization": f"Bearer {ISSUER_TOKEN}"}


@dataclass
class Browser:
    node: Node
    http: httpx.AsyncClient
    canary: WebPushCanary
    seen: list[tuple[str, bool]]


@pytest.fixture
async def browser(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[Browser]:
    """A node, and a Web Push canary's receiver running beside it (its registration waits
    for the node's Web Push channel: the pushes here are made by the test)."""
    async with running_node(node_settings(tmp_path, nats_server)) as node, \
            httpx.AsyncClient(base_url=node.url, timeout=10) as http:
        canary = WebPushCanary(http, Registration(http, ISSUER_TOKEN, None))
        seen: list[tuple[str, bool]] = []
        canary._seen = lambda alert_id, at, live: seen.append((alert_id, live))
        await canary.receiver.start()
        try:
            yield Browser(node, http, canary, seen)
        finally:
            await canary.receiver.stop()


async def _signed_event(browser: Browser) -> tuple[str, bytes]:
    """An alert the node accepted and signed, as the Web Push sender's payload carries it."""
    answer = await browser.http.post("/api/v1/alerts", content=alert_xml(), headers=ISSUE)
    assert answer.status_code == 201
    stored = await browser.node.services.store.get(AlertId(answer.json()["id"]))
    return answer.json()["id"], push_payload(stored.envelope, stored.seq, pointer_url=f"{browser.node.url}/api/v1/events/x")


def _vapid(audience: str, *, exp_in_s: int = 3600, key: ec.EllipticCurvePrivateKey | None = None) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    token = es256(key, {"aud": audience, "exp": int(time.time()) + exp_in_s, "sub": "mailto:ops@example.org"})
    return f"vapid t={token}, k={b64url(public_bytes(key.public_key()))}"


def _push_headers(canary: WebPushCanary, **changes: str) -> dict[str, str]:
    headers = {"Authorization": _vapid(canary.receiver.origin), "Content-Encoding": "aes128gcm", "TTL": "30",
               "Urgency": "high", "Topic": "a" * 32}
    headers.update(changes)
    return {k: v for k, v in headers.items() if v}


def _encrypted(canary: WebPushCanary, payload: bytes) -> bytes:
    keys = canary.subscription()["keys"]
    return encrypt(payload, b64url_decode(keys["p256dh"]), b64url_decode(keys["auth"]))


async def test_a_push_is_decrypted_verified_and_counted_like_a_browser_shows_it(browser: Browser) -> None:
    canary = browser.canary
    alert_id, payload = await _signed_event(browser)
    async with httpx.AsyncClient(timeout=5) as pusher:
        answer = await pusher.post(canary.receiver.endpoint, content=_encrypted(canary, payload),
                                   headers=_push_headers(canary))
        assert answer.status_code == 201 and answer.headers["location"].startswith(canary.receiver.path)
        await until(lambda: browser.seen == [(alert_id, True)])
        # A second push on the same kept-alive connection is taken too.
        again = await pusher.post(canary.receiver.endpoint, content=_encrypted(canary, payload),
                                  headers=_push_headers(canary))
        assert again.status_code == 201
        await until(lambda: len(browser.seen) == 2)
    assert canary.displayed == 2 and canary.unreadable == {}


async def test_what_a_browser_would_not_show_is_not_counted(browser: Browser) -> None:
    canary = browser.canary
    alert_id, payload = await _signed_event(browser)
    event = json.loads(payload)
    forged = json.dumps({**event, "cap": event["cap"].replace("Inondation", "Tsunami")}).encode()
    other_browser = ec.generate_private_key(ec.SECP256R1())
    for_someone_else = encrypt(payload, public_bytes(other_browser.public_key()), b"0" * 16)
    async with httpx.AsyncClient(timeout=5) as pusher:
        for body in (_encrypted(canary, forged), for_someone_else, _encrypted(canary, b"not json")):
            answer = await pusher.post(canary.receiver.endpoint, content=body, headers=_push_headers(canary))
            assert answer.status_code == 201  # the push service took it; the browser cannot show it
    await until(lambda: sum(canary.unreadable.values()) == 3)
    assert canary.unreadable == {"bad signature": 1, "undecryptable": 1, "not JSON": 1}
    assert browser.seen == [] and canary.displayed == 0


async def test_the_push_service_refuses_as_a_push_service_does(browser: Browser) -> None:
    canary = browser.canary
    _, payload = await _signed_event(browser)
    body = _encrypted(canary, payload)
    origin = canary.receiver.origin
    cases: list[tuple[str, dict[str, str], bytes, int]] = [
        (canary.receiver.origin + "/push/guessed", _push_headers(canary), body, 404),
        (canary.receiver.endpoint, _push_headers(canary, Authorization=""), body, 401),
        (canary.receiver.endpoint, _push_headers(canary, Authorization=_vapid("https://elsewhere.example")), body, 403),
        (canary.receiver.endpoint, _push_headers(canary, Authorization=_vapid(origin, exp_in_s=-5)), body, 403),
        (canary.receiver.endpoint, _push_headers(canary, Authorization=_vapid(origin, exp_in_s=90000)), body, 403),
        (canary.receiver.endpoint, _push_headers(canary, Authorization="vapid t=x.y.z, k=abc"), body, 403),
        (canary.receiver.endpoint, _push_headers(canary, **{"Content-Encoding": "aesgcm"}), body, 400),
        (canary.receiver.endpoint, _push_headers(canary, TTL=""), body, 400),
        (canary.receiver.endpoint, _push_headers(canary), b"x" * 4097, 413),
    ]
    async with httpx.AsyncClient(timeout=5) as pusher:
        for url, headers, content, status in cases:
            answer = await pusher.post(url, content=content, headers=headers)
            assert answer.status_code == status, (url, headers, answer.status_code)
        # A VAPID token signed by another key than the one it names.
        good, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        token = _vapid(origin, key=good).split(",")[0]
        mismatched = f"{token}, k={b64url(public_bytes(other.public_key()))}"
        assert (await pusher.post(canary.receiver.endpoint, content=body,
                                  headers=_push_headers(canary, Authorization=mismatched))).status_code == 403
        # Told to fail: a push service that is down takes nothing.
        canary.receiver.fail_with = 503
        assert (await pusher.post(canary.receiver.endpoint, content=body, headers=_push_headers(canary))).status_code == 503
    assert browser.seen == [] and canary.receiver.taken == 0


async def test_a_slow_or_oversized_head_is_cut_off(browser: Browser) -> None:
    receiver = browser.canary.receiver
    reader, writer = await asyncio.open_connection("127.0.0.1", receiver.port)
    try:
        writer.write(b"POST " + receiver.path.encode() + b" HTTP/1.1\r\n" + b"X-Pad: " + b"x" * 9000 + b"\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(5):
            status_line = await reader.readline()
        assert status_line.startswith(b"HTTP/1.1 400")
    finally:
        writer.close()


async def test_a_canary_registration_replaces_the_previous_device(browser: Browser, tmp_path: Path) -> None:
    saved = tmp_path / "keys" / "canary-test.json"
    body = {"points": [{"lat": 0.0, "lon": 0.0}], "canary": True}  # a live canary: the same registration path
    first = await Registration(browser.http, ISSUER_TOKEN, saved).replace(body)
    assert await browser.node.services.store.devices.get(first) is not None
    assert saved.stat().st_mode & 0o077 == 0
    # The next start (another Registration, same file) deletes it first.
    second = await Registration(browser.http, ISSUER_TOKEN, saved).replace(body)
    assert second != first and await browser.node.services.store.devices.get(first) is None
    assert json.loads(saved.read_text())["id"] == second
    # A canary that stops takes its device with it.
    stopping = Registration(browser.http, ISSUER_TOKEN, saved)
    await stopping.forget()
    assert await browser.node.services.store.devices.get(second) is None and not saved.exists()


def _delivery(alert_id: str, destination: str, channel: str = FCM) -> Delivery:
    return Delivery(alert_id=alert_id, seq=7, channel=channel, destination=destination, expires_at=time.time() + 30,
                    urgent=False)


def _push(delivery: Delivery) -> Push:
    return Push(delivery=delivery, target={"token": "t"}, payload=b"{}", pointer=b"{}", topic="a" * 32,
                severity="Unknown", status="System", ttl_s=30)


def test_a_gateway_canary_counts_what_the_gateway_accepted_for_its_own_device() -> None:
    prober = Prober(base_url="http://127.0.0.1:1", token="t", node="n1", interval_s=1.0, expires_in_s=5.0,
                    deadline_s=2.0, read_timeout_s=3.0, gateway_tokens={FCM: "fcm-test-token", "other": "x"})
    registration = Registration(httpx.AsyncClient(), "t", None)
    registration.device_id = "dev_canary"
    canary = GatewayCanary(FCM, "fcm-test-token", registration)
    assert canary.registration_body()["token"] == "fcm-test-token" and canary.registration_body()["canary"] is True
    prober._canaries = {FCM: canary}
    canary._seen = prober._seen_on(FCM)
    probe = "c" * 32
    prober._pending[probe] = _Pending(issued=time.monotonic(), channels={FCM})
    prober.gateway_sent(FCM, "dev_someone_else", probe)
    prober.gateway_sent("apns", "dev_canary", probe)
    assert probe in prober._pending  # not ours: another node's canary device, another channel
    prober.gateway_sent(FCM, "dev_canary", probe)
    assert probe not in prober._pending
    health = prober.channels[FCM]
    assert health.delivered == 1 and health.last_latency_s is not None
    assert prober.is_connected(FCM) and set(prober._gateway_tokens) == {FCM}


async def test_a_canarys_gateway_delivery_is_relayed_to_every_node(nats_server: NatsServer) -> None:
    """Node A's dispatcher sent a probe to node B's FCM canary: B hears of it."""
    prefix = f"tocsin.canary-sent.{unique_name('RELAY')}"
    nc = await nats.connect(nats_server.client_url)
    try:
        heard_a: list[tuple[str, str, str]] = []
        heard_b: list[tuple[str, str, str]] = []
        a = CanarySentRelay(nc, prefix, lambda *sent: heard_a.append(sent))
        b = CanarySentRelay(nc, prefix, lambda *sent: heard_b.append(sent))
        listening = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
        await until(lambda: a.listening.is_set() and b.listening.is_set())
        probe = "d" * 32
        system = _push(_delivery(probe, "dev_b"))
        a.on_sent(_delivery(probe, "dev_b"), system)
        # Not relayed: an alert that is not a probe, a channel the canary reads itself, a bad id.
        a.on_sent(_delivery("e" * 32, "dev_b"), _replace(system, status="Actual"))
        a.on_sent(_delivery(probe, "dev_b", channel="webpush"), system)
        a.on_sent(_delivery(probe, "dev.b*"), system)
        await until(lambda: heard_b == [(FCM, "dev_b", probe)] and heard_a == heard_b)
        await nc.flush()
        assert heard_b == [(FCM, "dev_b", probe)]
        # What no dispatcher sends is ignored (messages are heard in order: the good one last).
        await nc.publish(f"{prefix}.fcm.dev_b", b"not an alert id")
        await nc.publish(f"{prefix}.webpush.dev_b", probe.encode())
        await nc.publish(f"{prefix}.apns.dev_c", probe.encode())
        await until(lambda: len(heard_b) == 2)
        assert heard_b == [(FCM, "dev_b", probe), ("apns", "dev_c", probe)]
        for task in listening:
            task.cancel()
        await asyncio.gather(*listening, return_exceptions=True)
    finally:
        await nc.close()


def _replace(push: Push, **changes: Any) -> Push:
    return dataclasses.replace(push, **changes)


def test_readiness_names_the_late_channel() -> None:
    from tocsin.health.readiness import Limits, Readiness

    class Measured:
        interval_s = 1.0
        running = True
        channels: dict[str, Any] = {"sse": None, "webpush": None, "fcm": None}
        ages = {"sse": 0.4, "webpush": 9.1, "fcm": None}

        def canary_age_s(self, channel: str) -> float | None:
            return self.ages[channel]

        def is_connected(self, channel: str) -> bool:
            return True

    limits = Limits(interval_s=1, check_timeout_s=1, stall_s=1, disk_min_free_bytes=0, reconcile_interval_s=1)
    readiness = Readiness(node="n", replicas=1, data_dir=Path("."), limits=limits, store=None, follower=None,  # type: ignore[arg-type]
                          ledger=None, prober=Measured())  # type: ignore[arg-type]
    checks = readiness._canary_checks()
    assert checks["canary:sse"]["ok"] and not checks["canary:webpush"]["ok"]
    assert checks["canary:webpush"]["detail"] == "the webpush canary is late: 9.1 s since its last probe was displayed"
    assert checks["canary:fcm"]["detail"] == "the fcm canary is late: no probe displayed yet"
    assert checks["canary"]["detail"] == "; ".join([checks["canary:fcm"]["detail"], checks["canary:webpush"]["detail"]])
    assert checks["canary"]["value"]["late"] == ["fcm", "webpush"]

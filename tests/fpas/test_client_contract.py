"""The FPAS client contract, black-box over HTTP: a real node (nats-server + tocsin), the
faithful push service of tests/fakes/webpush.py on loopback as the clients' UnifiedPush
distributor, and requests made as KPublicAlerts (encrypted, numbers, vapid_public_key) and
FOSS Warn (plain, coordinates as strings) make them (docs/fpas.md, "The contract")."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tocsin.app import Node
from tocsin.cluster.nats_server import NatsServer

from tests.conftest import unique_name
from tests.e2e.conftest import ISSUER_TOKEN, FakeClock, node_settings, start_node, stop_node
from tests.fakes.tls import gateway_ca
from tests.fakes.webpush import FakePushService, Subscription, webpush_fake
from tests.samples import alert_xml
from tests.waiting import until

XML = {"Content-Type": "application/cap+xml", "Authorization": f"Bearer {ISSUER_TOKEN}"}
# Around PARIS_BOX (tests/samples.py), where the sample alerts are; and a box in Lyon.
PARIS = {"min_lat": 48.78, "max_lat": 48.92, "min_lon": 2.2, "max_lon": 2.45}
LYON = {"min_lat": 45.70, "max_lat": 45.80, "min_lon": 4.80, "max_lon": 4.90}
SENDER = "prefecture-75@interieur.gouv.fr"


@pytest.fixture
async def fake() -> AsyncIterator[FakePushService]:
    async with webpush_fake() as service:
        yield service


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@asynccontextmanager
async def fpas_node(tmp_path: Path, nats_server: NatsServer, clock: FakeClock, **changes: Any) -> AsyncIterator[Node]:
    """A node taking FPAS subscriptions to the fake push service on loopback."""
    fpas: dict[str, Any] = {"fpas_push_hosts": "127.0.0.1", "fpas_operator": "Test operator",
                            "push_ca_file": str(gateway_ca().ca_file), "device_ttl_s": 10 * 86400.0,
                            # Its own registry: the subscriptions here are this test's only.
                            "device_bucket": unique_name("FPAS_DEVICES"), "device_bucket_max_bytes": 8 * 1024**2}
    settings = node_settings(tmp_path, nats_server, **{**fpas, **changes})
    running = await start_node(settings, clock)
    try:
        yield running[0]
    finally:
        await stop_node(*running)


@pytest.fixture
async def node(tmp_path: Path, nats_server: NatsServer, fake: FakePushService, clock: FakeClock) -> AsyncIterator[Node]:
    async with fpas_node(tmp_path, nats_server, clock) as started:
        yield started


@pytest.fixture
async def http(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=node.url, timeout=15) as client:
        yield client


async def kpublicalerts_subscribe(http: httpx.AsyncClient, fake: FakePushService,
                                  box: dict[str, float]) -> tuple[httpx.Response, Subscription]:
    """As KPublicAlerts' SubscriptionManager: the VAPID key, a distributor endpoint made
    with it, then POST /subscription/ with UNIFIED_PUSH_ENCRYPTED."""
    vapid = (await http.get("/subscription/", params={"type": "webpush"})).json()["vapid-key"]
    made = fake.subscribe(server_key=vapid)
    body = {"push_service": "UNIFIED_PUSH_ENCRYPTED", "token": made["endpoint"], **box,
            "p256dh_key": made["keys"]["p256dh"], "auth_key": made["keys"]["auth"], "vapid_public_key": vapid}
    response = await http.post("/subscription/", json=body)
    return response, fake.subscription(made["endpoint"])


async def fosswarn_subscribe(http: httpx.AsyncClient, fake: FakePushService,
                             box: dict[str, float]) -> tuple[httpx.Response, Subscription]:
    """As FOSS Warn's FPASApi.registerArea without Web Push keys: plain UNIFIED_PUSH, the
    coordinates as strings."""
    status = (await http.get("/config/server_status")).json()
    assert status["supported_push_services"]["UNIFIED_PUSH"] is True
    endpoint = fake.subscribe_plain()
    body = {"token": endpoint, "push_service": "UNIFIED_PUSH", **{k: str(v) for k, v in box.items()},
            "p256dh_key": "", "auth_key": ""}
    response = await http.post("/subscription/", json=body)
    return response, fake.subscription(endpoint)


def pushes(sub: Subscription) -> list[dict[str, Any]]:
    return [message.document for message in sub.received]


async def issue(http: httpx.AsyncClient, **fields: Any) -> tuple[str, str]:
    """(alert id, CAP reference `sender,identifier,sent`) of a sample alert issued now."""
    xml = alert_xml(**fields)
    response = await http.post("/api/v1/alerts", content=xml, headers=XML)
    assert response.status_code == 201, response.text
    text = xml.decode()
    identifier = re.search(r"<identifier>([^<]+)</identifier>", text)
    sent = re.search(r"<sent>([^<]+)</sent>", text)
    assert identifier and sent
    return response.json()["id"], f"{SENDER},{identifier.group(1)},{sent.group(1)}"


async def test_server_status_and_vapid_key_are_what_the_clients_read(http: httpx.AsyncClient) -> None:
    status = await http.get("/config/server_status")
    assert status.status_code == 200
    body = status.json()
    assert set(body) == {"server_version", "server_operator", "privacy_notice", "terms_of_service",
                         "congestion_state", "supported_push_services"}
    assert body["server_operator"] == "Test operator" and isinstance(body["congestion_state"], int)
    assert body["supported_push_services"] == {"UNIFIED_PUSH": True, "UNIFIED_PUSH_ENCRYPTED": True,
                                               "APN": False, "FIREBASE": False}
    key = await http.get("/subscription/", params={"type": "webpush"})
    assert key.status_code == 200 and re.fullmatch(r"[A-Za-z0-9_-]{87}", key.json()["vapid-key"])
    assert key.json()["vapid-key"] == (await http.get("/api/v1/webpush/key")).json()["publicKey"]
    other = await http.get("/subscription/", params={"type": "apns"})
    assert other.status_code == 400 and other.json()["code"] == "fpas.invalid"


@pytest.mark.parametrize("subscribe", [kpublicalerts_subscribe, fosswarn_subscribe])
async def test_a_subscription_is_confirmed_by_a_push_with_the_answers_confirmation_id(
    http: httpx.AsyncClient, fake: FakePushService, subscribe: Any
) -> None:
    response, sub = await subscribe(http, fake, PARIS)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["token"] == "successfully subscribed"
    assert str(uuid.UUID(answer["subscription_id"])) == answer["subscription_id"]  # QUuid reads it
    assert pushes(sub) == [{"type": "subscribe", "message": "successfully subscribed",
                            "confirmation_id": answer["confirmation_id"]}]


async def test_an_alert_its_update_and_its_cancel_are_pushed_as_added_update_removed(
    http: httpx.AsyncClient, fake: FakePushService
) -> None:
    (_, kde), (_, warn), (_, lyon) = [await subscribe(http, fake, box) for subscribe, box in (
        (kpublicalerts_subscribe, PARIS), (fosswarn_subscribe, PARIS), (kpublicalerts_subscribe, LYON))]
    subscription_id = (await fosswarn_subscribe(http, fake, PARIS))[0].json()["subscription_id"]

    first, first_ref = await issue(http)
    await until(lambda: len(kde.received) == 2 and len(warn.received) == 2, timeout_s=15)
    assert pushes(kde)[1] == pushes(warn)[1] == {"type": "added", "alert_id": first}
    assert (await http.get("/alert/all", params={"subscription_id": subscription_id})).json() == [first]
    assert (await http.get("/alert/area", params={k: str(v) for k, v in PARIS.items()})).json() == [first]
    assert (await http.get("/alert/area", params=LYON)).json() == []

    # What the clients do with an id: GET /alert/<id>, following the redirect to the CAP.
    redirect = await http.get(f"/alert/{first}")
    assert redirect.status_code == 301
    cap = await http.get(f"/alert/{first}", follow_redirects=True)
    assert cap.status_code == 200 and cap.headers["content-type"].startswith("application/cap+xml")
    assert first_ref.split(",")[1] in cap.text and cap.text.lstrip().startswith("<?xml")

    update, update_ref = await issue(http, msg_type="Update", references=first_ref, headline="Update: quais fermés")
    await until(lambda: len(kde.received) == 4 and len(warn.received) == 4, timeout_s=15)
    for sub in (kde, warn):
        assert pushes(sub)[2:] == [{"type": "update", "alert_id": update}, {"type": "removed", "alert_id": first}]
    assert (await http.get("/alert/all", params={"subscription_id": subscription_id})).json() == [update]

    await issue(http, msg_type="Cancel", references=update_ref)
    await until(lambda: len(kde.received) == 5 and len(warn.received) == 5, timeout_s=15)
    for sub in (kde, warn):
        assert pushes(sub)[4] == {"type": "removed", "alert_id": update}
    assert (await http.get("/alert/all", params={"subscription_id": subscription_id})).json() == []
    assert [p["type"] for p in pushes(lyon)] == ["subscribe"]  # outside the box: planned for nobody there
    assert fake.undecryptable == 0


async def test_an_alert_that_expires_is_pushed_as_removed_once_and_a_replaced_one_is_not(
    http: httpx.AsyncClient, fake: FakePushService, clock: FakeClock
) -> None:
    (_, kde), (_, warn), (_, lyon) = [await subscribe(http, fake, box) for subscribe, box in (
        (kpublicalerts_subscribe, PARIS), (fosswarn_subscribe, PARIS), (kpublicalerts_subscribe, LYON))]
    lasting, _ = await issue(http, expires_in_s=600)
    replaced, replaced_ref = await issue(http, expires_in_s=600)
    update, _ = await issue(http, msg_type="Update", references=replaced_ref, expires_in_s=600)
    # subscribe, added x2, update + removed of the replaced one
    await until(lambda: len(kde.received) == 5 and len(warn.received) == 5, timeout_s=15)

    clock.advance(601)  # the three expire: the node's index forgets them within a second
    await until(lambda: len(kde.received) == 7 and len(warn.received) == 7, timeout_s=15)
    for sub in (kde, warn):
        assert sorted(pushes(sub)[5:], key=lambda p: p["alert_id"]) == sorted(
            [{"type": "removed", "alert_id": lasting}, {"type": "removed", "alert_id": update}],
            key=lambda p: p["alert_id"])
        # The replaced alert was withdrawn by its Update, once: not again at its expiry.
        assert pushes(sub).count({"type": "removed", "alert_id": replaced}) == 1
    assert [p["type"] for p in pushes(lyon)] == ["subscribe"]
    assert (await http.get("/alert/area", params={k: str(v) for k, v in PARIS.items()})).json() == []


async def test_heartbeat_renews_and_answers_404_once_the_subscription_is_gone(
    http: httpx.AsyncClient, fake: FakePushService, clock: FakeClock
) -> None:
    response, _ = await kpublicalerts_subscribe(http, fake, PARIS)
    subscription_id = response.json()["subscription_id"]
    beat = await http.put("/subscription/", params={"subscription_id": subscription_id})
    assert beat.status_code == 200
    unknown = await http.put("/subscription/", params={"subscription_id": str(uuid.uuid4())})
    assert unknown.status_code == 404 and unknown.json()["code"] == "fpas.subscription-unknown"
    garbage = await http.put("/subscription/", params={"subscription_id": "x" * 36})
    assert garbage.status_code == 400 and garbage.json()["code"] == "fpas.invalid"

    gone = await http.delete("/subscription/", params={"subscription_id": subscription_id})
    assert gone.status_code == 200
    for again in (http.put, http.delete):
        answer = await again("/subscription/", params={"subscription_id": subscription_id})
        assert answer.status_code == 404, again
    assert (await http.get("/alert/all", params={"subscription_id": subscription_id})).status_code == 400


async def test_a_subscription_without_heartbeat_expires_and_its_heartbeat_is_404(
    http: httpx.AsyncClient, fake: FakePushService, clock: FakeClock, node: Node
) -> None:
    response, _ = await fosswarn_subscribe(http, fake, PARIS)
    subscription_id = response.json()["subscription_id"]
    clock.advance(node.settings.device_ttl_s / 2)
    assert (await http.put("/subscription/", params={"subscription_id": subscription_id})).status_code == 200
    clock.advance(node.settings.device_ttl_s - 60)  # renewed above: still alive
    assert (await http.put("/subscription/", params={"subscription_id": subscription_id})).status_code == 200
    clock.advance(node.settings.device_ttl_s + 60)
    expired = await http.put("/subscription/", params={"subscription_id": subscription_id})
    assert expired.status_code == 404 and expired.json()["code"] == "fpas.subscription-unknown"
    assert (await http.get("/alert/all", params={"subscription_id": subscription_id})).status_code == 400


async def test_a_heartbeat_with_a_new_endpoint_moves_the_pushes_there(
    http: httpx.AsyncClient, fake: FakePushService
) -> None:
    response, old = await fosswarn_subscribe(http, fake, PARIS)
    new_endpoint = fake.subscribe_plain()
    moved = await http.put("/subscription/", params={"subscription_id": response.json()["subscription_id"],
                                                    "token": new_endpoint})
    assert moved.status_code == 200, moved.text
    alert_id, _ = await issue(http)
    new = fake.subscription(new_endpoint)
    await until(lambda: len(new.received) == 1, timeout_s=15)
    assert pushes(new) == [{"type": "added", "alert_id": alert_id}]
    assert len(old.received) == 1  # the confirmation only


def _problem(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/problem+json", response.text
    return str(response.json()["code"])


async def test_what_is_refused_is_a_400_problem_and_nothing_is_subscribed(
    http: httpx.AsyncClient, fake: FakePushService, node: Node
) -> None:
    endpoint = fake.subscribe_plain()
    base = {"token": endpoint, "push_service": "UNIFIED_PUSH", **PARIS}
    cases: list[tuple[dict[str, Any], str]] = [
        ({**base, "min_lat": 49.5}, "fpas.box-invalid"),  # min above max
        ({**base, "max_lon": 181}, "fpas.box-invalid"),
        ({**base, "min_lat": "north"}, "fpas.invalid"),
        ({k: v for k, v in base.items() if k != "max_lon"}, "fpas.invalid"),
        ({**base, "min_lat": 40.0, "max_lat": 52.0, "min_lon": -5.0, "max_lon": 8.0}, "fpas.box-too-large"),
        ({**base, "push_service": "FIREBASE"}, "fpas.push-service-unavailable"),
        ({**base, "token": "https://push.example.org/up/1"}, "fpas.push-endpoint-refused"),
        ({**base, "token": endpoint.replace("https:", "http:")}, "fpas.push-endpoint-refused"),
        ({**base, "push_service": "UNIFIED_PUSH_ENCRYPTED", "p256dh_key": "AAAA", "auth_key": "AAAA"},
         "fpas.invalid"),
    ]
    for body, code in cases:
        response = await http.post("/subscription/", json=body)
        assert response.status_code == 400 and _problem(response) == code, (body, response.text)
    made = fake.subscribe(server_key=None)
    wrong_key = {**base, "push_service": "UNIFIED_PUSH_ENCRYPTED", "token": made["endpoint"],
                 "p256dh_key": made["keys"]["p256dh"], "auth_key": made["keys"]["auth"], "vapid_public_key": "B" * 87}
    assert _problem(await http.post("/subscription/", json=wrong_key)) == "fpas.invalid"
    # A push server that does not take the confirmation: nothing is stored.
    fake.unsubscribe(endpoint)
    response = await http.post("/subscription/", json=base)
    assert response.status_code == 400 and _problem(response) == "fpas.push-unconfirmed"
    too_large = await http.post("/subscription/", content=b"{" + b" " * 9000 + b"}",
                                headers={"Content-Type": "application/json"})
    assert too_large.status_code == 413
    assert not [d for d in node.services.device_cache if d.startswith("fpas_")]
    assert (await http.get("/alert/area", params={**PARIS, "max_lat": 60})).status_code == 400


async def test_unknown_alerts_and_other_statuses_are_404(http: httpx.AsyncClient) -> None:
    exercise, _ = await issue(http, status="Exercise")
    for alert_id in (exercise, "0" * 32, "x"):
        for path in (f"/alert/{alert_id}", f"/alert/{alert_id}.xml"):
            response = await http.get(path)
            assert response.status_code == 404 and _problem(response) == "fpas.alert-unknown", path
    assert (await http.get("/alert/area", params=PARIS)).json() == []


async def test_past_the_subscription_limit_a_subscription_is_refused_until_one_goes(
    tmp_path: Path, nats_server: NatsServer, fake: FakePushService, clock: FakeClock
) -> None:
    async with fpas_node(tmp_path, nats_server, clock, fpas_max_subscriptions=2) as small, \
            httpx.AsyncClient(base_url=small.url, timeout=15) as http:
        ids = [(await fosswarn_subscribe(http, fake, PARIS))[0].json()["subscription_id"] for _ in range(2)]
        refused, sub = await fosswarn_subscribe(http, fake, PARIS)
        assert refused.status_code == 507 and _problem(refused) == "fpas.subscriptions-full"
        assert sub.received == []  # refused before any push
        assert (await http.delete("/subscription/", params={"subscription_id": ids[0]})).status_code == 200
        again, _ = await fosswarn_subscribe(http, fake, PARIS)
        assert again.status_code == 200, again.text


async def test_an_endpoint_its_push_server_says_is_gone_ends_the_subscription(
    http: httpx.AsyncClient, fake: FakePushService, node: Node
) -> None:
    response, sub = await kpublicalerts_subscribe(http, fake, PARIS)
    subscription_id = response.json()["subscription_id"]
    fake.unsubscribe(sub.endpoint)  # the distributor dropped the app's registration: 410
    await issue(http)
    device_id = "fpas_" + uuid.UUID(subscription_id).hex
    await until(lambda: device_id not in node.services.device_cache, timeout_s=15)
    beat = await http.put("/subscription/", params={"subscription_id": subscription_id})
    assert beat.status_code == 404  # what makes the client subscribe again


async def test_the_device_api_registers_no_fpas_device(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/v1/devices", json={"channel": "fpas", "cells": [], "points": [
        {"lat": 48.85, "lon": 2.35}]})
    assert response.status_code == 422 and _problem(response) == "device.channel-unavailable"
    assert "fpas" not in response.json()["detail"].split("through")[-1]


async def test_a_deployment_without_fpas_push_hosts_takes_no_subscription_but_lists_alerts(
    tmp_path: Path, nats_server: NatsServer, fake: FakePushService, clock: FakeClock
) -> None:
    async with fpas_node(tmp_path, nats_server, clock, fpas_push_hosts="") as off, \
            httpx.AsyncClient(base_url=off.url, timeout=15) as http:
        status = (await http.get("/config/server_status")).json()
        assert status["supported_push_services"] == {"UNIFIED_PUSH": False, "UNIFIED_PUSH_ENCRYPTED": False,
                                                     "APN": False, "FIREBASE": False}
        endpoint = fake.subscribe_plain()
        refused = await http.post("/subscription/", json={"token": endpoint, "push_service": "UNIFIED_PUSH", **PARIS})
        assert refused.status_code == 400 and _problem(refused) == "fpas.push-service-unavailable"
        assert fake.subscription(endpoint).requests == 0
        alert_id, _ = await issue(http)
        await until(lambda: alert_id in off.services.pipeline.index.by_id)
        assert (await http.get("/alert/area", params=PARIS)).json() == [alert_id]

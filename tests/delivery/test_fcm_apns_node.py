"""A real node with FCM and APNs configured against their fakes: devices registered through
the API with channel fcm and apns get an alert once each, through the real senders
(OAuth2 grant, provider token, HTTP/2), a passing failure retried, a gone token removed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import unique_name
from tests.e2e.conftest import ISSUER_TOKEN, node_settings, start_node, stop_node
from tests.fakes.apns import FakeApns
from tests.fakes.fcm import FakeFcm
from tests.fakes.tls import gateway_ca
from tests.samples import IN_LYON, IN_PARIS, alert_xml
from tests.waiting import until, until_async

ISSUER = {"Authorization": f"Bearer {ISSUER_TOKEN}", "Content-Type": "application/cap+xml"}
FCM_TOKENS = [f"fcm{i}:APA91bH" + "a1B2c3D4e5F6_-" * 10 for i in range(3)]
APNS_TOKENS = [f"{i:02x}" * 32 for i in (1, 2, 3)]


async def _register(http: httpx.AsyncClient, channel: str, token: str, place: tuple[float, float]) -> str:
    body = {"channel": channel, "token": token, "points": [{"lat": place[0], "lon": place[1]}]}
    response = await http.post("/api/v1/devices", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_each_fcm_and_apns_device_in_the_area_gets_the_alert_once(tmp_path: Path, nats_server: Any) -> None:
    fcm, apns = FakeFcm(), FakeApns()
    async with fcm.serve(), apns.serve():
        settings = node_settings(
            tmp_path, nats_server, deliveries_stream=unique_name("DELIVERIES_T"),
            device_bucket=unique_name("DEVICES_T"),
            push_ca_file=str(gateway_ca().ca_file), push_timeout_s=2.0, delivery_backoff_base_s=0.05,
            delivery_backoff_max_s=0.4, **fcm.node_settings(tmp_path),
            **apns.node_settings(tmp_path))
        node, task, cm = await start_node(settings)
        try:
            async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
                paris_fcm = [await _register(http, "fcm", t, IN_PARIS) for t in FCM_TOKENS[:2]]
                paris_apns = [await _register(http, "apns", t, IN_PARIS) for t in APNS_TOKENS[:2]]
                await _register(http, "fcm", FCM_TOKENS[2], IN_LYON)
                gone = await _register(http, "apns", APNS_TOKENS[2], IN_PARIS)
                await until(lambda: all(d in node.services.device_cache for d in paris_fcm + paris_apns + [gone]))
                fcm.fail("503", token=FCM_TOKENS[1], times=2)  # retried until it goes
                apns.fail("Unregistered", token=APNS_TOKENS[2])
                response = await http.post("/api/v1/alerts", content=alert_xml(), headers=ISSUER)
                assert response.status_code == 201, response.text

                def delivered() -> bool:
                    return (all(len(fcm.received[t]) == 1 for t in FCM_TOKENS[:2])
                            and all(len(apns.received[t]) == 1 for t in APNS_TOKENS[:2]))

                await until(delivered, 15)
                await until_async(lambda: _gone(node, gone), 10)
                await until_async(lambda: _queue_empty(node), 10)
        finally:
            await stop_node(node, task, cm)
    assert fcm.requests == 2 + 2  # two sent, two 503s before the second went
    assert apns.requests == 2 + 1  # two sent, one answered 410 Unregistered
    assert all(len(apns.received[t]) == 1 for t in APNS_TOKENS[:2]) and APNS_TOKENS[2] not in apns.received
    assert FCM_TOKENS[2] not in fcm.received  # Lyon is outside the area
    assert len(apns.provider_tokens) == 1 and fcm.token_requests == 1
    fcm_event = json.loads(fcm.received[FCM_TOKENS[0]][0]["data"]["tocsin"])
    apns_event = apns.received[APNS_TOKENS[0]][0]["body"]["tocsin"]
    assert fcm_event == apns_event and "<identifier>" in fcm_event["cap"]  # the same signed event
    assert apns.received[APNS_TOKENS[0]][0]["headers"]["apns-collapse-id"] == \
        fcm.received[FCM_TOKENS[0]][0]["android"]["collapse_key"]


async def _gone(node: Any, device: str) -> bool:
    return await node.services.store.devices.get(device) is None


async def _queue_empty(node: Any) -> bool:
    info = await node.services.store.jetstream.stream_info(node.settings.deliveries_stream)
    return int(info.state.messages) == 0

"""A real node with FCM and APNs configured against their fakes: devices registered through
the API with channel fcm and apns get an alert once each, through the real senders
(OAuth2 grant, provider token, HTTP/2), a passing failure retried, a gone token removed,
an Extreme alert critical where entitled and its Update shown in its place."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import unique_name
from tests.e2e.conftest import ISSUER_TOKEN, node_settings, start_node, stop_node
from tests.e2e.test_follow_ups import follow_up_xml
from tests.fakes.apns import FakeApns
from tests.fakes.fcm import FakeFcm
from tests.fakes.tls import gateway_ca
from tests.samples import IN_LYON, IN_PARIS, alert_xml
from tests.waiting import until, until_async
from tocsin.app import Node

ISSUER = {"Authorization": f"Bearer {ISSUER_TOKEN}", "Content-Type": "application/cap+xml"}
FCM_TOKENS = [f"fcm{i}:APA91bH" + "a1B2c3D4e5F6_-" * 10 for i in range(3)]
APNS_TOKENS = [f"{i:02x}" * 32 for i in (1, 2, 3)]


async def _register(http: httpx.AsyncClient, channel: str, token: str, place: tuple[float, float]) -> str:
    body = {"channel": channel, "token": token, "points": [{"lat": place[0], "lon": place[1]}]}
    response = await http.post("/api/v1/devices", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@dataclass
class Rig:
    node: Node
    http: httpx.AsyncClient
    fcm: FakeFcm
    apns: FakeApns

    async def issue(self, xml: bytes) -> str:
        response = await self.http.post("/api/v1/alerts", content=xml, headers=ISSUER)
        assert response.status_code == 201, response.text
        return str(response.json()["identifier"])


@asynccontextmanager
async def rig(tmp_path: Path, nats_server: Any, **changes: Any) -> AsyncIterator[Rig]:
    """A node whose FCM and APNs senders are the real ones, pointed at the fakes."""
    fcm, apns = FakeFcm(), FakeApns()
    async with fcm.serve(), apns.serve():
        settings = node_settings(
            tmp_path, nats_server, deliveries_stream=unique_name("DELIVERIES_T"),
            device_bucket=unique_name("DEVICES_T"), push_ca_file=str(gateway_ca().ca_file), push_timeout_s=2.0,
            delivery_backoff_base_s=0.05, delivery_backoff_max_s=0.4, **fcm.node_settings(tmp_path),
            **apns.node_settings(tmp_path), **changes)
        node, task, cm = await start_node(settings)
        try:
            async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
                yield Rig(node=node, http=http, fcm=fcm, apns=apns)
        finally:
            await stop_node(node, task, cm)


async def test_each_fcm_and_apns_device_in_the_area_gets_the_alert_once(tmp_path: Path, nats_server: Any) -> None:
    async with rig(tmp_path, nats_server) as run:
        node, http, fcm, apns = run.node, run.http, run.fcm, run.apns
        paris_fcm = [await _register(http, "fcm", t, IN_PARIS) for t in FCM_TOKENS[:2]]
        paris_apns = [await _register(http, "apns", t, IN_PARIS) for t in APNS_TOKENS[:2]]
        await _register(http, "fcm", FCM_TOKENS[2], IN_LYON)
        gone = await _register(http, "apns", APNS_TOKENS[2], IN_PARIS)
        await until(lambda: all(d in node.services.device_cache for d in paris_fcm + paris_apns + [gone]))
        fcm.fail("503", token=FCM_TOKENS[1], times=2)  # retried until it goes
        apns.fail("Unregistered", token=APNS_TOKENS[2])
        await run.issue(alert_xml())

        def delivered() -> bool:
            return (all(len(fcm.received[t]) == 1 for t in FCM_TOKENS[:2])
                    and all(len(apns.received[t]) == 1 for t in APNS_TOKENS[:2]))

        await until(delivered, 15)
        await until_async(lambda: _gone(node, gone), 10)
        await until_async(lambda: _queue_empty(node), 10)
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


async def test_an_extreme_alert_is_critical_on_an_entitled_iphone_and_its_update_replaces_it(
        tmp_path: Path, nats_server: Any) -> None:
    async with rig(tmp_path, nats_server, apns_critical_alerts=True) as run:
        ids = [await _register(run.http, "fcm", FCM_TOKENS[0], IN_PARIS),
               await _register(run.http, "apns", APNS_TOKENS[0], IN_PARIS)]
        await until(lambda: all(d in run.node.services.device_cache for d in ids))
        original = await run.issue(alert_xml(identifier="FR-MOBILE-1").replace(b"Severe", b"Extreme"))
        await until(lambda: len(run.fcm.received[FCM_TOKENS[0]]) == len(run.apns.received[APNS_TOKENS[0]]) == 1, 15)
        await run.issue(follow_up_xml("FR-MOBILE-2", "Update", original, headline="Crue majeure"))
        await until(lambda: len(run.fcm.received[FCM_TOKENS[0]]) == len(run.apns.received[APNS_TOKENS[0]]) == 2, 15)
        first, update = run.apns.received[APNS_TOKENS[0]]
    assert first["body"]["aps"]["interruption-level"] == "critical" and first["headers"]["apns-priority"] == "10"
    assert update["body"]["aps"]["interruption-level"] == "time-sensitive"  # the Update is Severe
    assert update["body"]["aps"]["alert"]["title"] == "Crue majeure"
    for shown in (run.fcm.shown[FCM_TOKENS[0]], run.apns.shown[APNS_TOKENS[0]]):
        [(collapse, payload)] = shown.items()  # one notification per chain: the Update replaced the Alert
        assert "FR-MOBILE-2" in json.loads(payload)["cap"]


async def _gone(node: Any, device: str) -> bool:
    return await node.services.store.devices.get(device) is None


async def _queue_empty(node: Any) -> bool:
    info = await node.services.store.jetstream.stream_info(node.settings.deliveries_stream)
    return int(info.state.messages) == 0

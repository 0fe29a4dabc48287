"""Devices get the alerts for their area over SSE and WebSocket, resume by event id."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from pathlib import Path

import httpx
import websockets

from tests.e2e.conftest import ADMIN_TOKEN, ISSUER_TOKEN, FakeClock, node_settings, start_node, stop_node
from tests.e2e.devices import register, sse_device
from tests.samples import IN_LYON, IN_PARIS, alert_xml
from tests.waiting import until
from tocsin.app import Node
from tocsin.cap.parse import parse_xml
from tocsin.cluster.nats_server import NatsServer
from tocsin.signing import verify

LYON_BOX = "45.70,4.75 45.70,4.90 45.80,4.90 45.80,4.75 45.70,4.75"
XML = {"Content-Type": "application/cap+xml"}


async def issue(http: httpx.AsyncClient, admin: dict[str, str], xml: bytes) -> dict[str, object]:
    response = await http.post("/api/v1/alerts", content=xml, headers={**admin, **XML})
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


async def test_device_inside_area_gets_alert_and_device_outside_does_not(
    node: Node, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    paris = await register(http, *IN_PARIS)
    lyon = await register(http, *IN_LYON)
    async with sse_device(node.url, paris["token"]) as in_paris, sse_device(node.url, lyon["token"]) as in_lyon:
        await in_paris.next("synced")
        await in_lyon.next("synced")
        first = await issue(http, admin, alert_xml())
        second = await issue(http, admin, alert_xml(polygon=LYON_BOX))
        assert (await in_paris.next_alert())["id"] == first["id"]
        # Events arrive in stream order: Lyon's first alert being the second one proves
        # it never received the Paris alert.
        assert (await in_lyon.next_alert())["id"] == second["id"]


async def test_event_carries_signed_cap_that_verifies(
    node: Node, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    device = await register(http, *IN_PARIS)
    keys = {k["kid"]: k for k in (await http.get("/.well-known/tocsin/keys")).json()["keys"]}
    async with sse_device(node.url, device["token"]) as sse:
        await sse.next("synced")
        issued = await issue(http, admin, alert_xml(headline="Crue exceptionnelle"))
        event = await sse.next_alert()
    assert event["id"] == issued["id"] and event["seq"] == issued["seq"]
    assert verify(keys, event["kid"], event["cap"].encode(), event["sig"])
    assert not verify(keys, event["kid"], event["cap"].replace("exceptionnelle", "mineure").encode(), event["sig"])
    assert parse_xml(event["cap"].encode()).infos[0].headline == "Crue exceptionnelle"


async def test_reconnect_with_last_event_id_gets_only_what_was_missed(
    node: Node, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    device = await register(http, *IN_PARIS)
    async with sse_device(node.url, device["token"]) as sse:
        await sse.next("synced")
        seen = await issue(http, admin, alert_xml())
        assert (await sse.next_alert())["seq"] == seen["seq"]
    missed = [await issue(http, admin, alert_xml()) for _ in range(3)]
    async with sse_device(node.url, device["token"], last_event_id=int(str(seen["seq"]))) as sse:
        replayed = [(await sse.next_alert())["id"] for _ in missed]
        await sse.next("synced")
        assert sse.events.empty()
    assert replayed == [m["id"] for m in missed]


async def test_new_device_is_replayed_active_alerts_of_its_area(
    node: Node, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    issued = await issue(http, admin, alert_xml())
    device = await register(http, *IN_PARIS)
    async with sse_device(node.url, device["token"]) as sse:
        assert (await sse.next_alert())["id"] == issued["id"]


async def test_test_alerts_reach_only_opted_in_devices_and_system_only_canaries(
    node: Node, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    plain = await register(http, *IN_PARIS)
    tester = await register(http, *IN_PARIS, tests=True)
    canary = (
        await http.post("/api/v1/devices", json={"points": [{"lat": IN_PARIS[0], "lon": IN_PARIS[1]}],
                                                 "canary": True}, headers=admin)
    ).json()
    async with (
        sse_device(node.url, plain["token"]) as p,
        sse_device(node.url, tester["token"]) as t,
        sse_device(node.url, canary["token"]) as c,
    ):
        for sse in (p, t, c):
            await sse.next("synced")
        test = await issue(http, admin, alert_xml(status="Test"))
        # System is the admin's (and the prober's): it never waits for approval.
        system = await issue(http, {"Authorization": f"Bearer {ADMIN_TOKEN}"}, alert_xml(status="System"))
        actual = await issue(http, admin, alert_xml(status="Actual"))
        assert [(await p.next_alert())["id"]] == [actual["id"]]
        assert [(await t.next_alert())["id"] for _ in range(2)] == [test["id"], actual["id"]]
        assert [(await c.next_alert())["id"] for _ in range(2)] == [system["id"], actual["id"]]


async def test_canary_device_needs_an_issuer_token(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/v1/devices", json={"points": [{"lat": 48.8, "lon": 2.3}], "canary": True})
    assert response.status_code == 401
    assert response.json()["code"] == "auth.missing-token"


async def test_websocket_delivers_and_resumes(node: Node, http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    device = await register(http, *IN_PARIS)
    ws_url = node.url.replace("http://", "ws://") + f"/api/v1/ws?token={device['token']}"
    async with websockets.connect(ws_url) as ws:
        assert (await _next_message(ws))["type"] == "synced"
        first = await issue(http, admin, alert_xml())
        message = await _next_message(ws)
        assert message["type"] == "alert" and message["id"] == first["id"]
    second = await issue(http, admin, alert_xml())
    async with websockets.connect(ws_url + f"&last_event_id={message['seq']}") as ws:
        replayed = await _next_message(ws)
        assert replayed["id"] == second["id"]
        assert (await _next_message(ws))["type"] == "synced"


async def _next_message(ws: Any) -> dict[str, Any]:
    """The next WebSocket message that is not a keepalive (they come every keepalive interval)."""
    while True:
        message: dict[str, Any] = json.loads(await ws.recv())
        if message.get("type") != "keepalive":
            return message


async def test_unknown_device_token_is_refused_so_the_client_registers_again(node: Node) -> None:
    async with httpx.AsyncClient(base_url=node.url) as http:
        response = await http.get("/api/v1/stream", headers={"Authorization": "Bearer dev_nope.secret"})
    assert response.status_code == 401
    assert response.json()["code"] == "device.unknown"


async def test_expired_alert_is_never_replayed(tmp_path: Path, nats_server: NatsServer) -> None:
    clock = FakeClock()
    running = await start_node(node_settings(tmp_path, nats_server), clock=clock)
    node = running[0]
    try:
        async with httpx.AsyncClient(base_url=node.url) as http:
            admin = {"Authorization": f"Bearer {ISSUER_TOKEN}"}
            short = await issue(http, admin, alert_xml(expires_in_s=60))
            long = await issue(http, admin, alert_xml(expires_in_s=7200))
            clock.advance(120)
            device = await register(http, *IN_PARIS)
            async with sse_device(node.url, device["token"]) as sse:
                assert (await sse.next_alert())["id"] == long["id"]
                await sse.next("synced")
                assert sse.events.empty()
            assert short["id"] != long["id"]
    finally:
        await stop_node(*running)



async def test_sse_devices_are_written_to_directly_and_a_stalled_one_is_cut_off(
    node: Node, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    device = await register(http, *IN_PARIS)
    async with sse_device(node.url, device["token"]) as sse:
        await sse.next("synced")
        connections = {c for members in node.services.live.by_cell.values() for c in members}
        assert connections and all(c.transport is not None for c in connections)
        # A device whose unsent bytes pass the limit is dropped, not buffered without end.
        stalled = next(iter(connections))
        stalled.max_buffer = -1
        await issue(http, admin, alert_xml())
        # The fan-out may run after the issuer's 201: wait for it, with a deadline.
        await until(lambda: stalled.dropped)
    async with asyncio.timeout(10):
        while node.services.live.count:
            await asyncio.sleep(0.01)  # the server notices the closed socket


async def test_a_node_that_sheds_its_devices_refuses_new_streams_but_not_canaries(
    node: Node, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    device = await register(http, *IN_PARIS)
    canary = (await http.post("/api/v1/devices", json={"points": [{"lat": IN_PARIS[0], "lon": IN_PARIS[1]}],
                                                       "canary": True}, headers=admin)).json()
    node.services.live.accepting = False
    try:
        refused = await http.get("/api/v1/stream", headers={"Authorization": f"Bearer {device['token']}"})
        assert (refused.status_code, refused.json()["code"]) == (503, "node.not-ready")
        assert refused.headers["retry-after"] == "2"
        # The canary still gets in: it is how the node learns that it delivers again.
        async with sse_device(node.url, canary["token"]) as sse:
            await sse.next("synced")
    finally:
        node.services.live.accepting = True
    async with sse_device(node.url, device["token"]) as sse:
        await sse.next("synced")

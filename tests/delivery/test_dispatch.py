"""Push deliveries end to end: a node plans each alert once, its dispatchers send through a
fake gateway on loopback (HTTP/2, TLS), retried, backed off, given up at expiry, removed."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.js.errors

from tocsin.app import Node
from tocsin.api.device_records import record_json, renew_if_due
from tocsin.delivery.dispatcher import Dispatcher, Parts
from tocsin.delivery.model import FCM
from tocsin.geo.cells import cell_for_point
from tocsin.settings import Settings

from tests.conftest import unique_name
from tests.delivery.gateway import Gateway, GatewaySender
from tests.e2e.conftest import ISSUER_TOKEN, node_settings, start_node, stop_node
from tests.e2e.test_follow_ups import follow_up_xml
from tests.fakes.h2 import h2_server
from tests.fakes.tls import gateway_ca
from tests.samples import IN_LYON, IN_PARIS, alert_xml
from tests.waiting import until, until_async

ISSUER = {"Authorization": f"Bearer {ISSUER_TOKEN}", "Content-Type": "application/cap+xml"}
LYON_BOX = "45.70,4.78 45.70,4.90 45.80,4.90 45.80,4.78 45.70,4.78"


@dataclass
class Running:
    node: Node
    gateway: Gateway
    http: httpx.AsyncClient
    sender: GatewaySender

    async def register(self, token: str, place: tuple[float, float] = IN_PARIS, **extra: Any) -> dict[str, Any]:
        body = {"channel": FCM, "token": token, "points": [{"lat": place[0], "lon": place[1]}], **extra}
        response = await self.http.post("/api/v1/devices", json=body)
        assert response.status_code == 201, response.text
        found: dict[str, Any] = response.json()
        await until(lambda: found["id"] in self.node.services.device_cache)
        return found

    async def issue(self, xml: bytes) -> str:
        response = await self.http.post("/api/v1/alerts", content=xml, headers=ISSUER)
        assert response.status_code == 201, response.text
        return str(response.json()["identifier"])

    async def queued(self) -> int:
        info = await self.node.services.store.jetstream.stream_info(self.node.settings.deliveries_stream)
        return int(info.state.messages)


def fast(tmp_path: Path, nats_server: Any, **changes: Any) -> Settings:
    return node_settings(
        tmp_path, nats_server, deliveries_stream=unique_name("DELIVERIES_T"), device_bucket=unique_name("DEVICES_T"),
        push_ca_file=str(gateway_ca().ca_file),
        push_timeout_s=1.0, delivery_ack_wait_s=3.0, delivery_backoff_base_s=0.05, delivery_backoff_max_s=0.4,
        breaker_failures=3, breaker_open_s=1.0, dispatch_concurrency=8,
    ).replace(**changes)


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Running]:
    gateway = Gateway()
    async with h2_server(gateway.app()) as url:
        sender = GatewaySender(url, settings)
        started = await start_node(settings, senders={FCM: sender})
        try:
            async with httpx.AsyncClient(base_url=started[0].url, timeout=10) as http:
                yield Running(started[0], gateway, http, sender)
        finally:
            await stop_node(*started)


def alert_id_of(body: bytes) -> str:
    return str(json.loads(body)["id"])


async def test_each_push_device_in_the_area_gets_the_alert_once(tmp_path: Path, nats_server: Any) -> None:
    async with running(fast(tmp_path, nats_server)) as run:
        inside = [await run.register(f"paris-{i}") for i in range(3)]
        await run.register("lyon-0", IN_LYON)
        live = await run.http.post("/api/v1/devices", json={"points": [{"lat": IN_PARIS[0], "lon": IN_PARIS[1]}]})
        assert live.status_code == 201 and live.json()["channel"] == "live"
        await run.issue(alert_xml())
        await until(lambda: len(run.gateway.sent()) >= 3, 10)
        await until_async(lambda: _empty(run), 5)
        assert sorted(r.token for r in run.gateway.received) == [f"paris-{i}" for i in range(3)]
        payload = json.loads(run.gateway.received[0].body)
        assert set(payload) == {"seq", "id", "kid", "sig", "cap"} and "<identifier>" in payload["cap"]
        assert all(0 < r.ttl <= 3600 for r in run.gateway.received)
        assert len(inside) == 3
        # The planner's consumer holds one alert at a time by design: readiness leaves it out.
        infos = await run.node.services.store.jetstream.consumers_info(run.node.settings.stream)
        assert "planner" in {info.name for info in infos}
        assert "planner" not in {c.name for c in await run.node.services.store.consumer_health()}


async def test_the_planner_sets_its_own_short_ack_wait_on_the_consumer_it_finds(tmp_path: Path, nats_server: Any) -> None:
    """Every later alert's pushes wait behind a planner that died mid-alert for the consumer's
    ack_wait: the planner's own (5 s by default), set on a consumer an older node made with
    the deliveries' 30 s."""
    settings = fast(tmp_path, nats_server, planner_ack_wait_s=6.0)
    async with running(settings) as run:
        await until_async(lambda: _planner_ack_wait_is(run, 6.0), 10)
        planner = run.node.planner
        assert planner is not None
        old = planner.consumer_config()
    # As an older node left it, while no planner runs (a running one sets its own back at
    # each subscribe, which a change made beside it would race).
    old.ack_wait = 30.0
    nc = await nats.connect(nats_server.client_url)
    try:
        js = nc.jetstream()
        await js.add_consumer(settings.stream, config=old)
        assert float((await js.consumer_info(settings.stream, "planner")).config.ack_wait or 0) == 30.0
    finally:
        await nc.close()
    async with running(settings) as run:
        # The next start puts its own back, and plans as before.
        await until_async(lambda: _planner_ack_wait_is(run, 6.0), 10)
        await run.register("paris-0")
        await run.issue(alert_xml())
        await until(lambda: len(run.gateway.sent()) >= 1, 10)


async def _planner_ack_wait_is(run: Running, seconds: float) -> bool:
    try:
        info = await run.node.services.store.jetstream.consumer_info(run.node.settings.stream, "planner")
    except nats.js.errors.NotFoundError:  # the planner has not made it yet
        return False
    return float(info.config.ack_wait or 0) == seconds


async def _empty(run: Running) -> bool:
    return await run.queued() == 0


async def test_extreme_actual_goes_before_normal_alerts_queued_earlier(tmp_path: Path, nats_server: Any) -> None:
    # This node plans but sends nothing (dispatch_concurrency 0): the test's dispatcher
    # starts once both alerts wait in the queue, one send at a time.
    async with running(fast(tmp_path, nats_server, dispatch_concurrency=0)) as run:
        for i in range(4):
            await run.register(f"dev-{i}")
        normal = await run.issue(alert_xml(headline="Crue"))
        await until_async(lambda: _queued_is(run, 4), 10)
        extreme = await run.issue(alert_xml(headline="Rupture de barrage").replace(b"Severe", b"Extreme"))
        await until_async(lambda: _queued_is(run, 8), 10)
        dispatcher = _dispatcher(run, concurrency=1)
        task = asyncio.create_task(dispatcher.run())
        try:
            await until(lambda: len(run.gateway.sent()) == 8, 10)
        finally:
            task.cancel()
        order = [_identifier(r.body) for r in run.gateway.received]
        assert order == [extreme] * 4 + [normal] * 4


async def test_a_500_is_retried_and_retry_after_is_honoured(tmp_path: Path, nats_server: Any) -> None:
    async with running(fast(tmp_path, nats_server)) as run:
        run.gateway.script["flaky"] = ["500", "500", "200"]
        run.gateway.script["limited"] = ["429:2", "200"]
        await run.register("flaky")
        await run.register("limited")
        await run.issue(alert_xml())
        await until(lambda: len(run.gateway.sent()) == 2, 10)
        assert [r.answer for r in run.gateway.to("flaky")] == ["500", "500", "200"]
        first, second = run.gateway.to("limited")
        assert second.at - first.at >= 2.0  # not before Retry-After
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for m in run.node.services.metrics.push_attempts.collect() for s in m.samples}
        assert samples[("tocsin_push_attempts_total", (("channel", "fcm"), ("outcome", "retry")))] == 2
        assert samples[("tocsin_push_attempts_total", (("channel", "fcm"), ("outcome", "rate-limited")))] == 1


async def test_given_up_at_expiry_and_never_after(tmp_path: Path, nats_server: Any) -> None:
    async with running(fast(tmp_path, nats_server, breaker_failures=1000)) as run:
        run.gateway.default = "500"
        await run.register("failing")
        issued_at = time.time()
        alert = await run.issue(alert_xml(expires_in_s=3))
        progress = run.node.services.progress
        await until_async(lambda: _failed(progress, "failed:expired"), 10)
        expired_at = time.time()
        attempts = run.gateway.to("failing")
        assert len(attempts) >= 3  # retried meanwhile
        # Given up (termed, so never redelivered), and no attempt after the alert's expiry.
        await until_async(lambda: _empty(run), 5)
        assert all(a.at < issued_at + 3 for a in attempts) and expired_at < issued_at + 3 + 1
        summary = await progress.summary(alert_id_of(attempts[0].body))
        assert summary[FCM].get("sent", 0) == 0 and alert


async def test_a_410_removes_the_registration(tmp_path: Path, nats_server: Any) -> None:
    async with running(fast(tmp_path, nats_server)) as run:
        run.gateway.script["gone"] = ["410"]
        device = await run.register("gone")
        kept = await run.register("kept")
        await run.issue(alert_xml())
        await until_async(lambda: _no_record(run, device["id"]), 10)
        assert await run.node.services.store.devices.get(kept["id"]) is not None
        removed = run.node.services.metrics.registrations_removed.labels(FCM)._value.get()
        assert removed == 1
        await until(lambda: device["id"] not in run.node.services.device_cache, 5)


async def test_the_breaker_opens_after_failures_and_recovers(tmp_path: Path, nats_server: Any) -> None:
    async with running(fast(tmp_path, nats_server, breaker_failures=3, breaker_open_s=1.5)) as run:
        run.gateway.script["dev"] = ["500", "500", "500"]
        await run.register("dev")
        await run.issue(alert_xml())
        await until(lambda: len(run.gateway.sent()) == 1, 10)
        attempts = run.gateway.to("dev")
        assert [a.answer for a in attempts] == ["500", "500", "500", "200"]
        # Open after the third failure: the trial came no sooner than breaker_open_s after it.
        assert attempts[3].at - attempts[2].at >= 1.5 - 0.05
        # Closed again once the dispatcher has the trial's answer.
        dispatcher, host = run.node.dispatcher, run.sender.host(None)  # type: ignore[arg-type]
        assert dispatcher is not None
        await until(lambda: not dispatcher.breaker.is_open(host), 5)


async def test_a_replanned_alert_enqueues_nothing_twice(tmp_path: Path, nats_server: Any) -> None:
    async with running(fast(tmp_path, nats_server, dispatch_concurrency=0)) as run:
        # Planned before the devices exist (nothing to enqueue): the test plans it again.
        await run.issue(alert_xml())
        planner = run.node.planner
        assert planner is not None
        await until(lambda: planner.planned == 1, 10)
        index = run.node.services.device_cache
        now = run.node.services.clock()
        cell = cell_for_point(*IN_PARIS)
        for i in range(2500):
            record = record_json(cells=[cell], languages=["fr"], tests=False, canary=False,
                                 secret_sha256="0" * 64, created=now, renewed=now)
            index[f"dev_{i:024x}"] = {**record, "channel": FCM}
        active = next(iter(run.node.services.pipeline.index.active.values()))
        # A planner killed mid-alert (some publishes acknowledged), then another planning it all.
        killed = asyncio.create_task(planner.plan(active))
        await until_async(lambda: _queued_over(run, 0), 10)
        killed.cancel()
        partial = await run.queued()
        assert await planner.plan(active) == 2500
        assert await run.queued() == 2500
        assert await planner.plan(active) == 2500 and await run.queued() == 2500 and partial <= 2500
        # Devices registered since: a batch of old and new ids (refused whole as atomic, then
        # enqueued one by one) and a batch of new ones only.
        for i in range(2500, 4500):
            index[f"dev_{i:024x}"] = {**record, "channel": FCM}
        assert await planner.plan(active) == 4500
        assert await run.queued() == 4500


async def test_an_update_reaches_the_referenced_devices_with_the_same_topic(tmp_path: Path, nats_server: Any) -> None:
    async with running(fast(tmp_path, nats_server)) as run:
        await run.register("paris")
        original = await run.issue(alert_xml(identifier="FR-PUSH-UPD-1"))
        await until(lambda: len(run.gateway.sent()) == 1, 10)
        await run.issue(follow_up_xml("FR-PUSH-UPD-2", "Update", original, headline="Crue majeure", polygon=LYON_BOX))
        await until(lambda: len(run.gateway.sent()) == 2, 10)
        first, second = run.gateway.sent("paris")
        assert (_identifier(first.body), _identifier(second.body)) == ("FR-PUSH-UPD-1", "FR-PUSH-UPD-2")
        assert first.topic == second.topic


async def test_put_rotates_the_push_part_and_renewal_keeps_it(tmp_path: Path, nats_server: Any) -> None:
    async with running(fast(tmp_path, nats_server)) as run:
        device = await run.register("old-token")
        auth = {"Authorization": f"Bearer {device['token']}"}
        body = {"token": "new-token", "points": [{"lat": IN_LYON[0], "lon": IN_LYON[1]}], "languages": ["en"]}
        response = await run.http.put(f"/api/v1/devices/{device['id']}", json=body, headers=auth)
        assert response.status_code == 200, response.text
        devices = run.node.services.store.devices
        stored = await devices.get(device["id"])
        assert stored is not None and stored["push"] == {"token": "new-token"} and stored["languages"] == ["en"]
        # Another device's token may not change it; a live registration takes no token.
        other = await run.register("other")
        wrong = await run.http.put(f"/api/v1/devices/{device['id']}", json=body,
                                   headers={"Authorization": f"Bearer {other['token']}"})
        assert wrong.status_code == 401
        live = await run.http.post("/api/v1/devices", json={"token": "x", "cells": stored["cells"]})
        assert (live.status_code, live.json()["code"]) == (422, "device.invalid")
        unknown = await run.http.post("/api/v1/devices", json={"channel": "apns", "token": "x", "cells": stored["cells"]})
        assert (unknown.status_code, unknown.json()["code"]) == (422, "device.channel-unavailable")
        bad = await run.http.post("/api/v1/devices", json={"channel": FCM, "token": "no spaces", "cells": stored["cells"]})
        assert (bad.status_code, bad.json()["code"]) == (422, "device.push-target-invalid")
        # Renewal writes the bucket's record back (the index holds no push part).
        await until(lambda: run.node.services.device_cache.get(device["id"], {}).get("cells") == stored["cells"])
        indexed = run.node.services.device_cache[device["id"]]
        assert "push" not in indexed
        later = run.node.services.clock() + (run.node.settings.device_ttl_s * 0.9) * _second()
        await renew_if_due(devices, run.node.services.device_cache, device["id"], indexed, later, run.node.settings)
        renewed = await devices.get(device["id"])
        assert renewed is not None and renewed["push"] == {"token": "new-token"} and renewed["renewed"] == later.isoformat()


def _second() -> Any:
    from datetime import timedelta

    return timedelta(seconds=1)


def _dispatcher(run: Running, *, concurrency: int) -> Dispatcher:
    services = run.node.services
    return Dispatcher(
        js=services.store.jetstream, settings=run.node.settings, senders={FCM: run.sender},
        progress=services.progress, concurrency=concurrency,
        parts=Parts(devices=services.store.devices, index=services.pipeline.index, public_url=lambda: run.node.url),
    )


def _identifier(body: bytes) -> str:
    return str(json.loads(body)["cap"]).split("<identifier>", 1)[1].split("</identifier>", 1)[0]


async def _queued_is(run: Running, n: int) -> bool:
    return await run.queued() == n


async def _queued_over(run: Running, n: int) -> bool:
    return await run.queued() > n


async def _no_record(run: Running, device_id: str) -> bool:
    return await run.node.services.store.devices.get(device_id) is None


async def _failed(progress: Any, key: str) -> bool:
    # PROGRESS: this node's counts per alert and channel (delivery/progress.py `local`).
    reason = key.removeprefix("failed:")
    return any(counts["failed"].get(reason) for alert_id in list(progress._alerts)
               for counts in progress.local(alert_id).values())


async def test_a_hanging_gateway_is_timed_out_and_retried(tmp_path: Path, nats_server: Any) -> None:
    async with running(fast(tmp_path, nats_server)) as run:
        run.gateway.script["dev"] = ["hang"]
        await run.register("dev")
        await run.issue(alert_xml())
        await until(lambda: len(run.gateway.sent("dev")) == 1, 10)
        assert [a.answer for a in run.gateway.to("dev")] == ["hang", "200"]


async def test_a_device_that_changes_its_registration_too_often_is_told_when_to_come_back(
    tmp_path: Path, nats_server: Any
) -> None:
    from tocsin.api.services import DEVICE_UPDATES_PER_MIN

    async with running(fast(tmp_path, nats_server)) as run:
        device = await run.register("a-token")
        auth = {"Authorization": f"Bearer {device['token']}"}
        body = {"token": "a-token", "points": [{"lat": IN_LYON[0], "lon": IN_LYON[1]}]}
        for _ in range(DEVICE_UPDATES_PER_MIN):
            answer = await run.http.put(f"/api/v1/devices/{device['id']}", json=body, headers=auth)
            assert answer.status_code == 200, answer.text
        refused = await run.http.put(f"/api/v1/devices/{device['id']}", json=body, headers=auth)
        assert (refused.status_code, refused.json()["code"]) == (429, "device.too-many-updates")
        assert int(refused.headers["Retry-After"]) >= 1
        # Another device is not held back by this one.
        other = await run.register("b-token")
        answer = await run.http.put(f"/api/v1/devices/{other['id']}", json={**body, "token": "b-token"},
                                    headers={"Authorization": f"Bearer {other['token']}"})
        assert answer.status_code == 200, answer.text

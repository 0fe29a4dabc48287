"""Device records on real nodes: deleted by their own token, bounded in bytes, expiring unless used."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.devices.conftest import client_from, device_settings
from tests.devices.test_registration import PARIS_CELL, assert_problem
from tests.e2e.conftest import start_node, stop_node
from tests.e2e.devices import sse_device
from tests.waiting import until, until_async
from tocsin.api.device_index import DeviceIndex
from tocsin.api.device_records import renewed_at
from tocsin.cluster.nats_server import NatsServer


async def _register(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.post("/api/v1/devices", json={"cells": [PARIS_CELL]})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _bearer(device: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {device['token']}"}


async def test_a_device_deletes_itself_and_leaves_every_mirror(tmp_path: Path, nats_server: NatsServer) -> None:
    first = await start_node(device_settings(tmp_path / "a", nats_server))
    second = await start_node(device_settings(tmp_path / "b", nats_server, device_bucket=first[0].settings.device_bucket))
    a, b = first[0], second[0]
    try:
        async with client_from(a.url) as http:
            device, other = await _register(http), await _register(http)
            await until(lambda: device["id"] in b.services.device_cache and other["id"] in b.services.device_cache)
            path = f"/api/v1/devices/{device['id']}"
            assert_problem(await http.delete(path), 401, "device.unknown")
            assert_problem(await http.delete(path, headers=_bearer(other)), 401, "device.unknown")
            assert_problem(await http.delete(path, headers={"Authorization": f"Bearer {device['id']}.wrong"}),
                           401, "device.unknown")
            deleted = await http.delete(path, headers=_bearer(device))
            assert deleted.status_code == 204, deleted.text
            assert device["id"] not in a.services.device_cache
        await until(lambda: device["id"] not in b.services.device_cache)
        assert other["id"] in b.services.device_cache
        assert await b.services.store.devices.get(device["id"]) is None
        async with client_from(b.url) as http:
            refused = await http.get("/api/v1/stream", headers=_bearer(device))
            assert_problem(refused, 401, "device.unknown")
            assert_problem(await http.delete(f"/api/v1/devices/{device['id']}", headers=_bearer(device)),
                           401, "device.unknown")
    finally:
        await stop_node(*second)
        await stop_node(*first)


async def test_a_full_device_bucket_refuses_registration_clearly_and_still_deletes(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    running = await start_node(device_settings(tmp_path, nats_server, device_bucket_max_bytes=4096,
                                               registrations_per_source_per_min=0))
    node = running[0]
    try:
        registered: list[dict[str, Any]] = []
        async with client_from(node.url) as http:
            for _ in range(100):  # 4 KiB holds about a dozen records
                response = await http.post("/api/v1/devices", json={"cells": [PARIS_CELL]})
                if response.status_code != 201:
                    break
                registered.append(response.json())
            full = assert_problem(response, 507, "device.registry-full")
            assert "expire" in full["detail"]
            assert 5 <= len(registered) < 100
            # Devices may still leave, and their places are free again (once the server has
            # removed the old values behind their delete markers). Two leave: a marker takes
            # some bytes itself, so one record's place may not quite fit another.
            for leaving in registered[:2]:
                assert (await http.delete(f"/api/v1/devices/{leaving['id']}", headers=_bearer(leaving))).status_code == 204

            async def registers() -> bool:
                response = await http.post("/api/v1/devices", json={"cells": [PARIS_CELL]})
                assert response.status_code in (201, 507), response.text
                return response.status_code == 201

            await until_async(registers, timeout_s=10, every_s=0.2)
        assert node.services.metrics.refused.labels("device.registry-full")._value.get() >= 1
    finally:
        await stop_node(*running)


async def test_an_unused_record_expires_and_a_used_one_is_renewed(tmp_path: Path, nats_server: NatsServer) -> None:
    ttl_s = 3.0
    running = await start_node(device_settings(tmp_path, nats_server, device_ttl_s=ttl_s, device_renew_fraction=0.3))
    node = running[0]
    devices = node.services.store.devices
    try:
        async with client_from(node.url) as http:
            unused, used = await _register(http), await _register(http)
        registered_at = time.monotonic()
        # The used device connects now and then, as a phone does; the unused one never.
        connects = 0
        while time.monotonic() - registered_at < 2 * ttl_s:
            async with sse_device(node.url, used["token"]) as sse:
                await sse.next("synced")
            connects += 1
            await asyncio.sleep(0.25)  # the pace of the simulated phone, not a wait for an event
        # Gone from the bucket (by age) and from the mirror (by the server's marker).
        assert await devices.get(unused["id"]) is None
        await until(lambda: unused["id"] not in node.services.device_cache, timeout_s=ttl_s)
        async with client_from(node.url) as http:
            assert_problem(await http.get("/api/v1/stream", headers=_bearer(unused)), 401, "device.unknown")
        record = await devices.get(used["id"])
        assert record is not None
        assert used["id"] in node.services.device_cache
        # Renewed only when older than 0.3 of its TTL: a few writes for many connects.
        print(f"{connects} connects in {2 * ttl_s:.0f} s; renewed at {record['renewed']}")
        assert connects >= 10
    finally:
        await stop_node(*running)


async def test_a_reconnect_storm_renews_a_record_once(
    tmp_path: Path, nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 30 streams of one device at once: above the per-token limit that guards against floods.
    running = await start_node(device_settings(tmp_path, nats_server, device_ttl_s=4.0, device_renew_fraction=0.25,
                                               max_streams_per_device=30))
    node = running[0]
    devices = node.services.store.devices
    writes: list[str] = []
    put = devices.put

    async def counted(key: str, value: dict[str, Any]) -> None:
        writes.append(key)
        await put(key, value)

    monkeypatch.setattr(devices, "put", counted)
    try:
        async with client_from(node.url) as http:
            device = await _register(http)
        first = renewed_at(node.services.device_cache[device["id"]])
        writes.clear()
        # Due for renewal once older than 1 s (a quarter of the TTL); the mirror holds whole seconds.
        await until(lambda: node.services.clock() - first > timedelta(seconds=1.5), timeout_s=3)

        async def connect() -> None:
            async with sse_device(node.url, device["token"]) as sse:
                await sse.next("synced")

        await asyncio.gather(*(connect() for _ in range(30)))  # all at once, as after a node loss
        assert writes.count(device["id"]) == 1
        assert renewed_at(node.services.device_cache[device["id"]]) > first
        assert renewed_at(await devices.get(device["id"]) or {}) > first
    finally:
        await stop_node(*running)


async def test_a_mirror_that_starts_again_drops_what_the_bucket_lost_meanwhile(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    running = await start_node(device_settings(tmp_path, nats_server))
    node = running[0]
    try:
        async with client_from(node.url) as http:
            kept = await _register(http)
        # As a mirror that was cut off while a device was deleted: it still holds the record.
        mirror = DeviceIndex()
        mirror["dev_deleted-while-away"] = dict(node.services.device_cache[kept["id"]])
        task = asyncio.get_running_loop().create_task(node.services.store.mirror_devices(mirror))
        try:
            await until(lambda: mirror.loaded)
            assert kept["id"] in mirror and "dev_deleted-while-away" not in mirror
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        await stop_node(*running)

"""The device feed on a real nats-server: a rebuild equals the index it replaces, deletes and
markers apply, values it cannot read are left out, and /readyz waits for the first pass."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h3
import httpx
import nats
import pytest
from nats.js.api import KeyValueConfig, StorageType

from tests.devices.conftest import client_from, device_settings
from tests.e2e.conftest import start_node, stop_node
from tests.conftest import unique_name
from tests.health.conftest import Readyz, fast_settings
from tests.waiting import until
from tocsin.api.device_index import DeviceIndex
from tocsin.api.device_records import record_json
from tocsin.app import Node
from tocsin.cluster.nats_server import NatsServer
from tocsin.geo.cells import Cover
from tocsin.health.readiness import Limits, Readiness
from tocsin.store.device_feed import feed_devices

NICE = h3.latlng_to_cell(43.7102, 7.2620, 6)
NEAR_NICE = sorted(h3.grid_disk(NICE, 3))


@contextlib.asynccontextmanager
async def _fed(node: Node) -> AsyncIterator[DeviceIndex]:
    """A second index fed from the node's device bucket, as a restarted node's would be."""
    index = DeviceIndex()
    task = asyncio.get_running_loop().create_task(node.services.store.mirror_devices(index))
    try:
        await until(lambda: index.loaded)
        yield index
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _record(i: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    return record_json(cells=sorted({NEAR_NICE[i % len(NEAR_NICE)], NEAR_NICE[(7 * i) % len(NEAR_NICE)]}),
                       languages=[["fr"], ["en", "fr"], []][i % 3], tests=i % 4 == 0, canary=False,
                       secret_sha256=secrets.token_hex(32), created=now, renewed=now)


async def test_a_rebuild_from_the_bucket_equals_the_index_it_replaces(tmp_path: Path, nats_server: NatsServer) -> None:
    running = await start_node(device_settings(tmp_path, nats_server))
    node = running[0]
    try:
        devices = node.services.store.devices
        ids = [f"dev_{secrets.token_hex(12)}" for _ in range(300)]
        for i, device_id in enumerate(ids):
            await devices.put(device_id, _record(i))
        for device_id in ids[::3]:
            await devices.put(device_id, _record(1000 + len(device_id)))  # moved elsewhere
        for device_id in ids[1::5]:
            await devices.delete(device_id)
        await until(lambda: len(node.services.device_cache) == 300 - len(ids[1::5]))
        async with _fed(node) as rebuilt:
            live = node.services.device_cache
            assert sorted(rebuilt) == sorted(live)
            assert all(rebuilt[key] == live[key] for key in live)
            cover = Cover.of(NEAR_NICE[:10])
            for status in ("Actual", "Test", "System"):
                assert rebuilt.reach(cover, status) == live.reach(cover, status)
            assert rebuilt.reach(Cover.of(NEAR_NICE), "Actual").devices == len(live)
            # Live after its first pass: a put and a delete made now reach it too.
            await devices.put("dev_" + "e" * 24, _record(5))
            await devices.delete(ids[0])
            await until(lambda: "dev_" + "e" * 24 in rebuilt and ids[0] not in rebuilt)
    finally:
        await stop_node(*running)


async def test_values_it_cannot_read_are_left_out_and_the_rest_loads(tmp_path: Path, nats_server: NatsServer) -> None:
    running = await start_node(device_settings(tmp_path, nats_server))
    node = running[0]
    try:
        devices = node.services.store.devices
        await devices.put("dev_" + "1" * 24, _record(1))
        await devices.put_raw("dev_" + "2" * 24, b"{not json")  # type: ignore[attr-defined]
        await devices.put_raw("dev_" + "3" * 24, b'{"cells": 7}')  # type: ignore[attr-defined]
        await devices.put_raw("dev_" + "4" * 24, b'1, 2')  # type: ignore[attr-defined]
        await devices.put("dev_" + "5" * 24, _record(2))
        async with _fed(node) as rebuilt:
            assert sorted(rebuilt) == ["dev_" + "1" * 24, "dev_" + "5" * 24]
    finally:
        await stop_node(*running)


async def test_ready_only_once_the_first_pass_holds_every_record(tmp_path: Path, nats_server: NatsServer) -> None:
    settings = fast_settings(tmp_path, nats_server, device_bucket=unique_name("DEVICES_T"))
    running = await start_node(settings)
    try:
        devices = running[0].services.store.devices
        for i in range(2000):
            await devices.put(f"dev_{i:024x}", _record(i))
    finally:
        await stop_node(*running)
    running = await start_node(settings.replace(data_dir=tmp_path / "again"))
    node = running[0]
    try:
        readiness = node.services.readiness
        assert readiness is not None
        cache = node.services.device_cache
        first_ready: list[bool] = []

        def sampled() -> bool:
            if readiness.report()["ready"]:  # then every record is in the index already
                first_ready.append(all(f"dev_{i:024x}" in cache for i in range(2000)))
            return bool(first_ready)

        await until(sampled, timeout_s=30)
        assert first_ready == [True]
        # The 2,000 and the canaries of the two nodes' probers (`ok` may be stale by now on a
        # busy machine: the value is what this test is about).
        value = readiness.report()["checks"]["devices"]["value"]
        assert value["loaded"] and value["devices"] >= 2000
        async with httpx.AsyncClient() as http:
            await Readyz(node.url).until(http, ready=True, within_s=10)
    finally:
        await stop_node(*running)


class _Index:
    def __init__(self, loaded: bool, held: int) -> None:
        self.loaded, self._held = loaded, held

    def __len__(self) -> int:
        return self._held


def _readiness(devices: _Index) -> Readiness:
    limits = Limits(interval_s=1, check_timeout_s=1, stall_s=5, disk_min_free_bytes=0, reconcile_interval_s=1)
    return Readiness(node="n", replicas=1, data_dir=Path("."), limits=limits, store=None, follower=None,  # type: ignore[arg-type]
                     ledger=None, prober=None, devices=devices)  # type: ignore[arg-type]


@pytest.mark.parametrize(("loaded", "ok"), [(False, False), (True, True)])
def test_the_devices_check_is_red_until_the_first_pass_ends(loaded: bool, ok: bool) -> None:
    check = _readiness(_Index(loaded, 12))._judge_devices(_Index(loaded, 12))
    assert check.ok is ok
    assert check.value == {"devices": 12, "loaded": loaded}
    assert ("still reading the device bucket (12 so far)" in check.detail) is not ok


async def test_the_feed_logs_in_as_the_node_s_client_does(tmp_path: Path) -> None:
    """The feed opens a connection of its own: with the user and password of the client."""
    server = NatsServer(store_dir=tmp_path / "nats", name="feed-login", user="tocsin", password=secrets.token_hex(8))
    await server.start()
    try:
        nc = await nats.connect(server.client_url, user="tocsin", password=server.password)
        try:
            js = nc.jetstream()
            bucket = await js.create_key_value(KeyValueConfig(bucket="FEED_LOGIN", history=1, storage=StorageType.FILE))
            await bucket.put("dev_" + "7" * 24, json.dumps(_record(3)).encode())
            index = DeviceIndex()
            task = asyncio.get_running_loop().create_task(feed_devices(nc, js, "FEED_LOGIN", index))
            try:
                await until(lambda: index.loaded or task.done())
                assert not task.done(), task
                assert list(index) == ["dev_" + "7" * 24]
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        finally:
            await nc.close()
    finally:
        await server.stop()

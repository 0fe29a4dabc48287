"""Every node mirrors the device bucket: a device that moves to another node is known there
from memory (a reconnect storm after a node loss costs no bucket read per device)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import node_settings, start_node, stop_node
from tests.e2e.devices import register, sse_device
from tests.samples import IN_PARIS
from tests.waiting import until
from tocsin.cluster.nats_server import NatsServer
from tocsin.store.jetstream import KvRecords


async def test_a_device_registered_on_one_node_is_served_by_another_without_a_bucket_read(
    tmp_path: Path, nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await start_node(node_settings(tmp_path / "a", nats_server))
    second = await start_node(node_settings(tmp_path / "b", nats_server))
    a, b = first[0], second[0]
    try:
        reads: list[str] = []
        devices = b.services.store.devices
        read = devices.get

        async def counted(key: str) -> dict[str, Any] | None:
            reads.append(key)
            return await read(key)

        monkeypatch.setattr(devices, "get", counted)
        async with httpx.AsyncClient(base_url=a.url) as http:
            device = await register(http, *IN_PARIS)
        await until(lambda: device["id"] in b.services.device_cache)
        # A node that starts later loads the devices already registered.
        third = await start_node(node_settings(tmp_path / "c", nats_server))
        try:
            await until(lambda: device["id"] in third[0].services.device_cache)
        finally:
            await stop_node(*third)
        async with sse_device(b.url, device["token"]) as sse:
            await sse.next("synced")
        assert device["id"] not in reads
        # A key removed from the bucket leaves every mirror; the device must register again.
        await devices.delete(device["id"])
        await until(lambda: device["id"] not in b.services.device_cache)
        async with httpx.AsyncClient(base_url=b.url) as http:
            refused = await http.get("/api/v1/stream", headers={"Authorization": f"Bearer {device['token']}"})
        assert (refused.status_code, refused.json()["code"]) == (401, "device.unknown")
        assert device["id"] in reads  # not in memory any more: read from the bucket, absent
    finally:
        await stop_node(*second)
        await stop_node(*first)


async def test_a_value_that_is_not_json_is_skipped_and_the_mirror_goes_on(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    running = await start_node(node_settings(tmp_path, nats_server))
    node = running[0]
    try:
        bucket = node.services.store.devices
        assert isinstance(bucket, KvRecords)
        await bucket.put_raw("dev_not-json", b"{broken")
        async with httpx.AsyncClient(base_url=node.url) as http:
            device = await register(http, *IN_PARIS)
        # Registered here, so cached at once; the mirror shows it saw the entry after the bad one.
        later = {"cells": device["cells"], "languages": [], "tests": False, "canary": False,
                 "secret_sha256": "0" * 64, "created": "2026-11-29T00:00:00+00:00"}
        await bucket.put("dev_after-the-bad-one", later)
        await until(lambda: "dev_after-the-bad-one" in node.services.device_cache)
        assert "dev_not-json" not in node.services.device_cache
        for key in ("dev_not-json", "dev_after-the-bad-one"):
            await bucket.delete(key)  # the bucket is shared by the session's other tests
    finally:
        await stop_node(*running)

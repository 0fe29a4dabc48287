"""Snapshots of the audience index: a round trip equals the index; a restart from one plus
what changed while the node was down equals a full pass; a snapshot of a recreated bucket,
a truncated, corrupt or foreign file is ignored (a full pass, with a log line); records past
the TTL are dropped at load."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import h3
import nats
import numpy as np
import pytest
from nats.js.api import KeyValueConfig, StorageType

from tests.devices.conftest import device_settings
from tests.e2e.conftest import start_node, stop_node
from tests.waiting import until
from tocsin.api.device_index import DeviceIndex, SnapshotRefused
from tocsin.api.device_records import record_json
from tocsin.api.device_snapshots import SnapshotKeeper, load_snapshot, snapshot_path
from tocsin.app import Node
from tocsin.cluster.nats_server import NatsServer
from tocsin.geo.cells import Cover
from tocsin.settings import Settings
from tocsin.store.base import StreamPosition

NICE = h3.latlng_to_cell(43.7102, 7.2620, 6)
NEAR_NICE = sorted(h3.grid_disk(NICE, 3))
COVERS = [Cover.of(NEAR_NICE[:10]), Cover.of(NEAR_NICE), Cover.of(NEAR_NICE[20:25])]


def _record(i: int, renewed: datetime | None = None) -> dict[str, Any]:
    now = renewed or datetime.now(UTC)
    record = record_json(cells=sorted({NEAR_NICE[i % len(NEAR_NICE)], NEAR_NICE[(7 * i) % len(NEAR_NICE)]}),
                         languages=[["fr"], ["en", "fr"], [], ["de"]][i % 4], tests=i % 4 == 0, canary=i % 9 == 0,
                         secret_sha256=secrets.token_hex(32), created=now - timedelta(days=1), renewed=now)
    if i % 6 == 0:
        record["channel"] = "fcm"
    return record


def _same(a: DeviceIndex, b: DeviceIndex) -> None:
    assert sorted(a) == sorted(b)
    assert all(a[key] == b[key] for key in b)
    for cover in COVERS:
        for status in ("Actual", "Test", "System"):
            assert a.reach(cover, status) == b.reach(cover, status)


def _filled(n: int) -> DeviceIndex:
    index = DeviceIndex()
    ids = [f"dev_{secrets.token_hex(12)}" for _ in range(n)] + ["an-odd-id", "another odd one"]
    for i, key in enumerate(ids):
        index[key] = _record(i)
    for i, key in enumerate(ids[::5]):
        index[key] = _record(1000 + i)  # re-celled: stale postings, unused pool cells
    for key in ids[1::7] + ["an-odd-id"]:
        del index[key]
    return index


def _saved(index: DeviceIndex, path: Path, seq: int = 42) -> None:
    index.position = StreamPosition("2026-01-02T03:04:05.678901+00:00", seq)
    snapshot = index.snapshot()
    assert snapshot is not None
    snapshot.write(path)


def test_a_snapshot_round_trip_equals_the_index(tmp_path: Path) -> None:
    index = _filled(3000)
    path = tmp_path / "device-index" / "B.npz"
    _saved(index, path)
    loaded = DeviceIndex.load(path)
    assert loaded.position == StreamPosition("2026-01-02T03:04:05.678901+00:00", 42)
    assert not loaded.loaded  # the feed reads what followed first
    _same(loaded, index)
    assert "another odd one" in loaded and "an-odd-id" not in loaded
    # It goes on as an index: puts, deletes and re-cells after a load.
    fresh, moved, first = _record(3), _record(4), next(iter(index))
    for target in (loaded, index):
        target["dev_" + "a" * 24] = fresh
        target[first] = moved
        del target["another odd one"]
    _same(loaded, index)
    assert not list(tmp_path.glob("device-index/.*"))  # no temporary file left


def test_an_empty_index_round_trips(tmp_path: Path) -> None:
    _saved(DeviceIndex(), tmp_path / "e.npz", seq=0)
    loaded = DeviceIndex.load(tmp_path / "e.npz")
    assert len(loaded) == 0 and loaded.position is not None and loaded.position.seq == 0


def _rewritten(path: Path, change: dict[str, Any]) -> None:
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(arrays["meta"].tobytes()) | change
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)


@pytest.mark.parametrize("damage", ["truncated", "flipped", "empty", "other-format", "not-a-zip", "bad-column"])
async def test_a_damaged_or_foreign_file_is_ignored_with_a_log_line(
        tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(data_dir=tmp_path, device_bucket="B")
    path = snapshot_path(settings)
    _saved(_filled(500), path)
    (path.parent / f".{path.name}.999999.tmp").write_bytes(b"a write cut short")
    raw = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "flipped":  # inside the digest column: only its CRC tells
        with zipfile.ZipFile(path) as archive:
            at = archive.getinfo("digest.npy").header_offset + 30 + len("digest.npy") + 200
        path.write_bytes(raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1:])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "other-format":
        _rewritten(path, {"format": "tocsin-device-index/0"})
    elif damage == "not-a-zip":
        path.write_bytes(b"\x93NUMPY" + raw[6:100])
    else:
        with np.load(path) as data:
            arrays = {name: data[name] for name in data.files}
        arrays["created"] = arrays["created"].astype(np.uint64)
        np.savez(path, **arrays)
    with pytest.raises(SnapshotRefused):
        DeviceIndex.load(path)
    index = DeviceIndex()
    with caplog.at_level(logging.WARNING, logger="tocsin.api.device_snapshots"):
        assert await load_snapshot(index, settings) is None
    assert len(index) == 0
    assert any(r.getMessage() == "device snapshot ignored: a full pass" for r in caplog.records)
    assert not list(path.parent.glob(".*.tmp"))  # left by a crash mid-write: removed


async def test_records_past_the_ttl_are_dropped_at_load(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, device_bucket="B", device_ttl_s=86400.0)
    index, expected = DeviceIndex(), DeviceIndex()
    now = datetime.now(UTC)
    for i in range(200):
        age = timedelta(days=2) if i % 3 == 0 else timedelta(hours=1)
        index[f"dev_{i:024x}"] = record = _record(i, renewed=now - age)
        if i % 3:
            expected[f"dev_{i:024x}"] = record
    _saved(index, snapshot_path(settings))
    loaded = DeviceIndex()
    position = await load_snapshot(loaded, settings)
    assert position is not None and position.seq == 42
    assert sorted(loaded) == [f"dev_{i:024x}" for i in range(200) if i % 3]
    _same(loaded, expected)


# -- on a real nats-server ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _full_pass(node: Node) -> AsyncIterator[DeviceIndex]:
    """An index fed by a full pass of the node's device bucket."""
    index = DeviceIndex()
    task = asyncio.get_running_loop().create_task(node.services.store.mirror_devices(index))
    try:
        await until(lambda: index.loaded, timeout_s=15)
        yield index
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _bucket_while_down(nats_server: NatsServer, settings: Settings, recreate: bool = False) -> Any:
    nc = await nats.connect(nats_server.client_url)
    js = nc.jetstream()
    if recreate:
        await js.delete_key_value(settings.device_bucket)
        await js.create_key_value(KeyValueConfig(bucket=settings.device_bucket, history=1, storage=StorageType.FILE))
    return nc, await js.key_value(settings.device_bucket)


def _logged(caplog: pytest.LogCaptureFixture, message: str) -> bool:
    return any(r.getMessage() == message for r in caplog.records)


async def _written_at_stop(settings: Settings, ids: list[str]) -> None:
    running = await start_node(settings)
    node = running[0]
    try:
        devices = node.services.store.devices
        for i, key in enumerate(ids):
            await devices.put(key, _record(i))
        for key in ids[::4]:
            await devices.put(key, _record(500))
        for key in ids[1::9]:
            await devices.delete(key)
        cache, gone = node.services.device_cache, set(ids[1::9])
        await until(lambda: all((key in cache) is (key not in gone) for key in ids))
    finally:
        await stop_node(*running)
    assert snapshot_path(settings).exists()  # written at the clean stop


async def test_a_restart_from_the_snapshot_plus_changes_made_while_down_equals_a_full_pass(
        tmp_path: Path, nats_server: NatsServer, caplog: pytest.LogCaptureFixture) -> None:
    settings = device_settings(tmp_path, nats_server)
    ids = [f"dev_{secrets.token_hex(12)}" for _ in range(300)]
    await _written_at_stop(settings, ids)
    nc, bucket = await _bucket_while_down(nats_server, settings)
    try:
        for i in range(40):
            await bucket.put(f"dev_{i:024x}", json.dumps(_record(i)).encode())  # new
        for i, key in enumerate(ids[2::6]):
            await bucket.put(key, json.dumps(_record(700 + i)).encode())  # overwritten
        for key in ids[3::5]:
            await bucket.delete(key)
        await bucket.purge(ids[4])
        await bucket.delete(f"dev_{7:024x}")
    finally:
        await nc.close()
    caplog.set_level(logging.INFO)
    running = await start_node(settings)
    node = running[0]
    try:
        index = node.services.device_cache
        await until(lambda: index.loaded, timeout_s=15)
        assert _logged(caplog, "device snapshot loaded")
        assert not _logged(caplog, "device snapshot not continued: a full pass")
        assert ids[0] in index and ids[3] not in index and ids[4] not in index and f"dev_{7:024x}" not in index
        async with _full_pass(node) as rebuilt:
            _same(index, rebuilt)
            # Live after that first pass: a put and a delete made now reach it too.
            await node.services.store.devices.put("dev_" + "e" * 24, _record(5))
            await node.services.store.devices.delete(ids[0])
            await until(lambda: "dev_" + "e" * 24 in index and ids[0] not in index)
            await until(lambda: "dev_" + "e" * 24 in rebuilt and ids[0] not in rebuilt)
            _same(index, rebuilt)
    finally:
        await stop_node(*running)


async def test_a_snapshot_of_a_recreated_bucket_is_ignored(
        tmp_path: Path, nats_server: NatsServer, caplog: pytest.LogCaptureFixture) -> None:
    settings = device_settings(tmp_path, nats_server)
    ids = [f"dev_{secrets.token_hex(12)}" for _ in range(100)]
    await _written_at_stop(settings, ids)
    nc, bucket = await _bucket_while_down(nats_server, settings, recreate=True)
    try:
        for i in range(30):  # a later sequence than the snapshot's: only `created` tells
            await bucket.put(f"dev_{i:024x}", json.dumps(_record(i)).encode())
        for i in range(0, 30, 2):
            await bucket.put(f"dev_{i:024x}", json.dumps(_record(i + 1)).encode())
    finally:
        await nc.close()
    caplog.set_level(logging.INFO)
    running = await start_node(settings)
    node = running[0]
    try:
        index = node.services.device_cache
        await until(lambda: index.loaded, timeout_s=15)
        assert _logged(caplog, "device snapshot not continued: a full pass")
        assert all(f"dev_{i:024x}" in index for i in range(30))
        assert not any(key in index for key in ids)
        async with _full_pass(node) as rebuilt:
            _same(index, rebuilt)
    finally:
        await stop_node(*running)


async def test_a_truncated_snapshot_on_a_node_means_a_full_pass(
        tmp_path: Path, nats_server: NatsServer, caplog: pytest.LogCaptureFixture) -> None:
    settings = device_settings(tmp_path, nats_server)
    ids = [f"dev_{secrets.token_hex(12)}" for _ in range(100)]
    await _written_at_stop(settings, ids)
    path = snapshot_path(settings)
    path.write_bytes(path.read_bytes()[:-100])
    caplog.set_level(logging.INFO)
    running = await start_node(settings)
    node = running[0]
    try:
        index = node.services.device_cache
        await until(lambda: index.loaded, timeout_s=15)
        assert _logged(caplog, "device snapshot ignored: a full pass")
        assert all(key in index for key in ids if key not in ids[1::9])
        async with _full_pass(node) as rebuilt:
            _same(index, rebuilt)
    finally:
        await stop_node(*running)


async def test_the_keeper_writes_only_a_loaded_index_that_moved(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, device_bucket="B")
    index = _filled(200)
    keeper = SnapshotKeeper(index, settings)
    index.position = StreamPosition("2026-01-02T03:04:05+00:00", 7)
    assert not await keeper.save()  # not loaded yet: a pass is under way
    index.loaded = True
    index.position = None
    assert not await keeper.save()  # no position: a full pass is under way
    index.position = StreamPosition("2026-01-02T03:04:05+00:00", 7)
    assert await keeper.save()
    assert not await keeper.save()  # unchanged
    index["dev_" + "b" * 24] = _record(1)
    index.position = StreamPosition("2026-01-02T03:04:05+00:00", 8)
    assert await keeper.save()
    loaded = DeviceIndex.load(snapshot_path(settings))
    assert loaded.position == index.position
    _same(loaded, index)


async def test_a_copy_in_chunks_while_the_index_changes_plus_what_followed_equals_the_index(tmp_path: Path) -> None:
    """The copy frees the event loop between chunks: puts, deletes and new ids land in
    between; replaying every change after the copy's position gives the index back."""
    index = _filled(3000)
    index.position = StreamPosition("2026-01-02T03:04:05+00:00", 100)
    keys = list(index)
    task = asyncio.get_running_loop().create_task(index.snapshot_in_chunks(chunk=64))
    changes: list[tuple[str, dict[str, Any] | None]] = []
    i = 0
    while not task.done():
        key = keys[(i * 37) % len(keys)]
        change = (key, _record(i)) if i % 3 else (key, None)
        if i % 5 == 0:
            change = (f"dev_{i:024x}", _record(i))  # a new id
        if i % 11 == 0:
            change = ("odd-" + str(i), _record(i))
        changes.append(change)
        if change[1] is None:
            index.discard(change[0])
        else:
            index[change[0]] = change[1]
        i += 1
        await asyncio.sleep(0)
    snapshot, longest = task.result()
    assert snapshot is not None and snapshot.position.seq == 100 and len(changes) > 50
    assert longest < 0.5
    snapshot.write(tmp_path / "s.npz")
    loaded = DeviceIndex.load(tmp_path / "s.npz")
    for key, record in changes:
        if record is None:
            loaded.discard(key)
        else:
            loaded[key] = record
    _same(loaded, index)


async def test_a_compaction_during_the_copy_defers_the_snapshot() -> None:
    index = _filled(2000)
    index.position = StreamPosition("2026-01-02T03:04:05+00:00", 1)
    task = asyncio.get_running_loop().create_task(index.snapshot_in_chunks(chunk=64))
    await asyncio.sleep(0)
    index.compact()
    snapshot, _ = await task
    assert snapshot is None

"""The audience index kept on local disk, so that a restart reads only what changed.

At start, `mirror_with_snapshot` loads `data_dir/device-index/<bucket>.npz` in a thread (if it
is a whole snapshot of this format), drops the records past their TTL (the bucket aged them
out; their markers may be gone too), and has the feed read only the stream's messages after
the snapshot's sequence. A snapshot of another stream (the bucket deleted and made again), or
one the stream no longer continues, leads to a full pass, as does any unreadable file.

`SnapshotKeeper` writes the index every `device_snapshot_s` when it changed, and once more at a
clean stop: a copy of its columns on the event loop in chunks of 32,768 slots (a few ms each
at a million devices, the loop free between them), the file from a thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from tocsin.api.device_index import DeviceIndex, SnapshotRefused
from tocsin.settings import Settings
from tocsin.store.base import Store, StreamPosition

log = logging.getLogger(__name__)


def snapshot_path(settings: Settings) -> Path:
    """One file per bucket name, in the node's data directory."""
    return settings.data_dir / "device-index" / f"{settings.device_bucket}.npz"


def drop_expired(index: DeviceIndex, settings: Settings) -> int:
    """Drop the records no connect renewed for `device_ttl_s`: the bucket drops them by age."""
    return index.drop_renewed_before(int(time.time() - settings.device_ttl_s))


async def load_snapshot(index: DeviceIndex, settings: Settings) -> StreamPosition | None:
    """Fill `index` from its snapshot file; its position, or None (no file, or refused)."""
    path = snapshot_path(settings)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # a write a crash cut short
        stale.unlink(missing_ok=True)
    if not path.exists():
        return None
    started = time.perf_counter()
    try:
        loaded = await asyncio.to_thread(DeviceIndex.load, path)
    except SnapshotRefused as exc:
        log.warning("device snapshot ignored: a full pass", extra={"path": str(path), "error": str(exc)})
        return None
    index.adopt(loaded)
    expired = drop_expired(index, settings)
    log.info("device snapshot loaded", extra={
        "path": str(path), "devices": len(index), "expired": expired,
        "seq": loaded.position.seq if loaded.position else 0, "seconds": round(time.perf_counter() - started, 3)})
    return index.position


async def mirror_with_snapshot(store: Store, index: DeviceIndex, settings: Settings) -> None:
    """The device feed, from the snapshot if there is a usable one (`store.mirror_devices`)."""
    after = await load_snapshot(index, settings) if settings.device_snapshot_s > 0 else None
    await store.mirror_devices(index, after=after)


class SnapshotKeeper:
    """Writes the index's snapshot periodically and at a clean stop, only when it changed."""

    def __init__(self, index: DeviceIndex, settings: Settings) -> None:
        self.index = index
        self.settings = settings
        self.path = snapshot_path(settings)
        self.written: StreamPosition | None = None
        self.held_s = 0.0  # how long the last copy held the event loop
        self._lock = asyncio.Lock()

    async def save(self) -> bool:
        """Write a snapshot if the index is loaded and moved since the last; True if written."""
        async with self._lock:
            index = self.index
            if not index.loaded or index.position is None or index.position == self.written:
                return False
            started = time.perf_counter()
            snapshot, self.held_s = await index.snapshot_in_chunks()
            if snapshot is None:  # a compaction meanwhile, or a full pass began
                log.info("device snapshot deferred: the index was compacted while it was copied")
                return False
            try:
                await asyncio.to_thread(snapshot.write, self.path)
            except OSError as exc:
                log.warning("device snapshot not written", extra={"path": str(self.path), "error": repr(exc)[:200]})
                return False
            self.written = snapshot.position
            log.info("device snapshot written", extra={
                "path": str(self.path), "devices": len(index), "seq": snapshot.position.seq,
                "loop_held_ms": round(self.held_s * 1000, 1), "seconds": round(time.perf_counter() - started, 3)})
            return True

    async def run(self) -> None:
        """Every `device_snapshot_s`: drop expired records, then write if changed."""
        every = self.settings.device_snapshot_s
        if every <= 0:
            return
        while True:
            await asyncio.sleep(every)
            if self.index.loaded:
                drop_expired(self.index, self.settings)
            try:
                await self.save()
            except Exception as exc:  # a cache's copy: never stops the node
                log.warning("device snapshot failed", extra={"error": repr(exc)[:200]})

"""Bench: planning one alert for N push-registered devices (default 100,000).

    python bench/delivery_bench.py [--devices 100000] [--no-sync] [--r3]

Prints the time of each part of a plan, as the planner does it (delivery/planner.py):
`DeviceIndex.members` for a cover over the devices' cell, the Delivery messages, and
`enqueue_all` to the DELIVERIES work queue on a nats-server started here (file store,
`sync_interval: always`, R1; atomic batches of 1000, each message with its Nats-Msg-Id and TTL); then
the same enqueue again (a replanned alert: every message a duplicate). The server is
stopped by pid at the end, on error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import nats

from tocsin.api.device_index import DeviceIndex
from tocsin.api.device_records import record_json
from tocsin.cluster.local import LocalCluster
from tocsin.cluster.nats_server import NatsServer
from tocsin.delivery import queue
from tocsin.delivery.queue import ATOMIC_BATCH
from tocsin.delivery.model import FCM
from tocsin.delivery.planner import deliveries, enqueue_all
from tocsin.geo.cells import Cover, cell_for_point
from tocsin.settings import Settings


async def main(devices: int, sync_always: bool = True, r3: bool = False) -> None:
    cell = cell_for_point(48.8566, 2.3522)
    index = DeviceIndex()
    now = datetime.now(UTC)
    record = record_json(cells=[cell], languages=["fr"], tests=False, canary=False, secret_sha256="0" * 64,
                         created=now, renewed=now)
    payload = json.dumps({**record, "channel": FCM}).encode()
    index.put_many([(f"dev_{i:024x}", payload) for i in range(devices)])
    began = time.perf_counter()
    members = index.members(Cover(cells=frozenset({cell})), "Actual", (FCM,))
    members_s = time.perf_counter() - began
    active = SimpleNamespace(
        stored=SimpleNamespace(seq=1, envelope=SimpleNamespace(alert_id="a" * 32)),
        expires_at=now + timedelta(hours=1),
        alert=SimpleNamespace(status=SimpleNamespace(value="Actual"), infos=()),
    )
    began = time.perf_counter()
    planned = deliveries(active, members, [])  # type: ignore[arg-type]
    build_s = time.perf_counter() - began
    with tempfile.TemporaryDirectory() as folder:
        if r3:  # three nats-servers (LocalCluster: each with sync_interval: always), R3 streams
            cluster = LocalCluster(Path(folder), nodes=3)
            await cluster.start()
            url, replicas, stop = cluster.specs[0].nats_url, 3, cluster.stop
        else:
            server = NatsServer(store_dir=Path(folder) / "nats", name="bench", sync_always=sync_always)
            await server.start()
            url, replicas, stop = server.client_url, 1, server.stop
        try:
            nc = await nats.connect(url)
            settings = Settings(deliveries_stream="BENCH_DELIVERIES", deliveries_max_bytes=2 * 1024**3,
                                replicas=replicas)
            js = nc.jetstream()
            await queue.ensure(js, settings)
            began = time.perf_counter()
            await enqueue_all(nc, js, settings, planned)
            enqueue_s = time.perf_counter() - began
            began = time.perf_counter()
            await enqueue_all(nc, js, settings, planned)
            again_s = time.perf_counter() - began
            held = (await js.stream_info(settings.deliveries_stream)).state.messages
            await nc.close()
        finally:
            await stop()
    print(f"R{replicas}")
    print(f"devices: {len(members)} (of {devices} in the index); queue holds {held} after two plans")
    print(f"members(): {members_s * 1000:.0f} ms; Delivery messages: {build_s * 1000:.0f} ms")
    print(f"enqueue (atomic batches of {ATOMIC_BATCH}): {enqueue_s:.2f} s, {len(planned) / enqueue_s:,.0f} deliveries/s")
    print(f"enqueue again (all duplicates): {again_s:.2f} s")
    print(f"alert planned for {len(members)} devices in {members_s + build_s + enqueue_s:.2f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--no-sync", action="store_true", help="the server without sync_interval: always")
    parser.add_argument("--r3", action="store_true", help="a 3-server cluster, the queue replicated three times")
    args = parser.parse_args()
    asyncio.run(main(args.devices, not args.no_sync, args.r3))

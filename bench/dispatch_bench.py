"""Bench: one node's dispatch throughput to a fake push gateway (HTTP/2 over TLS, loopback).

    python bench/dispatch_bench.py [--devices 5000] [--concurrency 64]

Starts a nats-server (`sync_interval: always`) and one tocsin node whose only push sender
is the tests' gateway sender (tests/delivery/gateway.py) to the tests' fake gateway, which
answers 200 to everything. Writes N push device records to the device bucket, issues one
alert over them, and prints the time from the issue's 201 until the gateway has received
all N, and the rate: the plan, the queue, the dispatcher's bucket reads and the sends, with
one node doing all of it. Everything is stopped at the end, on error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
import sys

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tocsin.api.device_records import record_json
from tocsin.app import open_node, run_node
from tocsin.approval.automated import write_automated_source
from tocsin.cluster.nats_server import NatsServer
from tocsin.delivery.model import FCM
from tocsin.geo.cells import cell_for_point
from tocsin.settings import Settings

from tests.delivery.gateway import Gateway, GatewaySender
from tests.fakes.h2 import h2_server
from tests.fakes.tls import gateway_ca
from tests.samples import IN_PARIS, alert_xml

ISSUER = "tci_bench-automated-source"


async def main(devices: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        server = NatsServer(store_dir=root / "nats", name="bench")
        await server.start()
        gateway = Gateway()
        try:
            async with h2_server(gateway.app()) as url:
                settings = Settings(
                    data_dir=root / "node", listen="127.0.0.1:0", nats_url=server.client_url,
                    nats_monitor_url=server.monitor_url, probe_interval_s=0.0, dispatch_concurrency=concurrency,
                    accounts_file=str(write_automated_source(root / "accounts.toml", ISSUER)),
                    push_ca_file=str(gateway_ca().ca_file), reconcile_interval_s=3600.0,
                )
                await run(settings, gateway, url, devices)
        finally:
            await server.stop()


async def run(settings: Settings, gateway: Gateway, url: str, devices: int) -> None:
    async with open_node(settings, senders={FCM: GatewaySender(url, settings)}) as node:
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(run_node(node, lambda _: started.set_result(None)))
        try:
            await asyncio.wait_for(started, 30)
            bucket, now = node.services.store.devices, node.services.clock()
            record = record_json(cells=[cell_for_point(*IN_PARIS)], languages=["fr"], tests=False, canary=False,
                                 secret_sha256="0" * 64, created=now, renewed=now)
            for start in range(0, devices, 500):
                await asyncio.gather(*(bucket.put(f"dev_{i:024x}", {**record, "channel": FCM, "push": {"token": f"t{i}"}})
                                       for i in range(start, min(devices, start + 500))))
            async with asyncio.timeout(120):
                while len(node.services.device_cache) < devices:
                    await asyncio.sleep(0.05)
            async with httpx.AsyncClient(base_url=node.url, timeout=30) as http:
                response = await http.post("/api/v1/alerts", content=alert_xml(),
                                           headers={"Authorization": f"Bearer {ISSUER}",
                                                    "Content-Type": "application/cap+xml"})
                assert response.status_code == 201, response.text
            began = time.perf_counter()
            async with asyncio.timeout(600):
                while len(gateway.sent()) < devices:
                    await asyncio.sleep(0.02)
            took = time.perf_counter() - began
            print(f"{devices} push devices, dispatch_concurrency {settings.dispatch_concurrency}, one node")
            print(f"all received by the gateway {took:.2f} s after the 201: {devices / took:,.0f} deliveries/s")
            outcomes = {tuple(sample.labels.values()): int(sample.value)
                        for metric in node.services.metrics.push_attempts.collect() for sample in metric.samples
                        if sample.name.endswith("_total")}
            print(f"attempts by (channel, outcome): {outcomes}")
        finally:
            node.server.should_exit = True
            await asyncio.wait_for(task, 30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    asyncio.run(main(args.devices, args.concurrency))

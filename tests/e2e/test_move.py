"""No device stranded: a watcher leaves a node that stopped delivering, for a ready one.

Two real nodes on one nats-server share the stream, the buckets and the signing key. One
node's follower is held (its fan-out stuck, as F16 does it); its keepalives, written by a
task of their own, keep saying how old its last delivered probe is, and the watcher moves
to the other node within the bound of RELIABILITY.md invariant 6. When the other node is
red too, the watcher stays where it is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import unique_name
from tests.e2e.conftest import ISSUER_TOKEN, start_node, stop_node
from tests.health.conftest import GREEN_WITHIN_S, Readyz, fast_settings
from tests.samples import IN_PARIS, alert_xml
from tests.waiting import until
from tocsin.app import Node
from tocsin.client.watch import Watcher
from tocsin.cluster.nats_server import NatsServer

ADMIN = {"Authorization": f"Bearer {ISSUER_TOKEN}", "Content-Type": "application/cap+xml"}
# RELIABILITY.md invariant 6.
STRANDED_S = 10.0


@dataclass
class Pair:
    a: Node
    b: Node
    holds: list[asyncio.Event]

    def hold(self, node: Node) -> None:
        """Stick the node's fan-out: its follower waits before the next alert."""
        event = asyncio.Event()
        node.services.pipeline.follower.hold = event
        self.holds.append(event)


@pytest.fixture
async def pair(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[Pair]:
    stream = unique_name("ALERTS_MOVE")
    key = tmp_path / "signing-key.pem"
    started = []
    holds: list[asyncio.Event] = []
    try:
        for name in ("a", "b"):
            # Live watchers only: no Web Push canary. A node whose follower is held keeps the
            # probe its planner took for FOLLOWER_WAIT_S (3 s, more than two 0.5 s intervals),
            # so the other node's Web Push canary is late too and no node is ready to move to.
            settings = fast_settings(tmp_path / name, nats_server, stream=stream, signing_key_file=str(key),
                                     webpush_hosts="")
            started.append(await start_node(settings))
        a, b = started[0][0], started[1][0]
        async with httpx.AsyncClient(timeout=5) as http:
            for node in (a, b):
                await Readyz(node.url).until(http, ready=True, within_s=GREEN_WITHIN_S)
        yield Pair(a=a, b=b, holds=holds)
    finally:
        for node, _, _ in started:
            node.services.pipeline.follower.hold = None
        for event in holds:
            event.set()
        for running in started:
            await stop_node(*running)


async def test_a_watcher_leaves_a_node_whose_fan_out_is_stuck(pair: Pair) -> None:
    async with Watcher(urls=[pair.a.url, pair.b.url], places=[IN_PARIS], trust_on_first_use=True) as watcher:
        async with asyncio.timeout(10):
            synced = await watcher.wait_synced()
        assert synced.url == pair.a.url
        pair.hold(pair.a)
        held = time.monotonic()
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.post(f"{pair.b.url}/api/v1/alerts", content=alert_xml(), headers=ADMIN)
        assert response.status_code == 201, response.text
        async with asyncio.timeout(STRANDED_S):
            display = await anext(watcher.displays())
        waited = time.monotonic() - held
        print(f"moved and showed the alert {waited:.2f} s after node a's fan-out stuck")
        assert display.alert_id == response.json()["id"]
        assert display.node == pair.b.url
        assert watcher.stats.moves == 1 and watcher.stats.stale >= 1


async def test_a_watcher_stays_when_no_other_node_is_ready(pair: Pair) -> None:
    """Every node red: moving would only shift the load, so nobody stampedes."""
    async with Watcher(urls=[pair.a.url, pair.b.url], places=[IN_PARIS], trust_on_first_use=True) as watcher:
        async with asyncio.timeout(10):
            await watcher.wait_synced()
        async with httpx.AsyncClient(timeout=5) as http:
            pair.hold(pair.b)
            await Readyz(pair.b.url).until(http, ready=False, within_s=10.0)
            pair.hold(pair.a)
            # Several stale keepalives, each one a look at node b's /readyz (red).
            await until(lambda: watcher.stats.stale >= 3, timeout_s=15.0)
            assert (await http.get(f"{pair.b.url}/readyz")).status_code == 503
        assert watcher.stats.moves == 0
        assert watcher.stats.connects == 1 and watcher.stats.disconnects == 0

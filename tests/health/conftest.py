"""Nodes with fast probes, and a sampler of /readyz that only ever waits on deadlines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import unique_name
from tests.e2e.conftest import ADMIN_TOKEN, ISSUER_TOKEN, start_node, stop_node
from tocsin.app import Node
from tocsin.approval.automated import write_automated_source
from tocsin.cluster.nats_server import NatsServer
from tocsin.settings import Settings

# Issue 4: /readyz sampled every 0.5 s; red within 10 s of a fault, green within 15 s of repair.
SAMPLE_S = 0.5
RED_WITHIN_S = 10.0
GREEN_WITHIN_S = 15.0
PROBE_INTERVAL_S = 0.5


def fast_settings(data_dir: Path, nats: NatsServer, **changes: Any) -> Settings:
    """A node that probes every 0.5 s and judges every check within a couple of seconds."""
    settings = Settings(
        data_dir=data_dir,
        listen="127.0.0.1:0",
        nats_url=nats.client_url,
        nats_monitor_url=nats.monitor_url,
        node_name=unique_name("hnode"),
        stream=unique_name("ALERTS_H"),
        # Its own: routes another test made (schemathesis makes some) would show in /readyz.
        routes_bucket=unique_name("ROUTES_H"),
        # Small: every test's stream and buckets stay reserved on the session's server.
        device_bucket_max_bytes=8 * 1024 * 1024,
        progress_max_bytes=1024 * 1024,
        admin_token=ADMIN_TOKEN,
        accounts_file=str(write_automated_source(data_dir / "accounts.toml", ISSUER_TOKEN)),
        sse_keepalive_s=1.0,
        stream_max_bytes=32 * 1024 * 1024,
        # Each test's own queue reserves this much of the session's one server (1 GiB by default).
        deliveries_max_bytes=16 * 1024 * 1024,
        probe_interval_s=PROBE_INTERVAL_S,
        probe_expires_s=5.0,
        probe_deadline_s=2.0,
        readiness_interval_s=0.25,
        check_timeout_s=1.0,
        stall_s=2.0,
        disk_min_free_mb=1.0,
        reconcile_interval_s=1.0,
    ).replace(**changes)
    # Each deployment (the nodes of one stream) its own delivery queue and device bucket:
    # the push canaries of the tests before are not its work (their receivers are gone).
    own = {"deliveries_stream": f"{settings.stream}_DELIVERIES", "device_bucket": f"{settings.stream}_DEVICES"}
    return settings.replace(**{name: value for name, value in own.items() if name not in changes})


@dataclass
class Sample:
    at: float  # seconds since the sampler started
    status: int | None  # None: no answer within the sample's deadline
    took_s: float
    failing: list[str] = field(default_factory=list)


class Readyz:
    """Samples /readyz every 0.5 s; each request has a 1 s deadline (no answer = not 200)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[Sample] = []
        self._t0 = time.monotonic()
        self.red_after_s: float | None = None
        self.green_after_s: float | None = None
        self.broken_at: float | None = None  # when the fault was made, as `Sample.at`

    def since_fault(self) -> list[Sample]:
        """The samples taken after the fault was made (not those of the node's start)."""
        return [s for s in self.samples if self.broken_at is not None and s.at >= self.broken_at]

    async def sample(self, http: httpx.AsyncClient) -> Sample:
        started = time.monotonic()
        status: int | None = None
        failing: list[str] = []
        try:
            response = await http.get(f"{self.url}/readyz", timeout=1.0)
            status = response.status_code
            failing = list(response.json().get("failing", []))
        except (httpx.HTTPError, ValueError):
            pass
        sample = Sample(at=started - self._t0, status=status, took_s=time.monotonic() - started, failing=failing)
        self.samples.append(sample)
        return sample

    async def until(self, http: httpx.AsyncClient, *, ready: bool, within_s: float) -> float:
        """Sample until /readyz is (or is not) 200; returns how long it took."""
        started = time.monotonic()
        while True:
            sample = await self.sample(http)
            if (sample.status == 200) == ready:
                return time.monotonic() - started
            elapsed = time.monotonic() - started
            assert elapsed < within_s, f"/readyz not {'200' if ready else 'red'} after {elapsed:.1f} s: {self.samples[-5:]}"
            await asyncio.sleep(max(0.0, SAMPLE_S - sample.took_s))

    async def holds(self, http: httpx.AsyncClient, *, ready: bool, for_s: float) -> None:
        """Every sample for `for_s` seconds is (or is not) 200."""
        deadline = time.monotonic() + for_s
        while time.monotonic() < deadline:
            sample = await self.sample(http)
            assert (sample.status == 200) == ready, f"/readyz flipped: {sample}"
            await asyncio.sleep(max(0.0, SAMPLE_S - sample.took_s))


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


@pytest.fixture
async def fast_node(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[Node]:
    running = await start_node(fast_settings(tmp_path, nats_server))
    try:
        yield running[0]
    finally:
        await stop_node(*running)


async def red_then_green(
    http: httpx.AsyncClient,
    node: Node,
    breaking: Callable[[], Awaitable[None]],
    repairing: Callable[[], Awaitable[None]],
    *,
    hold_s: float = 2.0,
) -> Readyz:
    """Green first (a red-only test proves nothing), break, red within 10 s and staying red,
    repair, green within 15 s. The repair runs even when an assertion fails."""
    readyz = Readyz(node.url)
    await readyz.until(http, ready=True, within_s=GREEN_WITHIN_S)
    await readyz.holds(http, ready=True, for_s=1.0)
    repaired = False
    try:
        readyz.broken_at = time.monotonic() - readyz._t0
        await breaking()
        readyz.red_after_s = await readyz.until(http, ready=False, within_s=RED_WITHIN_S)
        await readyz.holds(http, ready=False, for_s=hold_s)
        await repairing()
        repaired = True
        readyz.green_after_s = await readyz.until(http, ready=True, within_s=GREEN_WITHIN_S)
        print(f"red {readyz.red_after_s:.2f} s after the fault, green {readyz.green_after_s:.2f} s after the repair")
    finally:
        if not repaired:
            await repairing()
    return readyz

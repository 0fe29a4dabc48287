"""A running tocsin node (HTTP on a loopback port) on the session's nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tocsin.app import Node, open_node, run_node
from tocsin.approval.automated import write_automated_source
from tocsin.cluster.nats_server import NatsServer
from tocsin.settings import Settings

from tests.conftest import unique_name

ADMIN_TOKEN = "tca_test-admin-token"
# An automated source (approval none, accounts file): its Actual alerts publish at once. The
# admin is a person, so its Actual alerts wait for a second person (docs/lifecycle.md).
ISSUER_TOKEN = "tci_test-automated-source"

# Nodes started and not yet stopped: a test that fails between its start_node and stop_node
# leaves its node in the session's loop, and a loop closed with a node's listener still open
# never finishes closing (uvloop waits on it): stop_leftover_nodes stops them at the session's end.
_running: dict[int, tuple[Node, asyncio.Task[None], object]] = {}


async def start_node(
    settings: Settings, clock: Callable[[], datetime] | None = None, *, start_s: float = 20.0, **options: Any
) -> tuple[Node, asyncio.Task[None], object]:
    """`start_s`: the deadline for serving and catching up; `options`: open_node's other
    keywords (CORE: `senders`, `routes_for`)."""
    started: asyncio.Future[Node] = asyncio.get_running_loop().create_future()
    cm = open_node(settings, clock=clock, **options) if clock else open_node(settings, **options)
    node = await cm.__aenter__()
    task = asyncio.get_running_loop().create_task(run_node(node, started.set_result))
    try:
        async with asyncio.timeout(start_s):
            await asyncio.wait([started, task], return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                await cm.__aexit__(None, None, None)
                task.result()  # raises what stopped the node
            await node.services.pipeline.follower.caught_up.wait()
    except BaseException:
        # A start that did not finish stops what it started: a node left running in the
        # session's loop would hang the whole run at its end.
        if not task.done():
            node.server.should_exit = True
            task.cancel()
            await asyncio.wait([task], timeout=20)
            await cm.__aexit__(None, None, None)
        raise
    _running[id(node)] = (node, task, cm)
    return node, task, cm


async def stop_node(node: Node, task: asyncio.Task[None], cm: object) -> None:
    _running.pop(id(node), None)
    node.server.should_exit = True
    async with asyncio.timeout(20):
        await task
    await cm.__aexit__(None, None, None)  # type: ignore[attr-defined]


async def stop_leftover_nodes() -> list[str]:
    """Stop every node a test left running; their names, for the report."""
    names = []
    for node, task, cm in list(_running.values()):
        names.append(node.settings.node_name)
        try:
            await stop_node(node, task, cm)
        except Exception:  # a node that stops badly still must not hang the run
            task.cancel()
    return names


def node_settings(tmp_path: Path, nats_server: NatsServer, **changes: object) -> Settings:
    accounts = write_automated_source(tmp_path / "accounts.toml", ISSUER_TOKEN)
    return Settings(
        data_dir=tmp_path,
        listen="127.0.0.1:0",
        nats_url=nats_server.client_url,
        nats_monitor_url=nats_server.monitor_url,
        node_name=unique_name("node"),
        stream=unique_name("ALERTS_T"),
        admin_token=ADMIN_TOKEN,
        accounts_file=str(accounts),
        sse_keepalive_s=1.0,
        stream_max_bytes=32 * 1024 * 1024,
        # Each test's own queue reserves this much of the session's one server (1 GiB by default).
        deliveries_max_bytes=16 * 1024 * 1024,
        # Tests call reconcile() themselves; the background pass runs once at start.
        reconcile_interval_s=3600.0,
        # These tests count the stream's seqs; the prober's System alerts are tested in tests/health.
        probe_interval_s=0.0,
    ).replace(**changes)


@asynccontextmanager
async def running_node(settings: Settings) -> AsyncIterator[Node]:
    """A node serving with these settings, stopped on exit."""
    running = await start_node(settings)
    try:
        yield running[0]
    finally:
        await stop_node(*running)


@pytest.fixture
async def node(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[Node]:
    async with running_node(node_settings(tmp_path, nats_server)) as started:
        yield started


@pytest.fixture
async def http(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
        yield client


@pytest.fixture
def admin() -> dict[str, str]:
    """The issuing tests' token: the automated source (the admin's Actual alerts would wait)."""
    return {"Authorization": f"Bearer {ISSUER_TOKEN}"}


class FakeClock:
    """Real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)

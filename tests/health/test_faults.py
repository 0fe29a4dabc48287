"""F16 and friends: delivery broken while every process runs; /readyz must say so, then recover.

Each test waits for green, breaks one thing for real, and checks that /readyz (sampled
every 0.5 s) turns red within 10 s and stays red, then green within 15 s of the repair.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig

from tests.e2e.conftest import ISSUER_TOKEN, start_node, stop_node
from tests.e2e.devices import register, sse_device
from tests.health.conftest import fast_settings, red_then_green
from tests.samples import IN_PARIS, alert_xml
from tocsin.api import fastpath
from tocsin.app import Node
from tocsin.cluster.nats_server import NatsServer

ADMIN = {"Authorization": f"Bearer {ISSUER_TOKEN}", "Content-Type": "application/cap+xml"}


# nats-py drops the socket of a connection it declared stale without closing its asyncio
# StreamWriter; the warning comes from the client library's reconnect, not from tocsin.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <function StreamWriter.__del__:pytest.PytestUnraisableExceptionWarning"
)
async def test_paused_nats_server(tmp_path: Path, http: httpx.AsyncClient) -> None:
    """SIGSTOP the node's nats-server: the process runs, nothing is stored or delivered."""
    own = NatsServer(store_dir=tmp_path / "nats", name="paused-nats")
    await own.start()
    running = await start_node(fast_settings(tmp_path / "node", own))
    node = running[0]
    pid = own.pid
    assert pid is not None

    async def pause() -> None:
        os.kill(pid, signal.SIGSTOP)

    async def resume() -> None:
        os.kill(pid, signal.SIGCONT)

    try:
        # Held long enough for the client to call the connection stale and reconnect.
        readyz = await red_then_green(http, node, pause, resume, hold_s=7.0)
        # Readiness never waits on NATS: every sample answered, and fast, while it was frozen.
        assert all(s.status is not None for s in readyz.samples)
        assert max(s.took_s for s in readyz.samples) < 0.5, readyz.samples
        red = [s for s in readyz.samples if s.status == 503]
        assert any("stream" in s.failing for s in red)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        await stop_node(*running)
        await own.stop()


async def test_fan_out_stuck(fast_node: Node, http: httpx.AsyncClient) -> None:
    """The follower coroutine waits forever before fanning the next alert out."""
    follower = fast_node.services.pipeline.follower
    hold = asyncio.Event()
    async with httpx.AsyncClient(base_url=fast_node.url) as local:
        device = await register(local, *IN_PARIS)

    async def stick() -> None:
        follower.hold = hold

    async with sse_device(fast_node.url, device["token"]) as sse:
        await sse.next("synced")
        issued: list[str] = []

        async def unstick() -> None:
            # While stuck, a real device does not get a real alert either: red was the truth.
            response = await http.post(f"{fast_node.url}/api/v1/alerts", content=alert_xml(), headers=ADMIN)
            assert response.status_code == 201, response.text
            issued.append(response.json()["id"])
            with pytest.raises(TimeoutError):
                await sse.next_alert(timeout_s=1.0)
            follower.hold = None
            hold.set()

        readyz = await red_then_green(http, fast_node, stick, unstick)
        assert (await sse.next_alert())["id"] == issued[0]
    assert any("follower" in s.failing or "canary" in s.failing for s in readyz.samples)


async def test_consumer_at_max_ack_pending(fast_node: Node, http: httpx.AsyncClient, nats_server: NatsServer) -> None:
    """A durable consumer (a dispatcher) took its max unacked deliveries and stopped acking."""
    stream = fast_node.settings.stream
    nc = await nats.connect(nats_server.client_url)
    js = nc.jetstream()
    taken: list[Msg] = []

    async def take_and_never_ack() -> None:
        sub = await js.pull_subscribe(
            f"{stream}.>", durable="dispatcher", stream=stream,
            config=ConsumerConfig(max_ack_pending=1, ack_wait=120),
        )
        taken.extend(await sub.fetch(1, timeout=5))

    async def ack() -> None:
        for msg in taken:
            await msg.ack()

    try:
        readyz = await red_then_green(http, fast_node, take_and_never_ack, ack)
        assert any("consumers" in s.failing for s in readyz.samples)
    finally:
        await nc.close()


class MuteTransport:
    """A device's socket as a broken writer sees it: every write is taken, and dropped."""

    muted = True

    def __init__(self, inner: asyncio.Transport) -> None:
        self.inner = inner

    def write(self, data: bytes) -> None:
        if not MuteTransport.muted:
            self.inner.write(data)

    def get_extra_info(self, name: str, default: object = None) -> object:
        # No socket to send on: the fan-out's writes must all come through write().
        return None if name == "socket" else self.inner.get_extra_info(name, default)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_channel_that_accepts_but_never_writes(
    fast_node: Node, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SSE endpoint answers 200 (status and headers go out) and then writes nothing, on
    open streams and new ones alike. Only the canary, reading over HTTP, can tell."""
    live = fast_node.services.live
    real_transport_of = fastpath._transport_of

    def muted_transport_of(send: object) -> object:
        transport = real_transport_of(send)  # type: ignore[arg-type]
        return None if transport is None else MuteTransport(transport)

    async def go_silent() -> None:
        MuteTransport.muted = True
        monkeypatch.setattr(fastpath, "_transport_of", muted_transport_of)
        for connection in {c for members in live.by_cell.values() for c in members}:
            if connection.transport is not None:
                connection.use(MuteTransport(connection.transport))  # type: ignore[arg-type]

    async def write_again() -> None:
        MuteTransport.muted = False
        monkeypatch.undo()

    readyz = await red_then_green(http, fast_node, go_silent, write_again)
    red = [s for s in readyz.since_fault() if s.status == 503]
    # NATS, the stream and the follower were fine all along: the canary alone saw it.
    assert red and all(set(s.failing) <= {"canary", "canary:sse"} for s in red), red


@contextlib.contextmanager
def small_tmpfs(path: Path, size_mb: int) -> Iterator[bool]:
    """A tmpfs of `size_mb` at `path`; yields False when this machine refuses to mount one."""
    path.mkdir(parents=True, exist_ok=True)
    try:  # needs root and mount(8); without them the test uses a threshold no disk meets
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)], capture_output=True, timeout=30
        ).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        mounted = False
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill(path: Path) -> None:
    chunk = b"\0" * (1 << 20)
    with path.open("wb") as f:
        while True:
            try:
                f.write(chunk)
                f.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                return


async def test_data_disk_full(tmp_path: Path, http: httpx.AsyncClient, nats_server: NatsServer) -> None:
    """The node's data directory (its ledger) fills up: accept cannot record, red; freed, green."""
    disk = tmp_path / "disk"
    filler = disk / "filler"
    with small_tmpfs(disk, 24) as mounted:
        running = await start_node(fast_settings(disk / "node", nats_server, disk_min_free_mb=4.0))
        node = running[0]
        readiness = node.services.readiness
        assert readiness is not None
        limits = readiness.limits

        async def fill() -> None:
            if mounted:
                await asyncio.to_thread(_fill, filler)
            else:  # no tmpfs here (not root): the same check, with a threshold no disk meets
                readiness.limits = dataclasses.replace(limits, disk_min_free_bytes=1 << 60)

        async def free() -> None:
            filler.unlink(missing_ok=True)
            readiness.limits = limits

        try:
            readyz = await red_then_green(http, node, fill, free)
            assert any("disk" in s.failing for s in readyz.samples)
            print("failing while full:", sorted({c for s in readyz.samples for c in s.failing}))
        finally:
            filler.unlink(missing_ok=True)
            await stop_node(*running)

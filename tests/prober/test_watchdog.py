"""F17: the prober dies, or the whole node freezes: the watchdog fires within two periods."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.e2e.conftest import start_node, stop_node
from tests.health.conftest import fast_settings
from tocsin.cluster.nats_server import NatsServer
from tocsin.prober.heartbeat import heartbeat_urls
from tocsin.prober.watchdog import Watchdog

TOCSIN = [sys.executable, "-m", "tocsin.cli.main"]
PERIOD_S = 1.0
# The watchdog looks every period/10 and an alarm command takes a few ms to start.


@dataclass
class RunningWatchdog:
    process: asyncio.subprocess.Process
    url: str
    out: list[str]


@contextlib.asynccontextmanager
async def watchdog(*args: str) -> AsyncIterator[RunningWatchdog]:
    process = await asyncio.create_subprocess_exec(
        *TOCSIN, "watchdog", "--listen", "127.0.0.1:0", "--period", str(PERIOD_S), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout
    try:
        async with asyncio.timeout(15):
            first = (await process.stdout.readline()).decode()
        match = re.search(r"listening on (\S+),", first)
        assert match, first
        yield RunningWatchdog(process, match.group(1), [first])
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def beats(http: httpx.AsyncClient, url: str, name: str) -> int:
    return int((await http.get(url)).json()["watched"][name]["beats"])


async def wait_for_beats(http: httpx.AsyncClient, url: str, name: str, at_least: int, within_s: float) -> None:
    async with asyncio.timeout(within_s):
        while await beats(http, url, name) < at_least:
            await asyncio.sleep(0.1)


async def test_watchdog_fires_when_the_prober_is_killed(tmp_path: Path, nats_server: NatsServer) -> None:
    marker = tmp_path / "alarm"
    settings = fast_settings(tmp_path / "node", nats_server, heartbeat_interval_s=PERIOD_S)
    alarm = f'echo "$TOCSIN_WATCHDOG_NODE $TOCSIN_WATCHDOG_SILENT_S" >> {marker}'
    async with watchdog("--expect", settings.node_name, "--alarm", alarm) as dog, httpx.AsyncClient() as http:
        running = await start_node(settings.replace(watchdog_urls=dog.url))
        node = running[0]
        try:
            await wait_for_beats(http, dog.url, node.settings.node_name, 2, within_s=10)
            prober = next(t for t in asyncio.all_tasks() if t.get_name() == f"prober:{node.settings.node_name}")
            prober.cancel()
            killed = time.monotonic()
            async with asyncio.timeout(2 * PERIOD_S + 5):
                while not marker.exists() or not marker.read_text().strip():
                    await asyncio.sleep(0.05)
            fired_after = time.monotonic() - killed
            print(f"watchdog fired {fired_after:.2f} s after the prober was killed")
            assert fired_after <= 2 * PERIOD_S, fired_after
            name, silent = marker.read_text().split()
            assert name == node.settings.node_name and float(silent) >= 1.5 * PERIOD_S
            # The node itself still runs and answers, but no longer claims to be ready.
            assert (await http.get(f"{node.url}/livez")).status_code == 200
            assert (await http.get(f"{node.url}/readyz")).status_code == 503
            assert dog.process.returncode is None  # with --alarm it keeps watching
        finally:
            await stop_node(*running)


async def test_watchdog_without_command_exits_when_the_node_freezes(tmp_path: Path) -> None:
    """SIGSTOP the whole `tocsin serve` process: silence, so the watchdog prints and exits 1."""
    name = "frozen-node"
    async with watchdog("--expect", name) as dog, httpx.AsyncClient() as http:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOCSIN_")} | {
            "TOCSIN_NODE_NAME": name, "TOCSIN_WATCHDOG_URLS": dog.url,
            "TOCSIN_HEARTBEAT_INTERVAL_S": str(PERIOD_S), "TOCSIN_PROBE_INTERVAL_S": "0.5",
            "TOCSIN_PROBE_DEADLINE_S": "2", "TOCSIN_SSE_KEEPALIVE_S": "1",
        }
        node = await asyncio.create_subprocess_exec(
            *TOCSIN, "serve", "--data", str(tmp_path / "data"), "--listen", "127.0.0.1:0",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=env,
        )
        try:
            await wait_for_beats(http, dog.url, name, 2, within_s=30)
            os.kill(node.pid, signal.SIGSTOP)
            frozen = time.monotonic()
            assert dog.process.stdout
            async with asyncio.timeout(2 * PERIOD_S + 5):
                code = await dog.process.wait()
            fired_after = time.monotonic() - frozen
            print(f"watchdog fired {fired_after:.2f} s after the node froze")
            rest = (await dog.process.stdout.read()).decode()
            assert code == 1
            assert f"ALARM: no heartbeat from {name}" in rest
            assert fired_after <= 2 * PERIOD_S, fired_after
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.pid, signal.SIGCONT)
                node.send_signal(signal.SIGINT)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(15):
                    await node.wait()
            if node.returncode is None:
                node.kill()
                await node.wait()


def test_late_is_one_and_a_half_periods_of_silence_and_reported_once() -> None:
    now = [0.0]
    dog = Watchdog(["a", "b"], period_s=10, grace_s=5, monotonic=lambda: now[0])
    now[0] = 5
    assert dog.beat("a") and not dog.beat("stranger")
    now[0] = 19.5  # a: 14.5 s since its beat, not yet late
    assert dog.late() == []
    now[0] = 20.5  # a: 15.5 s > 1.5 periods; b never beat: 20.5 s > 15 s + 5 s of grace
    assert sorted(w.name for w in dog.late()) == ["a", "b"]
    assert dog.late() == []  # once per silence
    dog.beat("a")
    assert dog.late() == [] and not dog.watched["a"].alarmed and dog.back == ["a"]


def test_heartbeat_urls_append_the_node_to_a_bare_base() -> None:
    assert heartbeat_urls(" http://w:9095 , https://hc.example/ping/abc,", "n1") == [
        "http://w:9095/heartbeat/n1", "https://hc.example/ping/abc",
    ]

"""`tocsin serve` as a user runs it: embedded nats-server, restarts, Ctrl-C, a second start."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.e2e.devices import register, sse_device
from tests.samples import IN_PARIS, alert_xml
from tocsin.app import Node, open_node
from tocsin.cluster.nats_server import NatsServer, NatsServerError
from tocsin.settings import Settings

TOCSIN = [sys.executable, "-m", "tocsin.cli.main"]


@dataclass
class Served:
    process: asyncio.subprocess.Process
    url: str = ""
    said: str = ""  # the line that says where it serves
    token: str | None = None
    stderr: list[str] = field(default_factory=list)
    _lines: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    async def log_line(self, phrase: str, timeout_s: float = 20) -> dict[str, object]:
        """Wait for a JSON log line whose message is `phrase`."""
        async with asyncio.timeout(timeout_s):
            while True:
                line = await self._lines.get()
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("msg") == phrase:
                    return dict(record)


async def _pump(stream: asyncio.StreamReader, served: Served) -> None:
    while raw := await stream.readline():
        line = raw.decode(errors="replace").rstrip()
        served.stderr.append(line)
        served._lines.put_nowait(line)


@asynccontextmanager
async def tocsin_serve(data: Path, *args: str, **env: str) -> AsyncIterator[Served]:
    # No prober: these tests count the stream's seqs (probing is tested in tests/health).
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TOCSIN_")} | {"TOCSIN_PROBE_INTERVAL_S": "0"} | env
    process = await asyncio.create_subprocess_exec(
        *TOCSIN, "serve", "--data", str(data), "--listen", "127.0.0.1:0", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environ,
        start_new_session=True,  # its process group: the node's every process, stopped at the end
    )
    served = Served(process)
    assert process.stdout and process.stderr
    pump = asyncio.get_running_loop().create_task(_pump(process.stderr, served))
    try:
        async with asyncio.timeout(30):
            first = (await process.stdout.readline()).decode()
            match = re.search(r"serving on (\S+)", first)
            assert match, first + "\n".join(served.stderr)
            served.url, served.said = match.group(1), first
            if not (data / "second-start").exists():
                assert "admin token" in (await process.stdout.readline()).decode()
                served.token = (await process.stdout.readline()).decode().strip().split("=", 1)[1]
        yield served
    finally:
        # The group: a supervisor's workers and nats-server too (they hold its pipes open,
        # and a process's wait() ends only once its pipes close).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        # Until every holder of its pipes is gone (the end of both): no pipe outlives the test.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await process.stdout.read()
                await pump
        pump.cancel()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_first_start_prints_token_ctrl_c_stops_all_and_second_start_finds_alerts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with tocsin_serve(data) as served:
        nats_pid = int(str((await served.log_line("nats-server started"))["pid"]))
        async with httpx.AsyncClient(base_url=served.url) as http:
            auth = {"Authorization": f"Bearer {served.token}", "Content-Type": "application/cap+xml"}
            # The admin is a person: its Exercise publishes at once, its Actual waits for a
            # second person (the README's quick start takes the first path).
            actual = await http.post("/api/v1/alerts", content=alert_xml(), headers=auth)
            assert actual.status_code == 202 and actual.json()["state"] == "pending", actual.text
            issued = (await http.post("/api/v1/alerts", content=alert_xml(status="Exercise"), headers=auth)).json()
            assert issued["seq"] == 1
        served.process.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            assert await served.process.wait() == 0
        assert not _alive(nats_pid)
    (data / "second-start").touch()
    async with tocsin_serve(data) as served:
        assert served.token is None
        async with httpx.AsyncClient(base_url=served.url) as http:
            assert (await http.get(f"/api/v1/alerts/{issued['id']}")).status_code == 200
            device = await register(http, *IN_PARIS, tests=True)
            async with sse_device(served.url, device["token"]) as sse:
                assert (await sse.next_alert())["id"] == issued["id"]


async def test_admin_token_from_environment(tmp_path: Path) -> None:
    (tmp_path / "second-start").touch()  # nothing is printed when the token is given
    async with tocsin_serve(tmp_path, TOCSIN_ADMIN_TOKEN="tca_given") as served:
        async with httpx.AsyncClient(base_url=served.url) as http:
            auth = {"Authorization": "Bearer tca_given", "Content-Type": "application/cap+xml"}
            exercise = alert_xml(status="Exercise")
            assert (await http.post("/api/v1/alerts", content=exercise, headers=auth)).status_code == 201


async def test_killed_nats_child_is_restarted_and_serving_resumes(tmp_path: Path) -> None:
    async with tocsin_serve(tmp_path) as served:
        nats_pid = int(str((await served.log_line("nats-server started"))["pid"]))
        os.kill(nats_pid, signal.SIGKILL)
        await served.log_line("nats-server exited; restarting")
        restarted = await served.log_line("nats-server restarted")
        assert restarted["node"]
        async with httpx.AsyncClient(base_url=served.url, timeout=15) as http:
            auth = {"Authorization": f"Bearer {served.token}", "Content-Type": "application/cap+xml"}
            async with asyncio.timeout(20):
                while True:  # the client reconnects on its own; each try is a real request
                    response = await http.post("/api/v1/alerts", content=alert_xml(status="Exercise"), headers=auth)
                    if response.status_code == 201:
                        break
                    assert response.status_code == 503, response.text
                    await asyncio.sleep(0.2)


async def test_refuses_to_serve_on_nats_without_sync_always(tmp_path: Path) -> None:
    unsafe = NatsServer(store_dir=tmp_path / "unsafe", name="unsafe", sync_always=False)
    await unsafe.start()
    try:
        settings = Settings(
            data_dir=tmp_path / "node", nats_url=unsafe.client_url, nats_monitor_url=unsafe.monitor_url
        )
        with pytest.raises(NatsServerError, match="sync_interval: always"):
            async with open_node(settings):
                pass
    finally:
        await unsafe.stop()


async def test_kill_9_of_tocsin_takes_its_nats_server_down_too(tmp_path: Path) -> None:
    """An orphaned nats-server would hold the store and its ports against the next start."""
    async with tocsin_serve(tmp_path) as served:
        nats_pid = int(str((await served.log_line("nats-server started"))["pid"]))
        served.process.kill()
        await served.process.wait()
        async with asyncio.timeout(10):
            while _alive(nats_pid):
                await asyncio.sleep(0.05)  # reaped by init once it exits on SIGTERM


async def test_a_stream_larger_than_the_disk_stops_startup_with_a_clear_message(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    from tests.e2e.conftest import node_settings
    from tocsin.errors import StoreMisconfigured

    settings = node_settings(tmp_path, nats_server, stream_max_bytes=10**16)
    with pytest.raises(StoreMisconfigured, match="TOCSIN_STREAM_MAX_BYTES"):
        async with open_node(settings):
            pass


async def test_a_node_keeps_its_data_dir_and_secrets_private(node: Node) -> None:
    """The data dir is this user's only (0700); the keys and tokens in it are 0600."""
    data = node.settings.data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for path in (node.settings.signing_key_path, data / "keys" / "prober-token"):
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert node.settings.signing_key_path.exists()

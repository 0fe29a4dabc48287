"""`tocsin serve --workers 2`: one node of two processes sharing its port (docs/workers.md).

Real processes throughout: the supervisor, its embedded nats-server, two workers; devices
connect to the node's one port and the kernel spreads them; each worker's private port (named
in DATA_DIR/workers/) says what that worker alone holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.devices import SseDevice, register, sse_device
from tests.e2e.test_serve import Served, _alive, tocsin_serve
from tests.samples import IN_PARIS, alert_xml
from tests.waiting import until_async

# Probes and checks often enough that readiness moves within a few seconds.
FAST = {
    "TOCSIN_PROBE_INTERVAL_S": "0.5", "TOCSIN_PROBE_DEADLINE_S": "2", "TOCSIN_PROBE_EXPIRES_S": "5",
    "TOCSIN_READINESS_INTERVAL_S": "0.25", "TOCSIN_CHECK_TIMEOUT_S": "1", "TOCSIN_STALL_S": "2",
    "TOCSIN_SSE_KEEPALIVE_S": "1", "TOCSIN_DISK_MIN_FREE_MB": "1", "TOCSIN_RECONCILE_INTERVAL_S": "1",
    "TOCSIN_STREAM_MAX_BYTES": str(32 * 2**20), "TOCSIN_DELIVERIES_MAX_BYTES": str(16 * 2**20),
}
DEVICES = 24  # all on one worker by chance: 2 in 2**24


def _entry(data: Path, index: int) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads((data / "workers" / f"{index}.json").read_text())
    return entry


def _sample(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _connected(http: httpx.AsyncClient, url: str) -> float:
    return _sample((await http.get(f"{url}/metrics")).text, "tocsin_connected_devices", channel="sse")


async def _node_readiness(url: str) -> dict[str, Any]:
    """The node's /readyz from whichever worker answers (a frozen one does not: asked again,
    from another source port, until a live one does)."""
    while True:
        try:
            async with httpx.AsyncClient(timeout=1.0) as http:
                body: dict[str, Any] = (await http.get(f"{url}/readyz")).json()
                return body
        except httpx.HTTPError:
            continue


@contextlib.asynccontextmanager
async def _devices(served: Served, tokens: list[str]) -> AsyncIterator[list[SseDevice]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(sse_device(served.url, token)) for token in tokens]


async def test_two_workers_share_the_port_speak_as_one_node_and_a_dead_one_comes_back(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with tocsin_serve(data, "--workers", "2", **FAST) as served:
        assert served.token
        auth = {"Authorization": f"Bearer {served.token}", "Content-Type": "application/cap+xml"}
        async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
            tokens = [(await register(http, *IN_PARIS, tests=True))["token"] for _ in range(DEVICES)]
            async with _devices(served, tokens) as devices:
                privates = [_entry(data, i)["url"] for i in (0, 1)]
                # The kernel spread the streams over both workers (each also holds its canary).
                own = [await _connected(http, url) for url in privates]
                assert all(n > 1 for n in own), own
                # The node's /metrics sums the workers, whichever worker answers.
                assert await _connected(http, served.url) == sum(own)
                await until_async(lambda: _green(served.url), 20)
                ready = await _node_readiness(served.url)
                assert ready["checks"]["workers"]["detail"] == "2 workers ready", ready

                first = (await http.post("/api/v1/alerts", content=alert_xml(status="Exercise"), headers=auth)).json()
                for device in devices:
                    assert (await device.next_alert())["id"] == first["id"]

                # A worker that stops answering (frozen) turns the node red, named.
                stuck = _entry(data, 1)["pid"]
                os.kill(stuck, signal.SIGSTOP)
                try:
                    await until_async(lambda: _failing_has(served.url, "workers"), 15)
                    detail = (await _node_readiness(served.url))["checks"]["workers"]["detail"]
                    assert f"worker 1 (pid {stuck}) has not answered" in detail, detail
                finally:
                    os.kill(stuck, signal.SIGCONT)
                await until_async(lambda: _green(served.url), 30)

                # Killed: started again; its devices reconnect (to either worker) and catch up.
                os.kill(stuck, signal.SIGKILL)
                await served.log_line("worker exited; starting it again")
                await until_async(lambda: _restarted(data, stuck), 30)
                second = (await http.post("/api/v1/alerts", content=alert_xml(status="Exercise"), headers=auth)).json()
                cut = 0
                for device, token in zip(devices, tokens):
                    got = await device.next_alert_or_end()
                    if got is not None:
                        assert got["id"] == second["id"]
                        continue
                    cut += 1  # it was on the killed worker: back, from where it was
                    async with sse_device(served.url, token, last_event_id=first["seq"]) as again:
                        assert (await again.next_alert())["id"] == second["id"]
                assert 0 < cut < DEVICES
                await until_async(lambda: _green(served.url), 30)


async def _green(url: str) -> bool:
    return bool((await _node_readiness(url))["ready"])


async def _failing_has(url: str, name: str) -> bool:
    return name in (await _node_readiness(url))["failing"]


async def _restarted(data: Path, old_pid: int) -> bool:
    try:
        return int(_entry(data, 1)["pid"]) != old_pid
    except (OSError, ValueError):
        return False


async def test_sigterm_stops_every_worker_and_a_worker_without_its_supervisor_stops(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with tocsin_serve(data, "--workers", "2") as served:
        nats_pid = int(str((await served.log_line("nats-server started"))["pid"]))
        workers = [int(_entry(data, i)["pid"]) for i in (0, 1)]
        served.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await served.process.wait() == 0
        assert not any(_alive(pid) for pid in [*workers, nats_pid])
    (data / "second-start").touch()
    async with tocsin_serve(data, "--workers", "2") as served:
        workers = [int(_entry(data, i)["pid"]) for i in (0, 1)]
        served.process.kill()  # no word to the workers: each sees its supervisor gone
        await served.log_line("the supervisor is gone; this worker stops")

        async def gone() -> bool:
            return not any(_alive(pid) for pid in workers)

        await until_async(gone, 20)


async def test_issuers_have_a_worker_of_their_own_that_holds_no_device(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with tocsin_serve(data, "--workers", "2", TOCSIN_ISSUER_LISTEN="127.0.0.1:0", **FAST) as served:
        match = re.search(r"issuers: (http://\S+), a worker of their own", served.said)
        assert match, served.said
        issuer_url = match.group(1)
        assert _entry(data, 2)["url"]  # workers 0 and 1 for devices, 2 for issuers
        async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
            tokens = [(await register(http, *IN_PARIS, tests=True))["token"] for _ in range(DEVICES)]
            async with _devices(served, tokens) as devices:
                # Every device is on a device worker; the issuer worker holds its canary alone.
                held = [await _connected(http, _entry(data, i)["url"]) for i in (0, 1, 2)]
                assert held[2] == 1 and held[0] + held[1] == DEVICES + 2, held
                await until_async(lambda: _green(served.url), 20)
                detail = (await _node_readiness(served.url))["checks"]["workers"]["detail"]
                assert detail == "3 workers ready", detail
                auth = {"Authorization": f"Bearer {served.token}", "Content-Type": "application/cap+xml"}
                async with httpx.AsyncClient(base_url=issuer_url, timeout=10) as issuer:
                    answer = await issuer.post("/api/v1/alerts", content=alert_xml(status="Exercise"), headers=auth)
                    assert answer.status_code == 201, answer.text

                    async def all_ready_said_by_the_issuer_worker() -> bool:
                        checks = (await issuer.get("/readyz")).json()["checks"]
                        return bool(checks["workers"]["detail"] == "3 workers ready")

                    # The issuer worker answers for the whole node (a worker's canary may be
                    # late for a moment on a loaded machine: waited for, with a deadline).
                    await until_async(all_ready_said_by_the_issuer_worker, 15)
                for device in devices:
                    assert (await device.next_alert())["id"] == answer.json()["id"]
            # The issuer worker plans and sends nothing: gateway deliveries are the others' work.
            logged = "\n".join(served.stderr)
            assert '"msg": "alert planned"' in logged

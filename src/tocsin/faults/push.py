"""Push devices in a fault run: the Web Push fake as its own process, its browsers'
subscriptions registered on the nodes, and what the browsers received.

The fake is tests/fakes/webpush.py, started as `python -m tests.fakes.webpush` with the
repository's root as its working directory (tocsin-faults runs from a checkout); it writes a
JSON line per accepted push to its state file, which the checker reads (checker.py, "push").
It is started before the cluster (the nodes trust its CA through TOCSIN_PUSH_CA_FILE) and
stopped by pid at close, also when the run fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

import tocsin
from tocsin.faults.fleet import post_device
from tocsin.faults.history import History

# The repository's root: src/tocsin/__init__.py -> ../..
ROOT = Path(tocsin.__file__).resolve().parents[2]
REGISTER_PARALLEL = 16
START_TIMEOUT_S = 30.0

# A second area the crowd of F28-planner sits in (Bordeaux), covered only by its crowd alert.
CROWD_BOX = (44.82, -0.62, 44.86, -0.54)
CROWD_POLYGON = "44.80,-0.65 44.80,-0.50 44.88,-0.50 44.88,-0.65 44.80,-0.65"


def cluster_env(ca_file: str, *, ack_wait_s: float, timeout_s: float, concurrency: int) -> dict[str, str]:
    """What the nodes need to send to the fake, and to send again within the run: a dead
    dispatcher's deliveries taken over after a short ack_wait, and retries (a send timed out
    on a loaded machine, a breaker opened by them) within seconds, not the minutes of the
    production backoff (300 s at most) and breaker (30 s)."""
    return {
        "TOCSIN_PUSH_CA_FILE": ca_file,
        "TOCSIN_WEBPUSH_HOSTS": "127.0.0.1",
        "TOCSIN_DELIVERY_ACK_WAIT_S": str(ack_wait_s),
        "TOCSIN_PUSH_TIMEOUT_S": str(timeout_s),
        "TOCSIN_DISPATCH_CONCURRENCY": str(concurrency),
        "TOCSIN_DELIVERY_BACKOFF_MAX_S": "4",
        "TOCSIN_BREAKER_OPEN_S": "3",
    }


@dataclass(slots=True, kw_only=True)
class PushDevice:
    index: int
    subscription: str  # the fake's subscription id
    device_id: str
    inside: bool  # inside the workload's area (every alert reaches it)
    crowd: bool = False  # in CROWD_BOX: only the crowd alerts reach it
    home: int = 0


class PushService:
    """The fake push service process of one run, and the push devices registered through it."""

    def __init__(self, workdir: Path, history: History) -> None:
        self.workdir = workdir
        self.history = history
        self.state_file = workdir / "webpush.jsonl"
        self.process: asyncio.subprocess.Process | None = None
        self.url = ""
        self.ca_file = ""
        self.devices: list[PushDevice] = []

    async def start(self) -> None:
        if not (ROOT / "tests" / "fakes" / "webpush.py").exists():
            raise RuntimeError(f"push devices need a checkout: no tests/fakes/webpush.py under {ROOT}")
        err = open(self.workdir / "webpush.stderr", "ab")  # noqa: SIM115 - owned by the child
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.fakes.webpush", "--port", "0", "--state", str(self.state_file),
            "--ca-dir", str(self.workdir / "push-ca"), cwd=ROOT, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=err, start_new_session=True,
        )
        err.close()
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                line = await self.process.stdout.readline()
            ready = json.loads(line)
        except (TimeoutError, ValueError):
            await self.stop()
            raise RuntimeError(f"the Web Push fake did not start; see {self.workdir}/webpush.stderr") from None
        self.url, self.ca_file = str(ready["url"]), str(ready["ca_file"])
        self.history.record("note", what="webpush fake started", pid=self.process.pid, url=self.url)

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            await process.wait()

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(verify=ssl.create_default_context(cafile=self.ca_file), timeout=10)

    async def control(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self._client() as http:
            response = await http.post(f"{self.url}/control/{path}", json=body)
            response.raise_for_status()
            answer: dict[str, Any] = response.json()
            return answer

    async def slow(self, delay_s: float) -> None:
        """Every push is taken at once and answered `delay_s` later, until `clear`."""
        await self.control("fail", {"mode": "slow", "delay_s": delay_s})

    async def clear(self) -> None:
        await self.control("clear", {})

    async def register(self, node_urls: list[str], count: int, *, outside: float, crowd: int = 0,
                       seed: int = 1, inside_box: tuple[float, float, float, float],
                       outside_box: tuple[float, float, float, float]) -> None:
        """`count` push devices (a share `outside` of them outside the workload's area) and
        `crowd` more in CROWD_BOX, each a subscription of the fake registered on a node (spread
        over them) with the channel webpush and the deployment's VAPID key."""
        rng = random.Random(seed)
        outside_set = set(rng.sample(range(count), round(count * outside)))
        kinds = [("outside" if i in outside_set else "inside") for i in range(count)] + ["crowd"] * crowd
        boxes = {"inside": inside_box, "outside": outside_box, "crowd": CROWD_BOX}
        points = [{"lat": rng.uniform(boxes[k][0], boxes[k][2]), "lon": rng.uniform(boxes[k][1], boxes[k][3])}
                  for k in kinds]
        slots: list[PushDevice | None] = [None] * len(kinds)
        todo = iter(range(len(kinds)))
        async with httpx.AsyncClient(timeout=10) as api, self._client() as fake:
            server_key = await _vapid_key(api, node_urls)

            async def worker() -> None:
                for i in todo:
                    made = (await fake.post(f"{self.url}/control/subscribe", json={"server_key": server_key})).json()
                    home = i % len(node_urls)
                    body = {"channel": "webpush", "points": [points[i]],
                            "subscription": {"endpoint": made["endpoint"], "keys": made["keys"]}}
                    device_id = str((await post_device(api, node_urls, home, body))["id"])
                    slots[i] = PushDevice(index=i, subscription=str(made["id"]), device_id=device_id,
                                          inside=kinds[i] == "inside", crowd=kinds[i] == "crowd", home=home)

            async with asyncio.TaskGroup() as tasks:
                for _ in range(min(REGISTER_PARALLEL, len(kinds))):
                    tasks.create_task(worker())
        self.devices = [d for d in slots if d is not None]
        self.history.record("push_devices", devices=[
            {"i": d.index, "sub": d.subscription, "id": d.device_id, "inside": d.inside, "crowd": d.crowd,
             "home": d.home} for d in self.devices])

    def messages(self) -> list[dict[str, Any]]:
        """Every push the fake accepted and its browser decrypted, in order (the state file)."""
        found: list[dict[str, Any]] = []
        if not self.state_file.exists():
            return found
        for line in self.state_file.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if event.get("event") in ("message", "undecryptable"):
                    found.append(event)
        return found

    def missing(self, ids: list[str], crowd_ids: set[str]) -> int:
        """(subscription, alert) pairs still to arrive for these acknowledged alerts."""
        got = {(m["subscription"], m.get("alert_id")) for m in self.messages() if m["event"] == "message"}
        total = 0
        for alert_id in ids:
            for d in self.devices:
                if (d.inside or (d.crowd and alert_id in crowd_ids)) and (d.subscription, alert_id) not in got:
                    total += 1
        return total

    async def await_all(self, ids: list[str], crowd_ids: set[str], timeout_s: float) -> int:
        """Wait (bounded) until every expected push arrived; how many are still missing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (left := self.missing(ids, crowd_ids)) and loop.time() < deadline:
            await asyncio.sleep(0.5)
        return left


async def _vapid_key(http: httpx.AsyncClient, urls: list[str]) -> str:
    """The deployment's VAPID public key; every node must give the same one."""
    keys = set()
    for url in urls:
        response = await http.get(f"{url}/api/v1/webpush/key")
        response.raise_for_status()
        body = response.json()
        keys.add(str(body.get("publicKey") or ""))
    if len(keys) != 1 or "" in keys:
        raise RuntimeError(f"the nodes do not give one VAPID key: {sorted(keys)}")
    return keys.pop()

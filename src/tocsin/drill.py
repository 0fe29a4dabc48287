"""`tocsin drill`: rehearse losing a node of a live local cluster, and prove delivery holds.

Takes one node down (kill -9, or lame duck then stop), checks that a System alert still
reaches a canary device through the other nodes within the SLO, lets the node come back,
and checks that it caught up. The rehearsal the 2016 system never had.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tocsin.cap.compose import simple_alert

from tocsin.client.sse import sse_events

# A box around 0°N 0°E in the Gulf of Guinea: no one lives there, and System alerts reach
# canaries only anyway.
DRILL_BOX = "-0.05,-0.05 -0.05,0.05 0.05,0.05 0.05,-0.05 -0.05,-0.05"
DRILL_POINT = {"lat": 0.0, "lon": 0.0}


@dataclass(slots=True)
class Step:
    name: str
    ok: bool
    seconds: float
    detail: str = ""


@dataclass(slots=True)
class DrillReport:
    victim: str
    mode: str
    slo_s: float
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    def as_json(self) -> dict[str, Any]:
        return {
            "victim": self.victim, "mode": self.mode, "slo_s": self.slo_s, "ok": self.ok,
            "steps": [{"name": s.name, "ok": s.ok, "seconds": round(s.seconds, 3), "detail": s.detail}
                      for s in self.steps],
        }

    def render(self) -> str:
        lines = [f"drill: {self.mode} {self.victim}, SLO {self.slo_s:.0f} s"]
        for s in self.steps:
            lines.append(f"  [{'ok' if s.ok else 'FAIL'}] {s.name:<34} {s.seconds:7.2f} s  {s.detail}")
        lines.append("result: " + ("PASS" if self.ok else "FAIL"))
        return "\n".join(lines)


def drill_alert(now: datetime) -> bytes:
    identifier = f"tocsin-drill-{now.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
    return simple_alert(
        identifier=identifier, sender=f"tocsin-drill@{socket.gethostname()}", sent=now.replace(microsecond=0),
        status="System", polygon=DRILL_BOX, expires_in_s=600, language="en-US", category="Other",
        event="tocsin failover drill", urgency="Unknown", severity="Unknown", certainty="Unknown",
        headline="Failover drill: not an alert", area_desc="drill box",
    )


class Drill:
    """One drill run against the cluster described by cluster.json."""

    def __init__(self, cluster_json: Path, *, victim: str | None, mode: str, slo_s: float, back_timeout_s: float):
        self.description = json.loads(cluster_json.read_text())
        self.cluster_json = cluster_json
        nodes = self.description["nodes"]
        self.victim = next(n for n in nodes if n["name"] == victim) if victim else nodes[0]
        self.survivors = [n for n in nodes if n["name"] != self.victim["name"]]
        self.token = self.description["admin_token"]
        self.report = DrillReport(victim=self.victim["name"], mode=mode, slo_s=slo_s)
        self.mode = mode
        self.slo_s = slo_s
        self.back_timeout_s = back_timeout_s
        self.auth = {"Authorization": f"Bearer {self.token}"}

    def _step(self, name: str, started: float, ok: bool, detail: str = "") -> bool:
        self.report.steps.append(Step(name, ok, time.monotonic() - started, detail))
        return ok

    async def run(self) -> DrillReport:
        hold = Path(self.victim["data_dir"]) / "hold-down"
        async with httpx.AsyncClient(timeout=10) as http:
            if not await self._preflight(http):
                return self.report
            canary = await self._canary(http, self.survivors[0]["url"])
            hold.touch()
            try:
                await self._take_down()
                alert_id = await self._deliver_through_survivors(http, canary)
            finally:
                hold.unlink(missing_ok=True)
            if alert_id:
                await self._catch_up(http, alert_id)
        return self.report

    async def _preflight(self, http: httpx.AsyncClient) -> bool:
        started = time.monotonic()
        answers: dict[str, int | str] = {}
        for node in self.description["nodes"]:
            try:
                answers[node["name"]] = (await http.get(node["url"] + "/livez")).status_code
            except httpx.HTTPError as exc:
                answers[node["name"]] = type(exc).__name__
        ok = all(code == 200 for code in answers.values()) and len(self.survivors) >= 2
        detail = ", ".join(f"{k}={v}" for k, v in answers.items())
        return self._step("every node answers before the drill", started, ok, detail)

    async def _canary(self, http: httpx.AsyncClient, url: str) -> tuple[str, str]:
        response = await http.post(f"{url}/api/v1/devices", json={"points": [DRILL_POINT], "canary": True},
                                   headers=self.auth)
        response.raise_for_status()
        return url, str(response.json()["token"])

    async def _take_down(self) -> None:
        started = time.monotonic()
        pids = self.victim["pids"]
        if self.mode == "kill":
            for pid in (pids.get("tocsin"), pids.get("nats")):
                if pid:
                    os.kill(pid, signal.SIGKILL)
        else:
            if pids.get("tocsin"):
                os.kill(pids["tocsin"], signal.SIGTERM)
            if pids.get("nats"):
                os.kill(pids["nats"], signal.SIGUSR2)  # nats-server: enter lame duck mode
        self._step(f"{self.mode} {self.victim['name']}", started, True, f"pids {pids}")

    async def _deliver_through_survivors(self, http: httpx.AsyncClient, canary: tuple[str, str]) -> str | None:
        started = time.monotonic()
        url, token = canary
        got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        reader = asyncio.get_running_loop().create_task(_read_alerts(url, token, got))
        try:
            alert_id = await self._issue(http, drill_alert(datetime.now(UTC)))
            if alert_id is None:
                self._step("drill alert accepted by a survivor", started, False, "no survivor stored it")
                return None
            self._step("drill alert accepted by a survivor", started, True, alert_id)
            try:
                async with asyncio.timeout(self.slo_s * 2):
                    event = await _wait_for(got, alert_id)
            except TimeoutError:
                self._step("canary displayed it within the SLO", started, False, "not displayed")
                return alert_id
            took = time.monotonic() - started
            self._step("canary displayed it within the SLO", started, took <= self.slo_s, f"seq {event['seq']}")
            return alert_id
        finally:
            reader.cancel()

    async def _issue(self, http: httpx.AsyncClient, xml: bytes) -> str | None:
        headers = {**self.auth, "Content-Type": "application/cap+xml"}
        for attempt in range(12):
            node = self.survivors[attempt % len(self.survivors)]
            try:
                response = await http.post(node["url"] + "/api/v1/alerts", content=xml, headers=headers, timeout=15)
                if response.status_code in (200, 201):
                    return str(response.json()["id"])
            except httpx.HTTPError:
                pass
            await asyncio.sleep(min(2.0, 0.2 * 2**attempt) * secrets.SystemRandom().random())
        return None

    async def _catch_up(self, http: httpx.AsyncClient, alert_id: str) -> None:
        started = time.monotonic()
        url = self.victim["url"]
        deadline = time.monotonic() + self.back_timeout_s
        while time.monotonic() < deadline:
            try:
                if (await http.get(url + "/readyz")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
        else:
            self._step(f"{self.victim['name']} back and ready", started, False, "not ready in time")
            return
        self._step(f"{self.victim['name']} back and ready", started, True)
        started = time.monotonic()
        canary = await self._canary(http, url)
        got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        reader = asyncio.get_running_loop().create_task(_read_alerts(canary[0], canary[1], got))
        try:
            async with asyncio.timeout(self.slo_s):
                await _wait_for(got, alert_id)
            ok = True
        except TimeoutError:
            ok = False
        finally:
            reader.cancel()
        self._step(f"{self.victim['name']} caught up (replays the drill alert)", started, ok)


async def _wait_for(events: asyncio.Queue[dict[str, Any]], alert_id: str) -> dict[str, Any]:
    while (event := await events.get())["id"] != alert_id:
        pass
    return event


async def _read_alerts(url: str, token: str, events: asyncio.Queue[dict[str, Any]]) -> None:
    """Read the canary's stream into `events` (alert events only)."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as http:
        async with http.stream("GET", url + "/api/v1/stream", headers=headers) as response:
            async for event in sse_events(response.aiter_bytes()):
                if event.event == "alert":
                    events.put_nowait(json.loads(event.data))


async def run_drill(cluster_json: Path, *, victim: str | None = None, mode: str = "kill",
                    slo_s: float = 15.0, back_timeout_s: float = 90.0) -> DrillReport:
    return await Drill(cluster_json, victim=victim, mode=mode, slo_s=slo_s, back_timeout_s=back_timeout_s).run()

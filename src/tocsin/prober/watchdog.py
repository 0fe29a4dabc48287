"""The dead man's switch, watcher side: raise the alarm when an expected heartbeat is late.

Runs outside tocsin (another machine, ideally another provider). It knows only the names it
expects and their period: a name silent for more than one and a half periods is an alarm,
whatever the cause. Heartbeats come every period, so the alarm fires at most two periods
after the last one, that is within two periods of the silence starting, with half a
period of slack for a heartbeat that is merely slow. The alarm runs a command with the silent node in its environment, or, without a
command, prints and exits non-zero.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger(__name__)

# Late after 1.5 periods: fires within two periods of the last heartbeat (issue 4).
LATE_AFTER_PERIODS = 1.5

EXIT_ALARM = 1
# An alarm command that runs longer than this is left behind (it is logged, not killed).
ALARM_TIMEOUT_S = 60.0


@dataclass(slots=True)
class Watched:
    name: str
    last_seen: float | None = None  # monotonic
    last_seen_wall: str | None = None
    beats: int = 0
    alarmed: bool = False


class Watchdog:
    """Heartbeats by name; `late()` names those silent for longer than 1.5 periods."""

    def __init__(
        self,
        expect: list[str],
        *,
        period_s: float,
        grace_s: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.period_s = period_s
        # A name never heard since the watchdog started gets this much longer (start-up).
        self.grace_s = grace_s
        self._monotonic = monotonic
        self.started = monotonic()
        self.watched = {name: Watched(name) for name in expect}
        # Names whose heartbeat came back after an alarm, for the caller to report.
        self.back: list[str] = []

    def beat(self, name: str) -> bool:
        """Record a heartbeat; False for a name that is not expected."""
        watched = self.watched.get(name)
        if watched is None:
            return False
        watched.last_seen = self._monotonic()
        watched.last_seen_wall = datetime.now(UTC).isoformat()
        watched.beats += 1
        return True

    def silent_s(self, name: str) -> float:
        """Seconds since the last heartbeat (or since the watchdog started)."""
        w = self.watched[name]
        return self._monotonic() - (w.last_seen if w.last_seen is not None else self.started)

    def late(self) -> list[Watched]:
        """Watched names that just became late (each is reported once per silence)."""
        newly = []
        for w in self.watched.values():
            allowed = LATE_AFTER_PERIODS * self.period_s + (self.grace_s if w.last_seen is None else 0.0)
            is_late = self.silent_s(w.name) > allowed
            if is_late and not w.alarmed:
                w.alarmed = True
                newly.append(w)
            elif not is_late and w.alarmed:
                w.alarmed = False
                self.back.append(w.name)
        return newly

    def as_json(self) -> dict[str, Any]:
        return {
            "period_s": self.period_s,
            "watched": {
                w.name: {"beats": w.beats, "last_seen": w.last_seen_wall, "silent_s": round(self.silent_s(w.name), 3),
                         "alarmed": w.alarmed}
                for w in self.watched.values()
            },
        }


def _app(watchdog: Watchdog) -> Starlette:
    async def heartbeat(request: Request) -> Response:
        name = request.path_params["name"]
        if not watchdog.beat(name):
            return JSONResponse({"detail": f"{name} is not expected here"}, status_code=404)
        return JSONResponse({"ok": True}, status_code=202)

    async def status(request: Request) -> Response:
        return JSONResponse(watchdog.as_json())

    return Starlette(routes=[
        Route("/heartbeat/{name}", heartbeat, methods=["POST"]),
        Route("/", status, methods=["GET"]),
    ])


def _bind(listen: str) -> socket.socket:
    host, _, port = listen.rpartition(":")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), int(port)))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def _alarm(command: str, watched: Watched, silent_s: float, out: TextIO) -> None:
    env = {**os.environ, "TOCSIN_WATCHDOG_NODE": watched.name,
           "TOCSIN_WATCHDOG_SILENT_S": f"{silent_s:.2f}", "TOCSIN_WATCHDOG_LAST_SEEN": watched.last_seen_wall or ""}
    process = await asyncio.create_subprocess_shell(command, env=env, stdin=asyncio.subprocess.DEVNULL)
    try:
        async with asyncio.timeout(ALARM_TIMEOUT_S):
            code = await process.wait()
    except TimeoutError:
        log.error("alarm command still running", extra={"node": watched.name})
        return
    if code != 0:
        print(f"alarm command for {watched.name} exited {code}", file=out, flush=True)


async def watch(
    listen: str,
    expect: list[str],
    *,
    period_s: float,
    alarm: str | None,
    grace_s: float = 0.0,
    out: TextIO = sys.stdout,
    on_listening: Callable[[str], None] | None = None,
) -> int:
    """Serve heartbeats and watch; returns an exit status only when it must stop (no command)."""
    watchdog = Watchdog(expect, period_s=period_s, grace_s=grace_s)
    sock = _bind(listen)
    config = uvicorn.Config(_app(watchdog), log_config=None, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    with sock:
        host, port = sock.getsockname()[:2]
        url = f"http://{host}:{port}"
        print(f"watchdog listening on {url}, expecting {', '.join(expect)} every {period_s:g} s",
              file=out, flush=True)
        if on_listening is not None:
            on_listening(url)
        async with asyncio.TaskGroup() as tasks:
            http = tasks.create_task(server.serve(sockets=[sock]), name="watchdog-http")
            try:
                return await _check_forever(watchdog, alarm, out, tasks, http)
            finally:
                server.should_exit = True
                await http


async def _check_forever(
    watchdog: Watchdog, alarm: str | None, out: TextIO, tasks: asyncio.TaskGroup, http: asyncio.Task[None]
) -> int:
    step = min(0.1, watchdog.period_s / 10)
    while not http.done():  # the server stops on Ctrl-C or SIGTERM
        for watched in watchdog.late():
            silent = watchdog.silent_s(watched.name)
            print(f"ALARM: no heartbeat from {watched.name} for {silent:.1f} s "
                  f"(period {watchdog.period_s:g} s)", file=out, flush=True)
            log.error("heartbeat late", extra={"node": watched.name, "silent_s": round(silent, 1)})
            if alarm is None:
                return EXIT_ALARM
            tasks.create_task(_alarm(alarm, watched, silent, out), name=f"alarm-{watched.name}")
        for name in watchdog.back:
            print(f"heartbeat back from {name}", file=out, flush=True)
        watchdog.back.clear()
        await asyncio.sleep(step)
    return 0

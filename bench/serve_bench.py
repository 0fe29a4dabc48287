"""Bench: accept latency and issue-to-display latency of `tocsin serve` (embedded default).

    python bench/serve_bench.py [--devices 1000] [--alerts 1000] [--rounds 5] [--json]

Starts `tocsin serve` on a temporary data directory and a free loopback port, then:

1. issue-to-display: `bench/fleet.py` (another process) registers and connects the devices
   over SSE; this process issues one fresh alert per round and the fleet times its arrival
   on every device (wall clock on both sides, same machine);
2. accept: N distinct alerts, one after the other on one keep-alive client (then, unless
   `--concurrency 0`, N more with that many in flight), timed from send to 201.

The server, its nats-server child and the fleet are stopped by pid at the end, on error
and on Ctrl-C. See docs/performance.md for what the figures mean.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import queue
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.samples builds the CAP documents, as the e2e tests do

from bench.fleet import percentile, raise_nofile  # noqa: E402
from tests.samples import PARIS_BOX, alert_xml  # noqa: E402
from tocsin.approval.automated import write_automated_source  # noqa: E402

# Devices sit in central Paris (fleet.INSIDE_BOX); the display alerts cover it. The accept
# alerts go to Marseille, where no device is, so they measure accept alone.
DISPLAY_POLYGON = PARIS_BOX
ACCEPT_POLYGON = "43.25,5.30 43.25,5.45 43.35,5.45 43.35,5.30 43.25,5.30"
XML = "application/cap+xml"

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
FLEET_READY_TIMEOUT_S = 300.0
ROUND_TIMEOUT_S = 30.0
# A pause between rounds, so that one round's stragglers never overlap the next.
ROUND_GAP_S = 1.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def alerts_request_head(url: str, token: str) -> bytes:
    """`POST /api/v1/alerts` for a minimal HTTP/1.1 client, up to its Content-Length line."""
    parts = urlsplit(url)
    return (f"POST /api/v1/alerts HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: {XML}\r\n").encode()


def answer_head(head: bytes) -> tuple[int, int]:
    """(status, Content-Length) of an HTTP/1.1 response head."""
    length = next((int(line[15:]) for line in head.split(b"\r\n") if line[:15].lower() == b"content-length:"), 0)
    return int(head[9:12]), length


def proc_cpu_s(pid: int | None) -> float:
    """User + system CPU of a live process, from /proc/<pid>/stat (0 when it is gone)."""
    if pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def rss_bytes(pid: int | None) -> int:
    """Resident memory of a live process, from /proc/<pid>/status (0 when it is gone)."""
    if pid is None:
        return 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def child_pids(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(p) for p in task.read_text().split()]
        except OSError:
            pass
    return found


def stop_pid(process: subprocess.Popen[bytes], first: signal.Signals, timeout_s: float) -> int | None:
    """Send `first`, wait up to `timeout_s`, then SIGKILL; returns the exit code."""
    if process.poll() is None:
        try:
            process.send_signal(first)
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode


@contextmanager
def profiled(pid: int | None, out: Path | None) -> Iterator[None]:
    """py-spy (raw stacks) on a process while it is measured; nothing when `out` is None."""
    if out is None or pid is None:
        yield
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    process = subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--rate", "500", "--format", "raw", "--nonblocking", "--output", str(out)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        stop_pid(process, signal.SIGINT, 20)


# The bench fleets register and connect every device from one loopback address: the
# per-source limits that protect a public node would refuse them.
FLEET_ENV = {
    "TOCSIN_REGISTRATIONS_PER_SOURCE_PER_MIN": "0",
    "TOCSIN_REGISTRATIONS_PER_MIN": "0",
    "TOCSIN_MAX_CONNECTIONS_PER_SOURCE": "1000000",
}


@dataclass(slots=True, kw_only=True)
class Server:
    """`tocsin serve` as a child process, with its log in the data directory."""

    data_dir: Path
    port: int
    admin_token: str
    # An automated source (accounts file): the admin is a person whose Actual alerts wait.
    issuer_token: str = field(default_factory=lambda: f"tci_{secrets.token_urlsafe(24)}")
    # A command prefix, e.g. ("taskset", "-c", "0") to pin the server (and its nats-server).
    launcher: tuple[str, ...] = ()
    # More TOCSIN_* settings for this bench's server.
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    nats_pid: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / "server.log"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOCSIN_")}
        env["TOCSIN_ADMIN_TOKEN"] = self.admin_token
        accounts = write_automated_source(self.data_dir.parent / "accounts.toml", self.issuer_token)
        env["TOCSIN_ACCOUNTS_FILE"] = str(accounts)
        # The bench's fleet registers every device from one loopback address.
        env.update(FLEET_ENV)
        env.update(self.extra_env)
        out = open(self.log_path, "wb")  # stdout and stderr (JSON log lines) in one file
        with out:
            self.process = subprocess.Popen(
                [*self.launcher, sys.executable, "-m", "tocsin.cli.main", "serve", "--data", str(self.data_dir),
                 "--listen", f"127.0.0.1:{self.port}"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while "serving on" not in self.log_path.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("tocsin serve did not start:\n" + self.log_tail())
            time.sleep(0.05)
        kids = child_pids(self.process.pid)
        self.nats_pid = kids[0] if kids else None

    def pids(self) -> list[int]:
        """The node's every process: tocsin, its nats-server, its workers (`--workers`)."""
        found = [self.process.pid] if self.process else []
        for pid in found:  # grows as it goes: children, then theirs
            found += child_pids(pid)
        return found

    def cpu_s(self) -> tuple[float, float]:
        """(tocsin, nats-server) CPU seconds so far."""
        return proc_cpu_s(self.process.pid if self.process else None), proc_cpu_s(self.nats_pid)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        code = stop_pid(self.process, signal.SIGINT, STOP_TIMEOUT_S)
        # tocsin stops its nats-server child; if tocsin had to be killed, the child is ours.
        if self.nats_pid is not None and Path(f"/proc/{self.nats_pid}").exists():
            try:
                os.kill(self.nats_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return code

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_problems(self) -> list[str]:
        """The server's warning and error lines (JSON log lines, or plain tracebacks)."""
        found: list[str] = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                level = json.loads(line).get("level", "")
            except ValueError:
                level = "error" if "Traceback" in line or "Error" in line else ""
            if level in ("warning", "error", "critical"):
                found.append(line[:300])
        return found


@dataclass(slots=True, kw_only=True)
class Fleet:
    """`bench/fleet.py` as a child process speaking JSON lines."""

    url: str
    devices: int
    outside: float
    log_path: Path
    launcher: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()  # more fleet.py options (--protocol, --tokens, ...)
    process: subprocess.Popen[bytes] | None = None
    lines: queue.Queue[dict[str, Any] | None] = field(default_factory=queue.Queue)

    def start(self) -> None:
        cmd = [*self.launcher, sys.executable, str(ROOT / "bench" / "fleet.py"), "--url", self.url,
               "--devices", str(self.devices), "--outside", str(self.outside),
               "--round-timeout", str(ROUND_TIMEOUT_S), *self.extra]
        with open(self.log_path, "wb") as err:
            self.process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        threading.Thread(target=self._read, daemon=True, name="fleet-stdout").start()

    def _read(self) -> None:
        assert self.process and self.process.stdout
        for raw in self.process.stdout:
            try:
                self.lines.put(json.loads(raw))
            except ValueError:
                self.lines.put({"type": "noise", "line": raw.decode(errors="replace")})
        self.lines.put(None)

    def expect(self, kind: str, timeout_s: float) -> dict[str, Any]:
        """The next message of this kind; raises if the fleet exits or the deadline passes."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                message = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"fleet sent no {kind!r} within {timeout_s} s") from None
            if message is None:
                raise RuntimeError(f"fleet exited before {kind!r}:\n{self.log_path.read_text()[-2000:]}")
            if message.get("type") == kind:
                return message

    def send(self, **command: Any) -> None:
        assert self.process and self.process.stdin
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        self.process.stdin.flush()

    def cpu_s(self) -> float:
        return proc_cpu_s(self.process.pid if self.process else None)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.stdin and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except OSError:
                pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            pass
        return stop_pid(self.process, signal.SIGINT, 5)


def summarize(latencies_s: list[float], wall_s: float, errors: list[str]) -> dict[str, Any]:
    values = sorted(latencies_s) or [float("nan")]
    ms = 1000.0
    return {
        "count": len(latencies_s),
        "errors": len(errors),
        "error_examples": errors[:3],
        "p50_ms": percentile(values, 50) * ms,
        "p99_ms": percentile(values, 99) * ms,
        "max_ms": values[-1] * ms,
        "mean_ms": sum(values) / len(values) * ms,
        "wall_s": wall_s,
        "per_s": len(latencies_s) / wall_s,
    }


def check_issued(response: httpx.Response, errors: list[str]) -> dict[str, Any] | None:
    """The 201 body; anything else is counted (the bench goes on and reports it)."""
    if response.status_code != 201:
        errors.append(f"{response.status_code} {response.text[:300]}")
        return None
    body: dict[str, Any] = response.json()
    return body


def issuer_client(url: str, token: str, *, nagle: bool = False) -> httpx.Client:
    """A keep-alive client for the issuer API.

    httpx's sync transport leaves Nagle's algorithm on and writes a request's headers and
    body in two sends: the body then waits for the server's delayed ACK (40 ms on Linux).
    asyncio (and so httpx.AsyncClient) sets TCP_NODELAY itself; here we ask for it.
    """
    options = [] if nagle else [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": XML}
    transport = httpx.HTTPTransport(socket_options=options)
    return httpx.Client(base_url=url, headers=headers, timeout=30, transport=transport)


def accept_sequential(url: str, token: str, count: int, *, nagle: bool = False) -> dict[str, Any]:
    """`count` alerts one after the other on one keep-alive connection."""
    documents = [alert_xml(polygon=ACCEPT_POLYGON, headline=f"bench accept {i}") for i in range(count)]
    latencies: list[float] = []
    errors: list[str] = []
    with issuer_client(url, token, nagle=nagle) as http:
        check_issued(http.post("/api/v1/alerts", content=alert_xml(polygon=ACCEPT_POLYGON)), errors)  # warm-up
        started = time.perf_counter()
        for document in documents:
            sent = time.perf_counter()
            response = http.post("/api/v1/alerts", content=document)
            elapsed = time.perf_counter() - sent
            if check_issued(response, errors) is not None:
                latencies.append(elapsed)
        wall = time.perf_counter() - started
    return summarize(latencies, wall, errors)


async def _accept_concurrent(url: str, token: str, count: int, concurrency: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": XML}
    documents = iter([alert_xml(polygon=ACCEPT_POLYGON, headline=f"bench conc {i}") for i in range(count)])
    latencies: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(http: httpx.AsyncClient) -> None:
        for document in documents:
            sent = time.perf_counter()
            response = await http.post("/api/v1/alerts", content=document)
            elapsed = time.perf_counter() - sent
            if check_issued(response, errors) is not None:
                latencies.append(elapsed)

    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30, limits=limits) as http:
        started = time.perf_counter()
        async with asyncio.timeout(600), asyncio.TaskGroup() as tasks:
            for _ in range(concurrency):
                tasks.create_task(worker(http))
        wall = time.perf_counter() - started
    return {**summarize(latencies, wall, errors), "concurrency": concurrency}


def accept_concurrent(url: str, token: str, count: int, concurrency: int) -> dict[str, Any]:
    """`count` alerts with `concurrency` requests in flight (one connection each)."""
    return asyncio.run(_accept_concurrent(url, token, count, concurrency))


def display_rounds(server: Server, fleet: Fleet, rounds: int) -> list[dict[str, Any]]:
    """One fresh alert per round over the devices' area; the fleet times its arrival."""
    results: list[dict[str, Any]] = []
    with issuer_client(server.url, server.issuer_token) as http:
        http.get("/livez")  # open the keep-alive connection before the first timed request
        for n in range(1, rounds + 1):
            document = alert_xml(polygon=DISPLAY_POLYGON, headline=f"bench display {n}")
            tocsin_cpu, nats_cpu = server.cpu_s()
            issued_at = time.time()
            response = http.post("/api/v1/alerts", content=document)
            accept_ms = (time.time() - issued_at) * 1000
            errors: list[str] = []
            issued = check_issued(response, errors)
            if issued is None:
                results.append({"round": n, "error": errors[0]})
                continue
            seq = int(issued["seq"])
            fleet.send(cmd="round", round=n, seq=seq, issued_at=issued_at)
            result = fleet.expect("round", ROUND_TIMEOUT_S + 30)
            tocsin_after, nats_after = server.cpu_s()
            result.update(accept_ms=accept_ms, server_cpu_s=tocsin_after - tocsin_cpu,
                          nats_cpu_s=nats_after - nats_cpu, fleet_cpu_s=result.pop("cpu_s"))
            results.append(result)
            time.sleep(ROUND_GAP_S)
    return results


def nats_version() -> str:
    from tocsin.cluster.nats_server import find_binary

    out = subprocess.run([find_binary(), "--version"], capture_output=True, text=True, timeout=10).stdout
    return out.strip().removeprefix("nats-server: ")


async def _stoppable(work: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run `work`; SIGTERM or Ctrl-C cancels it, so that its `finally` stops every process."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    return await work


def run_in_workdir(prefix: str, args: argparse.Namespace,
                   work: Callable[[Path], Coroutine[Any, Any, dict[str, Any]]],
                   table: Callable[[dict[str, Any]], str]) -> None:
    """A bench's main: `work` on uvloop in a temp dir (kept with --keep or on error), then its
    table on stdout and, with --save, its report as JSON. Uses args.tmp, args.keep, args.save."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=args.tmp))
    ok = False
    try:
        import uvloop

        report = uvloop.run(_stoppable(work(workdir)))
        ok = True
    finally:
        if args.keep or not ok:
            print(f"logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table(report))
    if args.save:
        Path(args.save).write_text(json.dumps(report, indent=1, default=str))


def machine() -> dict[str, Any]:
    model = ""
    try:
        model = next(
            (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("model name")), "")
    except OSError:
        pass
    mem_kb = 0
    try:
        mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
    except (OSError, AttributeError):
        pass

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "absent"

    return {
        "cpus": os.cpu_count(), "cpu_model": model, "memory_gb": round(mem_kb / 1024**2, 1),
        "platform": platform.platform(), "python": platform.python_version(),
        "tocsin": version("tocsin"), "nats_server": nats_version(), "uvloop": version("uvloop"),
        "uvicorn": version("uvicorn"), "starlette": version("starlette"), "nats_py": version("nats-py"),
    }


def data_filesystem(path: Path) -> str:
    out = subprocess.run(["df", "-T", str(path)], capture_output=True, text=True, timeout=10).stdout.splitlines()
    return out[-1].split()[1] if len(out) > 1 else "unknown"


def server_metrics(url: str) -> dict[str, float]:
    """Server-side accept time (request to durable ack), from /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    wanted = ("tocsin_accept_seconds_sum", "tocsin_accept_seconds_count")
    found: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            found[name] = float(value)
    return found


def run(args: argparse.Namespace, stack: ExitStack) -> dict[str, Any]:
    nofile = raise_nofile()  # inherited by the server
    workdir = Path(tempfile.mkdtemp(prefix="tocsin-bench-", dir=args.tmp))
    outcome = {"ok": False}

    def clean_up() -> None:
        if args.keep or not outcome["ok"]:
            print(f"logs and data kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    stack.callback(clean_up)
    server = Server(data_dir=workdir / "data", port=free_port(), admin_token=f"tca_{secrets.token_urlsafe(24)}")
    stack.callback(server.stop)
    started = time.monotonic()
    server.start()
    report: dict[str, Any] = {
        "machine": machine(), "nofile": nofile, "data_fs": data_filesystem(workdir),
        "server_start_s": time.monotonic() - started,
        "params": {"devices": args.devices, "outside": args.outside, "alerts": args.alerts,
                   "rounds": args.rounds, "concurrency": args.concurrency,
                   "nagle": args.nagle},
    }

    def say(text: str) -> None:
        if not args.json:
            print(text, file=sys.stderr, flush=True)

    say(f"server pid {server.process.pid if server.process else '?'} nats pid {server.nats_pid} at {server.url}")

    if args.devices and args.rounds:
        fleet = Fleet(url=server.url, devices=args.devices, outside=args.outside, log_path=workdir / "fleet.log")
        stop_fleet = stack.callback(fleet.stop)
        cpu_before = server.cpu_s()
        fleet.start()
        ready = fleet.expect("ready", FLEET_READY_TIMEOUT_S)
        cpu_after = server.cpu_s()
        say(f"fleet ready: {ready['devices']} devices, registered in {ready['register_s']:.1f} s, "
            f"connected in {ready['connect_s']:.1f} s")
        ready["server_cpu_s"] = cpu_after[0] - cpu_before[0]
        rounds = display_rounds(server, fleet, args.rounds)
        for r in rounds:
            say(f"round {r['round']}: " + (r["error"] if "error" in r else f"{r['received']}/{r['expected']} "
                f"p50 {r['p50_ms']:.1f} ms p99 {r['p99_ms']:.1f} ms max {r['max_ms']:.1f} ms"))
        fleet.send(cmd="stop")
        summary = fleet.expect("summary", 30)
        stop_fleet()
        report["display"] = {"ready": ready, "rounds": rounds, "summary": summary}

    if args.alerts:
        before = server_metrics(server.url), server.cpu_s()
        sequential = accept_sequential(server.url, server.issuer_token, args.alerts, nagle=args.nagle)
        after = server_metrics(server.url), server.cpu_s()
        sequential.update(_server_share(before, after, args.alerts + 1))
        say(f"accept sequential: p50 {sequential['p50_ms']:.2f} ms p99 {sequential['p99_ms']:.2f} ms")
        report["accept"] = {"sequential": sequential}
        if args.concurrency:
            concurrent = accept_concurrent(server.url, server.issuer_token, args.alerts, args.concurrency)
            final = server_metrics(server.url), server.cpu_s()
            concurrent.update(_server_share(after, final, args.alerts))
            say(f"accept x{args.concurrency}: p50 {concurrent['p50_ms']:.2f} ms p99 {concurrent['p99_ms']:.2f} ms")
            report["accept"]["concurrent"] = concurrent

    report["server_log_problems"] = server.log_problems()
    report["server_exit"] = server.stop()
    errors = sum(a.get("errors", 0) for a in report.get("accept", {}).values())
    errors += sum(1 for r in report.get("display", {}).get("rounds", []) if "error" in r)
    outcome["ok"] = not errors and not report["server_log_problems"]
    return report


def _server_share(
    before: tuple[dict[str, float], tuple[float, float]], after: tuple[dict[str, float], tuple[float, float]], n: int
) -> dict[str, float]:
    """What the server says accept took (its own histogram) and the CPU it spent."""
    (m0, (t0, s0)), (m1, (t1, s1)) = before, after
    count = m1.get("tocsin_accept_seconds_count", 0) - m0.get("tocsin_accept_seconds_count", 0)
    total = m1.get("tocsin_accept_seconds_sum", 0) - m0.get("tocsin_accept_seconds_sum", 0)
    return {
        "server_mean_ms": total / count * 1000 if count else float("nan"),
        "server_cpu_ms_per_alert": (t1 - t0) / n * 1000,
        "nats_cpu_ms_per_alert": (s1 - s0) / n * 1000,
    }


def table(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"machine   {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gb']} GB, {m['platform']}",
        f"versions  Python {m['python']}, tocsin {m['tocsin']}, nats-server {m['nats_server']}, "
        f"uvicorn {m['uvicorn']}, starlette {m['starlette']}, uvloop {m['uvloop']}",
        f"data on   {report['data_fs']}; open-files limit {report['nofile']}",
        "",
    ]
    if "display" in report:
        d = report["display"]
        ready, summary = d["ready"], d["summary"]
        lines += [
            f"issue-to-display over SSE: {ready['devices']} devices ({ready['inside']} in the area), one process"
            f" (registered in {ready['register_s']:.1f} s, connected + synced in {ready['connect_s']:.1f} s)",
            f"{'round':>5} {'got':>11} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'min ms':>8} {'spread ms':>9}"
            f" {'accept ms':>9} {'srv cpu s':>9} {'nats cpu':>8} {'fleet cpu':>9}",
            "(ms from the issuer sending the alert to a device reading it; accept ms: to the issuer's 201;"
            " cpu: seconds of CPU in the round)",
        ]
        for r in d["rounds"]:
            if "error" in r:
                lines.append(f"{r['round']:>5} refused: {r['error'][:100]}")
                continue
            lines.append(
                f"{r['round']:>5} {r['received']:>5}/{r['expected']:<5} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f}"
                f" {r['max_ms']:>8.1f} {r['min_ms']:>8.1f} {r['spread_ms']:>9.1f} {r['accept_ms']:>9.1f}"
                f" {r['server_cpu_s']:>9.3f} {r['nats_cpu_s']:>8.3f} {r['fleet_cpu_s']:>9.3f}"
            )
        lines += [
            f"missing {summary['missing']}, duplicates {summary['duplicates']}, outside devices reached "
            f"{summary['unexpected']}, other alerts {summary['foreign']}, connections lost "
            f"{summary['lost_connections']}; fleet CPU total {summary['cpu_s']:.1f} s, "
            f"max RSS {summary['max_rss_mb']:.0f} MB",
            "",
        ]
    if "accept" in report:
        lines.append(f"{'accept':<14} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'mean ms':>8}"
                     f" {'alerts/s':>9} {'srv mean':>8} {'srv cpu/al':>10} {'nats/al':>8}")
        for name, a in report["accept"].items():
            label = name if name == "sequential" else f"{a['concurrency']} in flight"
            lines.append(
                f"{label:<14} {a['count']:>5} {a['p50_ms']:>8.2f} {a['p99_ms']:>8.2f} {a['max_ms']:>8.2f}"
                f" {a['mean_ms']:>8.2f} {a['per_s']:>9.0f} {a['server_mean_ms']:>8.2f}"
                f" {a['server_cpu_ms_per_alert']:>10.2f} {a['nats_cpu_ms_per_alert']:>8.2f}"
            )
        lines.append("(srv mean: the server's own tocsin_accept_seconds; cpu/al: CPU ms per alert)")
        for name, a in report["accept"].items():
            if a["errors"]:
                lines.append(f"{name}: {a['errors']} refused, e.g. {a['error_examples'][0][:200]}")
    problems = report["server_log_problems"]
    lines += ["", f"server log: {len(problems)} warning/error lines; server exit code {report['server_exit']}"]
    lines += [f"  {p}" for p in problems[:5]]
    return "\n".join(lines)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1000, help="simulated SSE devices (0: skip)")
    parser.add_argument("--outside", type=float, default=0.0, help="share of devices outside the alert area")
    parser.add_argument("--alerts", type=int, default=1000, help="alerts for the accept figures (0: skip)")
    parser.add_argument("--concurrency", type=int, default=8, help="in-flight accepts for the 2nd run (0: skip)")
    parser.add_argument("--rounds", type=int, default=5, help="issue-to-display rounds (0: skip)")
    parser.add_argument("--nagle", action="store_true",
                        help="leave Nagle on in the sequential issuer client (httpx's default) to see its cost")
    parser.add_argument("--tmp", default=None, help="parent of the temporary data directory (default: $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the data directory and logs")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--save", metavar="PATH", help="also write the JSON report to PATH")
    args = parser.parse_args()
    with ExitStack() as stack:
        # SIGTERM unwinds like Ctrl-C, so the children are stopped either way.
        signal.signal(signal.SIGTERM, _interrupt)
        report = run(args, stack)
    if args.save:
        Path(args.save).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2) if args.json else table(report))


if __name__ == "__main__":
    main()

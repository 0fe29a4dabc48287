"""One fault run: a LocalCluster, the fleet process, the issuer, a /readyz sampler, the fault.

    async with Run(workdir, options) as run:
        await run.start()
        result = await run.execute(inject)      # warm up, inject + heal, issue on, settle

Every process is started and stopped by pid (the cluster's, the fleet's), also when the
run fails; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import nats
import nats.errors

from tocsin.cluster.local import LocalCluster, free_port_block
from tocsin.faults.fleet import INSIDE_BOX, OUTSIDE_BOX
from tocsin.faults.history import History
from tocsin.faults.push import PushService, cluster_env
from tocsin.faults.workload import Issuer

log = logging.getLogger(__name__)

STREAM = "TOCSIN_ALERTS"
SAMPLE_EVERY_S = 0.5


@dataclass(slots=True, kw_only=True)
class Options:
    """How a run is set up; scenarios start from the defaults and change a few."""

    devices: int = 300
    outside: float = 0.1
    homes: list[int] | None = None  # node indices devices register on (default: spread)
    rate: float = 5.0  # alerts per second
    warmup_s: float = 5.0
    after_s: float = 15.0  # issuing goes on this long after the fault is healed
    settle_s: float = 45.0  # then wait at most this long for every device to show everything
    # Then /readyz is sampled on until every node is green, at most this long after the heal,
    # so that the check "green within 15 s of recovery" sees the whole of its window.
    green_wait_s: float = 30.0
    give_up_s: float = 120.0
    sync_always: bool = True
    idle_timeout_s: float = 8.0
    env: dict[str, str] = field(default_factory=dict)
    seed: int = 1
    # Push devices (faults/push.py): subscriptions of the Web Push fake registered on the
    # nodes, a share `push_outside` of them outside the workload's area, and `push_crowd` more
    # in a second area only a scenario's crowd alert covers. 0: no push service in the run.
    push_devices: int = 0
    push_outside: float = 0.1
    push_crowd: int = 0
    # Short enough that a dispatcher's or planner's deliveries are taken over within the run.
    push_ack_wait_s: float = 10.0
    push_timeout_s: float = 5.0
    push_concurrency: int = 16


# Settings every fault cluster runs with: probes and keepalives often enough to see a
# fault within the 10-15 s bounds of RELIABILITY.md, and a disk threshold that fits a tmpfs.
CLUSTER_ENV = {
    "TOCSIN_SSE_KEEPALIVE_S": "2",
    "TOCSIN_PROBE_INTERVAL_S": "2",
    "TOCSIN_DISK_MIN_FREE_MB": "16",
    "TOCSIN_LOG_LEVEL": "INFO",
    # The simulated fleet registers thousands of devices from one loopback address.
    "TOCSIN_REGISTRATIONS_PER_SOURCE_PER_MIN": "0",
    "TOCSIN_REGISTRATIONS_PER_MIN": "0",
    # ... and holds all their streams from that one address (F18: 2,000 on one node).
    "TOCSIN_MAX_CONNECTIONS_PER_SOURCE": "100000",
}


def quiet_port_block(count: int) -> int:
    """A free block of ports below the kernel's ephemeral range (see `free_port_block`)."""
    return free_port_block(count)


class Run:
    """Owns the cluster, the fleet process, the issuer and the sampler of one fault run."""

    def __init__(self, workdir: Path, fault_id: str, options: Options) -> None:
        self.workdir = workdir
        self.fault_id = fault_id
        self.options = options
        self.run_id = f"{fault_id}-{secrets.token_hex(3)}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.history = History(workdir / "history.jsonl")
        self.fleet_history = workdir / "fleet.jsonl"
        self.cluster = LocalCluster(workdir / "cluster", nodes=3, sync_always=options.sync_always,
                                    base_port=quiet_port_block(40), extra_env={**CLUSTER_ENV, **options.env})
        self.issuer: Issuer | None = None
        self.fleet: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._green: dict[str, bool] = {}  # each node's last /readyz sample
        self._cleanups: list[Callable[[], Awaitable[None]]] = []
        self._post_stop: list[Callable[[], Awaitable[None]]] = []
        self.final: dict[str, Any] = {}
        self.rng = random.Random(options.seed)
        # Nodes whose tocsin runs inside this process (F16, F17), and those nodes.
        self.inproc_nodes: list[str] = []
        self.inproc: dict[str, Any] = {}
        # The Web Push fake and its devices (Options.push_devices), and the alerts that also
        # cover the push crowd (their audience is larger).
        self.push: PushService | None = None
        self.crowd_ids: set[str] = set()

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Run:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def on_close(self, cleanup: Callable[[], Awaitable[None]]) -> None:
        """Run this at close, before the cluster stops (last registered, first run)."""
        self._cleanups.append(cleanup)

    async def start(self) -> None:
        self.history.record("run", fault=self.fault_id, run_id=self.run_id,
                            options={k: getattr(self.options, k) for k in ("devices", "rate", "sync_always")})
        await self.start_push()
        await self.start_cluster()
        await self.register_push()
        self.history.record("note", what="cluster started", pids={s.name: self.cluster.pids(s.name)
                                                                  for s in self.cluster.specs})
        self.issuer = Issuer({s.name: s.url for s in self.cluster.specs}, self.cluster.issuer_token, self.history,
                             run_id=self.run_id, give_up_s=self.options.give_up_s,
                             people=(self.cluster.author_token, self.cluster.approver_token))
        await self.start_fleet()
        self._tasks += [asyncio.get_running_loop().create_task(self._sample(s.name), name=f"readyz-{s.name}")
                        for s in self.cluster.specs]

    async def start_push(self) -> None:
        """The Web Push fake (its own process, stopped by pid at close), and the nodes' settings
        to send to it: before the cluster starts, since they trust its CA file."""
        o = self.options
        if not (o.push_devices or o.push_crowd):
            return
        self.push = PushService(self.workdir, self.history)
        self.on_close(self.push.stop)
        await self.push.start()
        self.cluster.extra_env.update(cluster_env(self.push.ca_file, ack_wait_s=o.push_ack_wait_s,
                                                  timeout_s=o.push_timeout_s, concurrency=o.push_concurrency))
        self.cluster.extra_env.update(o.env)  # a scenario's own settings win
        self.history.record("push_config", concurrency=o.push_concurrency, ack_wait_s=o.push_ack_wait_s,
                            timeout_s=o.push_timeout_s)

    async def register_push(self) -> None:
        if self.push is None:
            return
        o = self.options
        await self.push.register([s.url for s in self.cluster.specs], o.push_devices, outside=o.push_outside,
                                 crowd=o.push_crowd, seed=o.seed, inside_box=INSIDE_BOX, outside_box=OUTSIDE_BOX)
        self.note("push devices registered", devices=len(self.push.devices))

    async def start_cluster(self) -> None:
        """LocalCluster.start(), except that nodes in `inproc_nodes` run tocsin in this process."""
        if not self.inproc_nodes:
            await self.cluster.start()
            return
        from tocsin.faults.inproc import InProcessNode
        from tocsin.signing import SigningKey

        SigningKey.load_or_create(self.cluster.signing_key_file)
        await asyncio.gather(*(self.cluster.start_nats(s.name) for s in self.cluster.specs))
        for spec in self.cluster.specs:
            if spec.name in self.inproc_nodes:
                node = InProcessNode(self.cluster, spec.name)
                self.on_close(node.stop)
                await node.start()
                self.inproc[spec.name] = node
            else:
                await self.cluster.start_tocsin(spec.name)
        self.cluster.write_description()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.stop_fleet()
        if self.issuer:
            await self.issuer.close()
        for cleanup in reversed(self._cleanups):
            try:
                await cleanup()
            except Exception as exc:  # a cleanup failing must not keep processes alive
                log.error("fault cleanup failed", extra={"error": repr(exc)})
        await self.cluster.stop()
        for cleanup in reversed(self._post_stop):
            try:
                await cleanup()
            except Exception as exc:
                log.error("fault cleanup failed", extra={"error": repr(exc)})
        self.history.close()

    def after_stop(self, cleanup: Callable[[], Awaitable[None]]) -> None:
        """Run this once every process of the cluster is stopped (unmounts, netns removal)."""
        self._post_stop.append(cleanup)

    # -- the fleet process ----------------------------------------------------------------

    async def start_fleet(self) -> None:
        o = self.options
        config = {"urls": [s.url for s in self.cluster.specs], "devices": o.devices, "outside": o.outside,
                  "homes": o.homes, "idle_timeout_s": o.idle_timeout_s, "seed": o.seed,
                  "history": str(self.fleet_history), "connect_timeout_s": 90}
        err = open(self.workdir / "fleet.stderr", "ab")  # noqa: SIM115 - owned by the child
        self.fleet = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tocsin.faults.fleet", json.dumps(config),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err, start_new_session=True,
        )
        err.close()
        self.history.record("note", what="fleet started", pid=self.fleet.pid)
        ready = await self._fleet_line("ready", timeout_s=150)
        self.history.record("note", what="fleet ready", **ready)

    async def _fleet_line(self, kind: str, timeout_s: float) -> dict[str, Any]:
        assert self.fleet and self.fleet.stdout
        async with asyncio.timeout(timeout_s):
            while True:
                raw = await self.fleet.stdout.readline()
                if not raw:
                    raise RuntimeError(f"the fleet exited; see {self.workdir}/fleet.stderr")
                line: dict[str, Any] = json.loads(raw)
                if line.get("type") == kind:
                    return line

    async def _fleet_send(self, command: dict[str, Any]) -> None:
        assert self.fleet and self.fleet.stdin
        self.fleet.stdin.write(json.dumps(command).encode() + b"\n")
        await self.fleet.stdin.drain()

    async def await_displays(self, ids: list[str], timeout_s: float) -> dict[str, int]:
        """Wait until every inside device shows these alerts; those still missing, by count."""
        await self._fleet_send({"cmd": "await", "ids": ids, "timeout_s": timeout_s})
        line = await self._fleet_line("awaited", timeout_s + 30)
        missing: dict[str, int] = line["missing"]
        return missing

    async def stop_fleet(self) -> None:
        fleet, self.fleet = self.fleet, None
        if fleet is None or fleet.returncode is not None:
            return
        try:
            assert fleet.stdin and fleet.stdout
            fleet.stdin.write(b'{"cmd": "stop"}\n')
            await fleet.stdin.drain()
            async with asyncio.timeout(20):
                await fleet.wait()
        except (TimeoutError, OSError, AssertionError):
            with contextlib.suppress(ProcessLookupError):
                os.kill(fleet.pid, signal.SIGKILL)
            await fleet.wait()

    # -- sampling /readyz -----------------------------------------------------------------

    async def _sample(self, name: str) -> None:
        url = self.cluster.spec(name).url + "/readyz"
        async with httpx.AsyncClient(timeout=SAMPLE_EVERY_S * 0.9) as http:
            while True:
                started = time.monotonic()
                try:
                    response = await http.get(url)
                    body = response.json()
                    self._green[name] = response.status_code == 200
                    self.history.record("ready", node=name, ok=response.status_code == 200,
                                        code=response.status_code, failing=body.get("failing"))
                except (httpx.HTTPError, ValueError) as exc:
                    self._green[name] = False
                    self.history.record("ready", node=name, ok=False, code=type(exc).__name__)
                await asyncio.sleep(max(0.0, SAMPLE_EVERY_S - (time.monotonic() - started)))

    # -- the run ----------------------------------------------------------------------------

    def fault(self, what: str, **details: Any) -> None:
        self.history.record("fault", what=what, **details)

    def heal(self, what: str, **details: Any) -> None:
        self.history.record("heal", what=what, **details)

    def note(self, what: str, **details: Any) -> None:
        self.history.record("note", what=what, **details)

    async def execute(self, inject: Callable[[Run], Awaitable[None]], green: tuple[str, ...] = ()) -> None:
        """Issue, warm up, inject (and heal), issue on, settle, wait for the nodes `green` to
        be ready again (those whose readiness the checker follows); then read the final state."""
        assert self.issuer is not None
        stop = asyncio.Event()
        o = self.options
        self.history.record("phase", what="issuing", rate=o.rate)
        issuing = asyncio.get_running_loop().create_task(self.issuer.run(o.rate, stop), name="issuer")
        self._tasks.append(issuing)
        try:
            await asyncio.sleep(o.warmup_s)
            self.history.record("phase", what="inject")
            await inject(self)
            self.history.record("phase", what="healed")
            healed = time.monotonic()
            await asyncio.sleep(o.after_s)
        finally:
            stop.set()
            self.history.record("phase", what="issuing stopped")
        async with asyncio.timeout(o.give_up_s + 30):
            await issuing
        acked = [oc.alert_id for oc in self.issuer.outcomes.values() if oc.acked]
        missing = await self.await_displays(acked, o.settle_s)
        self.history.record("phase", what="settled", missing=len(missing))
        if self.push is not None:
            left = await self.push.await_all(acked, self.crowd_ids, o.settle_s)
            self.history.record("phase", what="push settled", missing=left)
        if green:
            await self.await_green(green, healed + o.green_wait_s)
        await self.read_final_state()

    async def await_green(self, names: tuple[str, ...], deadline: float) -> None:
        """Until the last /readyz sample of each of `names` is green, or the monotonic `deadline`."""
        while time.monotonic() < deadline and not all(self._green.get(n, False) for n in names):
            await asyncio.sleep(SAMPLE_EVERY_S)
        self.history.record("phase", what="green" if all(self._green.get(n, False) for n in names)
                            else "not green", nodes={n: self._green.get(n) for n in names})

    # -- the cluster's final state ------------------------------------------------------------

    async def jsz(self, name: str) -> dict[str, Any] | None:
        """The alerts stream as this node's nats-server reports it (/jsz?streams=true)."""
        url = self.cluster.spec(name).monitor_url + "/jsz"
        try:
            async with httpx.AsyncClient(timeout=2) as http:
                body = (await http.get(url, params={"streams": "true"})).json()
        except (httpx.HTTPError, ValueError):
            return None
        for account in body.get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                if stream.get("name") == STREAM:
                    found: dict[str, Any] = stream
                    return found
        return None

    async def leader(self) -> str | None:
        """The alerts stream's leader, as any nats-server that answers reports it."""
        for spec in self.cluster.specs:
            stream = await self.jsz(spec.name)
            leader = ((stream or {}).get("cluster") or {}).get("leader")
            if leader:
                return str(leader)
        return None

    async def replica_states(self) -> dict[str, dict[str, Any] | None]:
        states: dict[str, dict[str, Any] | None] = {}
        for spec in self.cluster.specs:
            stream = await self.jsz(spec.name)
            state = (stream or {}).get("state")
            states[spec.name] = None if state is None else {
                k: state.get(k) for k in ("messages", "bytes", "first_seq", "last_seq", "num_deleted")
            }
        return states

    async def read_final_state(self, agree_timeout_s: float = 30.0) -> None:
        """Replica states (waiting, bounded, for them to agree) and the stream's contents."""
        deadline = time.monotonic() + agree_timeout_s
        while True:
            states = await self.replica_states()
            values = [json.dumps(v, sort_keys=True) for v in states.values()]
            if (None not in states.values() and len(set(values)) == 1) or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
        contents = await self.stream_contents()
        alarms = self.count_in_logs("reconciler republished alert")
        self.final = {"replicas": states, "stream": contents, "republished_alarms": alarms}
        if self.push is not None:
            self.final["push"] = self.push.messages()
        self.history.record("final", replicas=states, stream_count=len(contents), republished_alarms=alarms)
        (self.workdir / "stream.json").write_text(json.dumps(contents))

    async def stream_contents(self) -> dict[str, list[int]]:
        """alert id -> every seq that holds it, read message by message from the stream."""
        urls = [s.nats_url for s in self.cluster.specs]
        found: dict[str, list[int]] = {}
        nc = await nats.connect(servers=urls, connect_timeout=2, max_reconnect_attempts=5, allow_reconnect=True)
        try:
            js = nc.jetstream(timeout=5)
            info = await js.stream_info(STREAM)
            first, last = int(info.state.first_seq), int(info.state.last_seq)
            sub = await js.subscribe(f"{STREAM}.>", stream=STREAM, ordered_consumer=True,
                                     pending_msgs_limit=1_000_000)
            try:
                async with asyncio.timeout(60):
                    while last and first <= last:
                        msg = await sub.next_msg(timeout=10)
                        seq = msg.metadata.sequence.stream
                        found.setdefault(msg.subject.rsplit(".", 1)[1], []).append(seq)
                        if seq >= last:
                            break
            finally:
                await sub.unsubscribe()
        finally:
            await nc.close()
        return found

    def count_in_logs(self, phrase: str) -> int:
        total = 0
        for spec in self.cluster.specs:
            path = spec.data_dir / "tocsin.log"
            if path.exists():
                total += path.read_text(errors="replace").count(phrase)
        return total

    # -- helpers for scenarios ----------------------------------------------------------------

    async def restart_node(self, name: str, *, nats: bool = True, tocsin: bool = True) -> None:
        if nats and self.cluster.pids(name)["nats"] is None:
            await self.cluster.start_nats(name)
        if tocsin and self.cluster.pids(name)["tocsin"] is None:
            await self.cluster.start_tocsin(name)
        self.note("restarted", node=name, pids=self.cluster.pids(name))

    async def wait_ready(self, name: str, timeout_s: float = 60.0) -> float:
        """Seconds until the node's /readyz answers 200 (bounded)."""
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() - started < timeout_s:
                try:
                    if (await http.get(self.cluster.spec(name).url + "/readyz")).status_code == 200:
                        return time.monotonic() - started
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.5)
        raise TimeoutError(f"{name} not ready after {timeout_s} s")

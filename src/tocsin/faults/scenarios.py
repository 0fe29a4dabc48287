"""F01-F22 and F28 (push deliveries: F28-dispatcher, -planner, -node) of RELIABILITY.md's fault matrix, each a setup, an injection (with its heal) and
the expectations its run is checked against. `ci=True` runs the shorter CI variant: lower
rates and durations, the same invariants.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nats
import uvicorn
from nats.aio.msg import Msg

from tocsin.faults import disks, netns
from tocsin.faults.checker import Expect, Result, check
from tocsin.faults.harness import STREAM, Options, Run
from tocsin.faults.history import read
from tocsin.faults.inproc import InProcessNode
from tocsin.faults.push import CROWD_POLYGON
from tocsin.faults.workload import SENDER, alert_xml
from tocsin.store.base import alert_id_for
from tocsin.workers import cores_available

Inject = Callable[[Run, bool], Awaitable[None]]
Prepare = Callable[[Run, bool], Awaitable[None]]
Verify = Callable[[Run, Result, bool], Awaitable[None]]


@dataclass(slots=True, kw_only=True)
class Scenario:
    id: str
    fault: str
    must: str
    inject: Inject
    options: Options = field(default_factory=Options)
    ci_options: dict[str, Any] = field(default_factory=dict)
    expect: Expect = field(default_factory=Expect)
    prepare: Prepare | None = None  # before the cluster starts (disks, namespaces, launchers)
    verify: Verify | None = None  # extra checks after the run
    needs: Callable[[], str | None] = lambda: None  # None, or why it cannot run here
    mutation: bool = False  # an unsafe setup on purpose: the checker must report the loss

    def options_for(self, ci: bool) -> Options:
        return replace(self.options, **self.ci_options) if ci else self.options


def _ci_seconds(ci: bool, full: float, short: float) -> float:
    return short if ci else full


async def _sleep(run: Run, seconds: float) -> None:
    await asyncio.sleep(seconds)


# -- F01 none ------------------------------------------------------------------------------

async def inject_none(run: Run, ci: bool) -> None:
    run.fault("none: steady load")
    await asyncio.sleep(_ci_seconds(ci, 120, 20))
    run.heal("none")


# -- F02 kill -9 a random NATS node every 20 s, restarted after 5 s ---------------------------

async def inject_kill_random_nats(run: Run, ci: bool) -> None:
    for cycle in range(2 if ci else 4):
        name = run.rng.choice([s.name for s in run.cluster.specs])
        run.fault("kill -9 nats-server", node=name, cycle=cycle)
        await run.cluster.kill(name, tocsin=False)
        await asyncio.sleep(5)
        await run.restart_node(name, tocsin=False)
        run.heal("nats-server restarted", node=name)
        await asyncio.sleep(_ci_seconds(ci, 15, 10))


# -- F03 kill -9 the stream leader during a burst --------------------------------------------

async def inject_kill_leader_in_burst(run: Run, ci: bool) -> None:
    assert run.issuer is not None
    leader = await run.leader() or "node1"
    burst = asyncio.get_running_loop().create_task(run.issuer.burst(40 if ci else 100))
    await asyncio.sleep(0.3)
    run.fault("kill -9 the stream leader during a burst", node=leader)
    await run.cluster.kill(leader, tocsin=False)
    await asyncio.sleep(5)
    await run.restart_node(leader, tocsin=False)
    run.heal("leader's nats-server restarted", node=leader)
    outcomes = await burst
    run.note("burst done", acked=sum(o.acked for o in outcomes), total=len(outcomes))


# -- F04 SIGSTOP the leader 5/15/30 s ----------------------------------------------------------

async def inject_stop_leader(run: Run, ci: bool) -> None:
    for pause in ((5, 15) if ci else (5, 15, 30)):
        leader = await run.leader() or "node1"
        run.fault("SIGSTOP the stream leader's nats-server", node=leader, seconds=pause)
        run.cluster.signal(leader, signal.SIGSTOP, tocsin=False)
        try:
            await asyncio.sleep(pause)
        finally:
            run.cluster.signal(leader, signal.SIGCONT, tocsin=False)
        run.heal("SIGCONT", node=leader)
        await asyncio.sleep(_ci_seconds(ci, 8, 5))


# -- F05 freeze a whole node ---------------------------------------------------------------

async def inject_freeze_node(run: Run, ci: bool) -> None:
    name = "node2"
    run.fault("SIGSTOP nats-server and tocsin of a node", node=name, seconds=30)
    run.cluster.signal(name, signal.SIGSTOP)
    try:
        await asyncio.sleep(_ci_seconds(ci, 30, 20))
    finally:
        run.cluster.signal(name, signal.SIGCONT)
    run.heal("SIGCONT", node=name)


# -- F06 partition one node (netns) ------------------------------------------------------------

def _netns_tag(run: Run) -> int:
    return run.cluster.base_port % 250


async def prepare_netns(run: Run, ci: bool) -> None:
    spaces = netns.Namespaces(tag=int(os.environ.get("TOCSIN_FAULTS_NETNS_TAG", "0")) or random.randrange(1, 250))
    await asyncio.to_thread(spaces.setup)
    run.after_stop(lambda: asyncio.to_thread(spaces.teardown))
    cluster = run.cluster
    cluster.hosts = spaces.hosts
    from tocsin.cluster.local import node_specs

    cluster.specs = node_specs(cluster.data_dir, cluster.nodes, cluster.base_port, spaces.hosts, cluster.nats_login)
    cluster.launchers = {s.name: spaces.launcher(i) for i, s in enumerate(cluster.specs)}
    run.spaces = spaces  # type: ignore[attr-defined]


async def inject_partition(run: Run, ci: bool) -> None:
    spaces: netns.Namespaces = run.spaces  # type: ignore[attr-defined]
    run.fault("partition node3 from its peers (blackhole routes both ways)", node="node3", seconds=30)
    await asyncio.to_thread(spaces.partition, 2)
    try:
        # Issue straight to the cut-off node meanwhile: it must never acknowledge (the
        # issuer moves on to another node after each refusal, as always).
        assert run.issuer is not None
        probes = [asyncio.get_running_loop().create_task(
            run.issuer.issue(run.issuer.new_identifier("minority"), first_node="node3")) for _ in range(3)]
        await asyncio.sleep(_ci_seconds(ci, 30, 20))
    finally:
        await asyncio.to_thread(spaces.heal)
    run.heal("partition healed", node="node3")
    await asyncio.gather(*probes)


# -- F07 kill -9 2 of 3 NATS nodes for 30 s ---------------------------------------------------

async def inject_quorum_loss(run: Run, ci: bool) -> None:
    victims = ["node1", "node2"]
    run.fault("kill -9 two nats-servers (no quorum)", nodes=victims)
    for name in victims:
        await run.cluster.kill(name, tocsin=False)
    await asyncio.sleep(30)
    for name in victims:
        await run.restart_node(name, tocsin=False)
    run.heal("nats-servers restarted", nodes=victims)


# -- F08 cold restart ----------------------------------------------------------------------------

async def inject_cold_restart(run: Run, ci: bool) -> None:
    names = [s.name for s in run.cluster.specs]
    run.fault("kill -9 every process of every node")
    for name in names:
        await run.cluster.kill(name)
    await asyncio.sleep(3)
    order = names[:]
    run.rng.shuffle(order)
    run.note("restart order", order=order)
    # The nats-servers must come up together to elect (each waits for its routes);
    # start them in random order without waiting for one before the next.
    starts = []
    for name in order:
        starts.append(asyncio.get_running_loop().create_task(run.cluster.start_nats(name)))
        await asyncio.sleep(run.rng.uniform(0, 1.5))
    await asyncio.gather(*starts)
    run.rng.shuffle(order)
    for name in order:
        await run.cluster.start_tocsin(name)
    last_start = time.time()
    run.heal("every node restarted", order=order)
    waited = max([await run.wait_ready(n, 60) for n in names])
    run.note("serving after cold restart", seconds=round(time.time() - last_start, 2), ready_s=waited)


# -- F09 rolling restart --------------------------------------------------------------------------

async def inject_rolling_restart(run: Run, ci: bool) -> None:
    for spec in run.cluster.specs:
        name = spec.name
        run.fault("rolling restart: lame duck / graceful stop", node=name)
        if ci:
            await run.cluster.stop_node(name)
        else:
            # Lame duck: the nats-server stops taking clients and moves them over 30 s.
            run.cluster.signal(name, signal.SIGUSR2, tocsin=False)
            await run.cluster.stop_node(name)
        await run.restart_node(name)
        await run.wait_ready(name, 60)
        run.heal("node back and ready", node=name)
        await asyncio.sleep(3)


# -- F10 a node returns with an empty disk, same name --------------------------------------------

async def inject_empty_disk(run: Run, ci: bool) -> None:
    name = "node3"
    spec = run.cluster.spec(name)
    run.fault("kill -9 a node and wipe its data directory", node=name)
    await run.cluster.kill(name)
    for child in spec.data_dir.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
        elif child.name != "tocsin.log":
            child.unlink()
    await asyncio.sleep(5)
    await run.restart_node(name)
    run.heal("node back with an empty disk", node=name)
    await run.wait_ready(name, 60)


# -- F11 power-loss copy of one node's disk; the mutation run on every node ---------------------

async def prepare_loop_disks(run: Run, ci: bool, names: tuple[str, ...]) -> None:
    loops: dict[str, disks.LoopDisk] = {}
    for name in names:
        spec = run.cluster.spec(name)
        disk = disks.LoopDisk(image=run.workdir / "disks" / f"{name}.img", mountpoint=spec.data_dir)
        await asyncio.to_thread(disk.create)
        loops[name] = disk
        run.after_stop(lambda d=disk: asyncio.to_thread(d.detach))  # type: ignore[misc]
    run.loops = loops  # type: ignore[attr-defined]


async def prepare_unsafe(run: Run, ci: bool) -> None:
    """The mutation: nats-servers with the default sync_interval, and tocsin nodes that are
    shown a monitoring endpoint claiming `sync_always` (tocsin rightly refuses to serve on a
    server without it; this run exists to show what that refusal prevents)."""
    await prepare_loop_disks(run, ci, ("node1", "node2", "node3"))
    varz = b'{"jetstream": {"config": {"sync_always": true}}}'

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                         b"Content-Length: " + str(len(varz)).encode() + b"\r\n\r\n" + varz)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def close() -> None:
        server.close()
        await server.wait_closed()

    run.after_stop(close)
    run.cluster.node_extra_env = {s.name: {"TOCSIN_NATS_MONITOR_URL": f"http://127.0.0.1:{port}"}
                                  for s in run.cluster.specs}


async def power_loss(run: Run, names: list[str]) -> None:
    loops: dict[str, disks.LoopDisk] = run.loops  # type: ignore[attr-defined]
    # One instant for every disk, as in a real power cut: freeze the nodes' processes (no
    # more writes reach the devices), copy the images, then kill the processes.
    run.fault("power loss: processes frozen, disk images copied unsynced, processes killed", nodes=names)
    for name in names:
        run.cluster.signal(name, signal.SIGSTOP)
    copies = {name: await asyncio.to_thread(loops[name].power_loss_copy) for name in names}
    for name in names:
        await run.cluster.kill(name)
    for name in names:
        await asyncio.to_thread(loops[name].replace_with, copies[name])
    await asyncio.sleep(2)
    starts = [asyncio.get_running_loop().create_task(run.cluster.start_nats(n)) for n in names]
    await asyncio.gather(*starts)
    for name in names:
        await run.cluster.start_tocsin(name)
    run.heal("nodes restarted on their power-loss disks", nodes=names)


async def inject_power_loss_one(run: Run, ci: bool) -> None:
    await asyncio.sleep(10)
    await power_loss(run, ["node3"])
    await run.wait_ready("node3", 60)


async def inject_power_loss_all(run: Run, ci: bool) -> None:
    await asyncio.sleep(10)
    await power_loss(run, [s.name for s in run.cluster.specs])


# -- F12 disk full on one node -------------------------------------------------------------------

async def prepare_tmpfs(run: Run, ci: bool) -> None:
    spec = run.cluster.spec("node3")
    await asyncio.to_thread(disks.mount_tmpfs, spec.data_dir, 256)
    run.after_stop(lambda: asyncio.to_thread(disks.umount, spec.data_dir))


async def inject_disk_full(run: Run, ci: bool) -> None:
    spec = run.cluster.spec("node3")
    run.fault("fill node3's disk (tmpfs)", node="node3")
    junk = await asyncio.to_thread(disks.fill, spec.data_dir)
    await asyncio.sleep(_ci_seconds(ci, 30, 20))
    junk.unlink()
    run.heal("disk space freed", node="node3")
    # A nats-server that hit ENOSPC turns JetStream off; note whether it came back by itself.
    await asyncio.sleep(10)
    stream = await run.jsz("node3")
    if not stream:
        run.note("node3's JetStream did not come back after the disk was freed; restarting its nats-server")
        await run.cluster.kill("node3", tocsin=False)
        await run.restart_node("node3", tocsin=False)
        run.heal("node3 nats-server restarted", node="node3")


# -- F13 slow disk ---------------------------------------------------------------------------------

def _blkio() -> Path:
    return Path("/sys/fs/cgroup/blkio")


def needs_blkio() -> str | None:
    if not (_blkio() / "blkio.throttle.write_bps_device").exists():
        return "no cgroup v1 blkio throttling here to slow a loop device"
    return None


async def inject_slow_disk(run: Run, ci: bool) -> None:
    disk: disks.LoopDisk = run.loops["node3"]  # type: ignore[attr-defined]
    group = _blkio() / f"tocsin-faults-{os.getpid()}"
    group.mkdir(exist_ok=True)
    pids = [p for p in run.cluster.pids("node3").values() if p]
    run.fault("throttle node3's disk to 64 KiB/s and 10 writes/s", node="node3", seconds=30)
    (group / "blkio.throttle.write_bps_device").write_text(f"{disk.major_minor} 65536")
    (group / "blkio.throttle.write_iops_device").write_text(f"{disk.major_minor} 10")
    for pid in pids:
        (group / "cgroup.procs").write_text(str(pid))
    try:
        await asyncio.sleep(30)
    finally:
        for pid in pids:
            try:
                (_blkio() / "cgroup.procs").write_text(str(pid))
            except OSError:
                pass
        (group / "blkio.throttle.write_bps_device").write_text(f"{disk.major_minor} 0")
        (group / "blkio.throttle.write_iops_device").write_text(f"{disk.major_minor} 0")
        try:
            group.rmdir()
        except OSError:
            pass
    run.heal("throttle removed", node="node3")


# -- F14 corrupt block files on stopped nodes, restart ---------------------------------------------

async def inject_corrupt_blocks(run: Run, ci: bool) -> None:
    await asyncio.sleep(5)
    names = [s.name for s in run.cluster.specs]
    run.fault("stop every node; cut the alert stream's last block file in half and drop the Raft logs, on every node")
    for name in names:
        await run.cluster.kill(name)
    cut = 0
    for name in names:
        store = run.cluster.spec(name).data_dir / "nats"
        blocks = sorted(store.rglob(f"streams/{STREAM}/msgs/*.blk"), key=lambda p: int(p.stem))
        if blocks:
            last = blocks[-1]
            size = last.stat().st_size
            with open(last, "r+b") as f:
                f.truncate(size // 2)
            cut += 1
            # Also drop the stream index so the server must rebuild it from the damaged blocks,
            # and the streams' Raft logs, which would otherwise replay the lost messages.
            for index in store.rglob(f"streams/{STREAM}/msgs/*.idx"):
                index.unlink()
            for state in store.rglob(f"streams/{STREAM}/msgs/index.db"):
                state.unlink()
            for wal in store.glob("jetstream/$SYS/_js_/S-R3F-*/msgs"):
                shutil.rmtree(wal)
    run.note("block files truncated", nodes=cut)
    starts = [asyncio.get_running_loop().create_task(run.cluster.start_nats(n)) for n in names]
    await asyncio.gather(*starts)
    for name in names:
        await run.cluster.start_tocsin(name)
    run.heal("nodes restarted on damaged block files")
    await asyncio.sleep(15)  # at least two reconciler passes


async def verify_alarm(run: Run, result: Result, ci: bool) -> None:
    if result.republished_alarms == 0:
        result.violations.append("the reconciler raised no alarm (no 'reconciler republished alert' in any log)")


# -- F15 clock skew on one tocsin node ----------------------------------------------------------------

def _libfaketime() -> str:
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1")) + sorted(
        Path("/usr/lib/faketime").glob("libfaketime.so.1"))
    return str(found[0]) if found else ""


def needs_faketime() -> str | None:
    return None if _libfaketime() else "libfaketime is not installed (apt-get install faketime)"


async def prepare_skew(run: Run, ci: bool) -> None:
    # libfaketime preloaded straight into the tocsin process: the `faketime` wrapper forks,
    # and LocalCluster must hold the pid of the process it kills.
    lib = _libfaketime()
    run.cluster.node_extra_env = {
        name: {"LD_PRELOAD": lib, "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1",
               "FAKETIME_NO_CACHE": "1"}
        for name, offset in (("node2", "+5m"), ("node3", "-5m"))
    }


async def inject_skew(run: Run, ci: bool) -> None:
    assert run.issuer is not None
    run.fault("tocsin on node2 runs 5 min ahead, node3 5 min behind (faketime)")
    # Same identity through the skewed nodes and a normal one: stored once.
    ident = run.issuer.new_identifier("skew")
    body = alert_xml(ident)
    for node in ("node2", "node3", "node1"):
        await run.issuer.issue(ident, xml=body, first_node=node)
    # Beyond the bound from every node's clock (5 min bound + 5 min skew): sent 15 min ahead.
    from datetime import UTC, datetime, timedelta

    future = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=15)
    for node in ("node1", "node2", "node3"):
        ident = run.issuer.new_identifier("future")
        await run.issuer.issue(ident, xml=alert_xml(ident, sent=future), first_node=node)
    await asyncio.sleep(20)
    run.heal("end of the skewed window (processes keep their clocks)")


async def verify_skew(run: Run, result: Result, ci: bool) -> None:
    entries = read(run.workdir / "history.jsonl")
    refused = [e for e in entries if e["k"] == "refused"]
    future = [e for e in refused if "future" in str(e)]
    if len({e["node"] for e in refused}) < 3:
        result.violations.append(f"an alert sent 15 min ahead was not refused by every node: {refused}")
    result.notes.append(f"{len(refused)} refusals of alerts beyond the skew bound ({len(future)} named future)")


# -- F16 delivery broken while NATS is healthy ----------------------------------------------------------

async def prepare_inproc(run: Run, ci: bool) -> None:
    run.inproc_nodes = ["node3"]


async def inject_stuck_fanout(run: Run, ci: bool) -> None:
    node: InProcessNode = run.inproc["node3"]
    assert node.node is not None
    follower = node.node.services.pipeline.follower
    follower.hold = asyncio.Event()
    run.fault("node3's fan-out stuck (follower held), every process running", node="node3")
    await asyncio.sleep(_ci_seconds(ci, 30, 20))
    follower.hold.set()
    follower.hold = None
    run.heal("fan-out released", node="node3")


# -- F17 the prober dies --------------------------------------------------------------------------------

async def inject_prober_dies(run: Run, ci: bool) -> None:
    from tocsin.prober.watchdog import Watchdog, _app

    period = 2.0
    watchdog = Watchdog(["node3"], period_s=period)
    sock = socket.socket()
    sock.bind(("127.0.0.1", int(run.watchdog_port)))  # type: ignore[attr-defined]
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(_app(watchdog), log_config=None, access_log=False, lifespan="off"))
    serving = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        deadline = time.monotonic() + 40
        while watchdog.watched["node3"].beats < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        run.note("heartbeats before the fault", beats=watchdog.watched["node3"].beats)
        node: InProcessNode = run.inproc["node3"]
        prober = node.task_named("prober:node3")
        run.fault("the prober task of node3 dies (cancelled)", node="node3", found=prober is not None)
        killed = time.monotonic()
        if prober is not None:
            prober.cancel()
        fired = None
        while time.monotonic() - killed < 30:
            if watchdog.late():
                fired = time.monotonic() - killed
                break
            await asyncio.sleep(0.2)
        run.note("dead man's switch", fired_after_s=fired, period_s=period)
        run.watchdog_fired = fired  # type: ignore[attr-defined]
        run.heal("watchdog observed", node="node3")
    finally:
        server.should_exit = True
        await serving
        sock.close()


async def prepare_watchdog(run: Run, ci: bool) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run.watchdog_port = port  # type: ignore[attr-defined]
    run.cluster.node_extra_env = {"node3": {"TOCSIN_WATCHDOG_URLS": f"http://127.0.0.1:{port}",
                                            "TOCSIN_HEARTBEAT_INTERVAL_S": "2"}}
    run.inproc_nodes = ["node3"]


async def verify_watchdog(run: Run, result: Result, ci: bool) -> None:
    fired = getattr(run, "watchdog_fired", None)
    result.notes.append(f"dead man's switch fired {fired} s after the prober died (period 2 s)")
    if fired is None or fired > 2 * 2.0 + 1.0:
        result.violations.append(f"the dead man's switch did not fire within two heartbeat periods (+1 s): {fired}")


# -- F18 reconnect storm -------------------------------------------------------------------------------------

async def inject_storm(run: Run, ci: bool) -> None:
    run.fault("kill -9 the node holding most devices (both processes)", node="node1")
    await run.cluster.kill("node1")
    await asyncio.sleep(20)
    await run.restart_node("node1")
    run.heal("node1 restarted", node="node1")


# -- F19 all NATS down, then up --------------------------------------------------------------------------------

async def inject_all_nats_down(run: Run, ci: bool) -> None:
    names = [s.name for s in run.cluster.specs]
    run.tocsin_pids = {n: run.cluster.pids(n)["tocsin"] for n in names}  # type: ignore[attr-defined]
    run.fault("kill -9 every nats-server", seconds=_ci_seconds(ci, 180, 45))
    for name in names:
        await run.cluster.kill(name, tocsin=False)
    await asyncio.sleep(_ci_seconds(ci, 180, 45))
    await asyncio.gather(*(run.cluster.start_nats(n) for n in names))
    run.heal("every nats-server restarted")


async def verify_same_pids(run: Run, result: Result, ci: bool) -> None:
    before = getattr(run, "tocsin_pids", {})
    for name, pid in before.items():
        if pid is None or not _alive(pid):
            result.violations.append(f"tocsin on {name} (pid {pid}) did not survive the NATS outage")
    result.notes.append("every tocsin process reconnected without a restart" if not result.violations else "")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- F20 kill -9 between the publish ack and the HTTP reply -------------------------------------------------

async def inject_kill_before_reply(run: Run, ci: bool) -> None:
    assert run.issuer is not None
    nc = await nats.connect(servers=[s.nats_url for s in run.cluster.specs], connect_timeout=2)
    try:
        for round_ in range(5):
            ident = run.issuer.new_identifier("race")
            subject = f"{STREAM}.{alert_id_for(SENDER, ident)}"
            seen: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            async def published(msg: Msg, seen: asyncio.Future[None] = seen) -> None:
                if not seen.done():
                    seen.set_result(None)

            sub = await nc.subscribe(subject, cb=published)
            issuing = asyncio.get_running_loop().create_task(run.issuer.issue(ident, first_node="node3"))
            try:
                async with asyncio.timeout(10):
                    await seen
            except TimeoutError:
                run.note("no publish seen to race", round=round_)
            run.fault("kill -9 node3 the moment its publish reaches NATS", node="node3", round=round_)
            await run.cluster.kill("node3")
            await sub.unsubscribe()
            outcome = await issuing
            run.note("raced alert", id=outcome.alert_id, acked=outcome.acked, statuses=outcome.statuses)
            await run.restart_node("node3")
            run.heal("node3 restarted", node="node3")
            await asyncio.sleep(2)
    finally:
        await nc.close()


# -- F21 a dispatcher paused longer than ack_wait -------------------------------------------------------------

async def inject_pause_dispatcher(run: Run, ci: bool) -> None:
    run.fault("SIGSTOP node2's tocsin (its fan-out) for 20 s, nats-server running", node="node2")
    run.cluster.signal("node2", signal.SIGSTOP, nats=False)
    try:
        await asyncio.sleep(20)
    finally:
        run.cluster.signal("node2", signal.SIGCONT, nats=False)
    run.heal("SIGCONT", node="node2")


# -- F22 noisy neighbour ---------------------------------------------------------------------------------------------

def needs_stress() -> str | None:
    return None if shutil.which("stress-ng") else "stress-ng is not installed (apt-get install stress-ng)"


async def inject_noisy(run: Run, ci: bool) -> None:
    seconds = int(_ci_seconds(ci, 120, 30))
    stress = await asyncio.create_subprocess_exec(
        "stress-ng", "--cpu", "2", "--io", "1", "--vm", "1", "--vm-bytes", "256M", "--timeout", f"{seconds}s",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
    )
    run.fault("stress-ng: 2 cpu, 1 io, 1 vm workers", pid=stress.pid, seconds=seconds)
    try:
        async with asyncio.timeout(seconds + 15):
            await stress.wait()
    finally:
        if stress.returncode is None:
            os.killpg(stress.pid, signal.SIGKILL)
            await stress.wait()
    run.heal("stress-ng finished")


# -- F28 push deliveries: a dispatcher, a planner, a whole node killed mid-alert ---------------

# How late the fake answers each push while the fault is on: sends are in flight on every
# dispatcher (each push is taken at once, its 201 comes this late; under TOCSIN_PUSH_TIMEOUT_S).
SLOW_PUSH_S = 1.0


def _slots(run: Run) -> int:
    """The sends one node can have in flight: each of its workers' dispatchers has its own
    push_concurrency (docs/workers.md)."""
    workers = int(run.options.env.get("TOCSIN_WORKERS", "1"))
    return run.options.push_concurrency * (workers or cores_available())


def _taken_before(run: Run, at: float) -> int:
    """Pushes the fake took in the SLOW_PUSH_S before `at`: their answers were still pending
    (on every node) at that moment, the sends in flight."""
    assert run.push is not None
    return sum(1 for m in run.push.messages() if at - SLOW_PUSH_S <= float(m.get("at", 0)) <= at)


async def inject_kill_dispatcher(run: Run, ci: bool) -> None:
    """kill -9 node2's tocsin (its dispatchers) while every dispatcher has sends in flight;
    its deliveries are taken over by the others after ack_wait; restart it."""
    assert run.push is not None
    await run.push.slow(SLOW_PUSH_S)
    try:
        await asyncio.sleep(4.0)
        run.fault("kill -9 node2's tocsin with push sends in flight (each answered 1 s late)", node="node2",
                  repeat_bound=_slots(run))
        killed = time.time()
        await run.cluster.kill("node2", nats=False)
        run.in_flight = _taken_before(run, killed)  # type: ignore[attr-defined]
        run.note("sends in flight at the kill (answers pending, every node)", sends=run.in_flight)  # type: ignore[attr-defined]
        await asyncio.sleep(run.options.push_ack_wait_s + 2.0)
        await run.restart_node("node2", nats=False)
        run.heal("node2's tocsin restarted", node="node2")
    finally:
        await run.push.clear()


async def inject_kill_push_node(run: Run, ci: bool) -> None:
    """kill -9 node3's nats-server and tocsin while sends are in flight. The deliveries
    consumers' leaders may be on node3: acks in flight to them are lost too, so every
    dispatcher's sends in flight may repeat (the bound counts the three)."""
    assert run.push is not None
    await run.push.slow(SLOW_PUSH_S)
    try:
        await asyncio.sleep(4.0)
        run.fault("kill -9 node3 (nats-server and tocsin) with push sends in flight", node="node3",
                  repeat_bound=_slots(run) * len(run.cluster.specs))
        killed = time.time()
        await run.cluster.kill("node3")
        run.in_flight = _taken_before(run, killed)  # type: ignore[attr-defined]
        run.note("sends in flight at the kill (answers pending, every node)", sends=run.in_flight)  # type: ignore[attr-defined]
        await asyncio.sleep(_ci_seconds(ci, 15, 10))
        await run.restart_node("node3")
        run.heal("node3 restarted", node="node3")
    finally:
        await run.push.clear()


async def verify_in_flight(run: Run, result: Result, ci: bool) -> None:
    """The fault came with sends in flight (else it proves nothing about them)."""
    sends = getattr(run, "in_flight", 0)
    result.notes.append(f"{sends} pushes taken by the fake in the {SLOW_PUSH_S} s before the kill, "
                        "their answers pending (every node)")
    if not sends:
        result.violations.append("no push send was in flight at the kill")


async def inject_gateway_errors(run: Run, ci: bool) -> None:
    """The push service fails every push for a while, each way a real one does: 500, then
    429 with Retry-After, then 503, then no answer at all (hang, until the sender's timeout).
    None of those takes the message, so every delivery must still be made, and none twice."""
    assert run.push is not None
    each_s = _ci_seconds(ci, 6.0, 4.0)
    run.fault("the push service answers 500, 429 (Retry-After 2), 503, then hangs", seconds=4 * each_s)
    run.failing_from = time.time()  # type: ignore[attr-defined]
    try:
        for mode, retry_after in (("500", None), ("429", "2"), ("503", None), ("hang", None)):
            await run.push.control("fail", {"mode": mode, "retry_after": retry_after})
            run.note("push service failing", mode=mode)
            await asyncio.sleep(each_s)
            await run.push.clear()
    finally:
        await run.push.clear()
    run.failing_until = time.time()  # type: ignore[attr-defined]
    run.heal("the push service answers again")


async def verify_gateway(run: Run, result: Result, ci: bool) -> None:
    """Nothing was taken while the service failed, and the backlog went once it answered."""
    assert run.push is not None
    start, end = getattr(run, "failing_from", 0.0), getattr(run, "failing_until", 0.0)
    times = sorted(float(m.get("at", 0)) for m in run.push.messages() if m.get("event") == "message")
    during = sum(1 for t in times if start + 0.5 < t < end)
    soon = sum(1 for t in times if end <= t < end + 10.0)
    result.notes.append(f"pushes taken while the service failed ({end - start:.0f} s): {during}; in the 10 s after "
                        f"it answered again: {soon}")
    if during:
        result.violations.append(f"{during} pushes taken while the push service was told to fail")


async def _connz(run: Run, **params: str) -> list[dict[str, Any]]:
    """Every client connection of every nats-server (/connz); a tocsin's is named after its node."""
    import httpx

    found: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=2.0) as http:
        answers = await asyncio.gather(*(http.get(s.monitor_url + "/connz", params={"limit": "1024", **params})
                                         for s in run.cluster.specs), return_exceptions=True)
    for answer in answers:
        if not isinstance(answer, BaseException) and answer.status_code == 200:
            found += answer.json().get("connections") or []
    return found


async def _published(run: Run) -> dict[str, int]:
    """Messages each tocsin node's NATS connections published so far (named after the node)."""
    totals: dict[str, int] = {}
    for conn in await _connz(run):
        name = str(conn.get("name") or "")
        totals[name] = totals.get(name, 0) + int(conn.get("in_msgs") or 0)
    return totals


async def inject_kill_planner(run: Run, ci: bool) -> None:
    """Issue one alert over the workload's area and the push crowd's (thousands of deliveries:
    several atomic batches). The moment the first of its deliveries reaches the work queue's
    subjects every tocsin is frozen (SIGSTOP, from the subscription's callback: the plan stops
    where it is); the planner is the node whose connections published them (nats-server
    /connz, connections named after their node); it is killed -9 and the others resume.
    Another node plans the alert again after ack_wait; the queue's message ids keep nothing
    twice."""
    assert run.issuer is not None and run.push is not None
    nc = await nats.connect(servers=[s.nats_url for s in run.cluster.specs], connect_timeout=2)
    ident = run.issuer.new_identifier("crowd")
    alert_id = alert_id_for(SENDER, ident)
    run.crowd_ids.add(alert_id)
    run.history.record("crowd_alert", id=alert_id, devices=run.options.push_crowd)
    names = [s.name for s in run.cluster.specs]
    frozen = asyncio.Event()
    counted = [0, 0]  # deliveries seen; of them when frozen

    async def delivery(msg: Msg) -> None:
        if not (msg.headers or {}).get("Nats-Msg-Id", "").startswith(alert_id + "."):
            return
        counted[0] += 1
        if not frozen.is_set():
            for name in names:
                run.cluster.signal(name, signal.SIGSTOP, nats=False)
            frozen.set()
            counted[1] = counted[0]

    queue = await nc.subscribe("TOCSIN_DELIVERIES.device.>", cb=delivery)
    try:
        before = await _published(run)
        xml = alert_xml(ident).replace(b"</area>", b"</area><area><areaDesc>Bordeaux</areaDesc><polygon>"
                                       + CROWD_POLYGON.encode() + b"</polygon></area>", 1)
        issuing = asyncio.get_running_loop().create_task(run.issuer.issue(ident, xml=xml))
        try:
            async with asyncio.timeout(30):
                await frozen.wait()
        except TimeoutError:
            run.note("no delivery of the crowd alert seen within 30 s")
            return
        try:
            after = await _published(run)
            grown = {n: after.get(n, 0) - before.get(n, 0) for n in names}
            planner = max(names, key=lambda n: grown[n])
            run.fault("kill -9 the tocsin planning the crowd alert, frozen at its first delivery", node=planner,
                      alert=alert_id, published=grown, seen=counted[1], repeat_bound=_slots(run))
            run.cluster.signal(planner, signal.SIGKILL, nats=False)
            run.planner_published = grown  # type: ignore[attr-defined]
        finally:
            for name in names:
                with contextlib.suppress(ProcessLookupError):
                    run.cluster.signal(name, signal.SIGCONT, nats=False)
        await run.cluster.kill(planner, nats=False)  # reaps it
        outcome = await issuing
        run.note("crowd alert", id=alert_id, acked=outcome.acked, planner=planner)
        await asyncio.sleep(run.options.push_ack_wait_s + 2.0)
        await run.restart_node(planner, nats=False)
        run.heal("the planning node's tocsin restarted", node=planner)
        run.killed_planner = planner  # type: ignore[attr-defined]
        await asyncio.sleep(5.0)
        run.note("crowd deliveries published (repeats included)", seen=counted[0])
    finally:
        await queue.unsubscribe()
        await nc.close()


async def verify_replanned(run: Run, result: Result, ci: bool) -> None:
    """The kill came mid-plan: the killed node never logged the crowd alert planned, another did."""
    planner = getattr(run, "killed_planner", None)
    alert_id = next(iter(run.crowd_ids), "")
    logs = {s.name: (s.data_dir / "tocsin.log").read_text(errors="replace") if (s.data_dir / "tocsin.log").exists()
            else "" for s in run.cluster.specs}
    planned_by = sorted(n for n, text in logs.items()
                        if any("alert planned" in line and alert_id in line for line in text.splitlines()))
    published = getattr(run, "planner_published", {})
    result.notes.append(f"crowd alert {alert_id} ({run.options.push_crowd} crowd devices): planning node "
                        f"{planner} killed having published {published.get(planner)} messages (the others "
                        f"{[v for k, v in sorted(published.items()) if k != planner]}); 'alert planned' logged by "
                        f"{planned_by or 'none'}")
    if planner is None or planner in planned_by and len(planned_by) == 1:
        result.violations.append(f"the planner ({planner}) was not killed mid-plan: it finished the plan")
    if not planned_by:
        result.violations.append("no node logged the crowd alert as planned")


# -- the matrix ---------------------------------------------------------------------------------------------------------

# Every replica reserves the stream's and the device bucket's max_bytes (2 GiB and 512 MiB by
# default): a small disk needs less.
SMALL_DISK_ENV = {"TOCSIN_STREAM_MAX_BYTES": str(64 << 20), "TOCSIN_DEVICE_BUCKET_MAX_BYTES": str(16 << 20),
                  "TOCSIN_AUDIT_MAX_BYTES": str(8 << 20), "TOCSIN_DELIVERIES_MAX_BYTES": str(16 << 20),
                  "TOCSIN_PROGRESS_MAX_BYTES": str(8 << 20)}

# RELIABILITY.md invariant 6: while a node delivers, no device waits longer than this for it.
STRANDED_S = 10.0

CI_OPTIONS: dict[str, Any] = {"devices": 150, "rate": 3.0, "warmup_s": 4.0, "after_s": 10.0, "settle_s": 30.0}
# F28: push devices in the workload's area get every alert (rate x devices pushes a second).
PUSH_OPTIONS: dict[str, Any] = {"push_devices": 80, "rate": 1.0, "devices": 150, "settle_s": 60.0}
PUSH_CI: dict[str, Any] = {**CI_OPTIONS, "push_devices": 60, "rate": 1.0, "settle_s": 45.0}


def _matrix() -> list[Scenario]:
    ci = CI_OPTIONS
    return [
        Scenario(id="F01", fault="none: steady load, 5 alerts/s for 2 min", must="invariants; p99 under 2 s",
                 inject=inject_none, expect=Expect(p99_s=2.0), ci_options=ci),
        Scenario(id="F02", fault="kill -9 a random NATS node every 20 s, restarted after 5 s",
                 must="invariants; canary gap at most 15 s", inject=inject_kill_random_nats, ci_options=ci),
        Scenario(id="F03", fault="kill -9 the stream leader during a burst",
                 must="invariants; no issuer-visible failure after its retries",
                 inject=inject_kill_leader_in_burst, ci_options=ci),
        Scenario(id="F04", fault="SIGSTOP the leader 5/15/30 s, then SIGCONT", must="invariants; gap at most 15 s",
                 inject=inject_stop_leader, ci_options=ci),
        Scenario(id="F05", fault="freeze a whole node (nats + tocsin) 30 s",
                 must="devices and issuers fail over to other nodes", inject=inject_freeze_node,
                 expect=Expect(max_stranded_s=STRANDED_S), ci_options=ci),
        Scenario(id="F06", fault="partition one node (netns) 30 s, heal",
                 must="the minority never acknowledges; invariants", inject=inject_partition,
                 prepare=prepare_netns, expect=Expect(no_ack_from=("node3",), max_stranded_s=STRANDED_S), ci_options=ci,
                 needs=netns.available),
        Scenario(id="F07", fault="kill -9 2 of 3 NATS nodes for 30 s",
                 must="503, never a false 201; /readyz red; resumes after restart", inject=inject_quorum_loss,
                 expect=Expect(max_gap_s=None, expect_503=True, red_nodes=("node1", "node2", "node3")),
                 ci_options=ci),
        Scenario(id="F08", fault="cold restart: kill everything, restart in random order",
                 must="all acknowledged alerts present; serving within 60 s", inject=inject_cold_restart,
                 expect=Expect(max_gap_s=None, recover_s=60.0), ci_options=ci),
        Scenario(id="F09", fault="rolling restart (lame duck, wait healthy, next)",
                 must="no issuer failure after retries; no duplicate; gap at most 15 s",
                 inject=inject_rolling_restart, ci_options=ci),
        Scenario(id="F10", fault="a node returns with an empty disk, same name",
                 must="it catches up; replicas current again", inject=inject_empty_disk, ci_options=ci),
        Scenario(id="F11", fault="power-loss copy of one node's disk (sync_interval: always)",
                 must="invariants with sync always", inject=inject_power_loss_one, options=Options(env=SMALL_DISK_ENV),
                 prepare=lambda r, c: prepare_loop_disks(r, c, ("node3",)), ci_options=ci, needs=_needs_loop),
        Scenario(id="F11-mutation", fault="power-loss copy of every disk, default sync_interval (unsafe)",
                 must="the checker reports the loss", inject=inject_power_loss_all,
                 options=Options(sync_always=False, env=SMALL_DISK_ENV), mutation=True,
                 prepare=prepare_unsafe,
                 expect=Expect(max_gap_s=None, recover_s=60.0), ci_options=ci, needs=_needs_loop),
        Scenario(id="F11-control", fault="power-loss copy of every disk, sync_interval: always",
                 must="no loss", inject=inject_power_loss_all, options=Options(env=SMALL_DISK_ENV),
                 prepare=lambda r, c: prepare_loop_disks(r, c, ("node1", "node2", "node3")),
                 expect=Expect(max_gap_s=None, recover_s=60.0), ci_options=ci, needs=_needs_loop),
        Scenario(id="F12", fault="disk full on one node (tmpfs)",
                 must="never acknowledged then lost; red, then recovers", inject=inject_disk_full,
                 prepare=prepare_tmpfs, expect=Expect(red_nodes=("node3",)), ci_options=ci,
                 options=Options(env=SMALL_DISK_ENV), needs=_needs_mount),
        Scenario(id="F13", fault="slow disk (throttled loop device)", must="no duplicate display",
                 inject=inject_slow_disk, options=Options(env=SMALL_DISK_ENV), prepare=lambda r, c: prepare_loop_disks(r, c, ("node3",)),
                 ci_options=ci, needs=lambda: _needs_loop() or needs_blkio()),
        Scenario(id="F14", fault="truncate block files on stopped nodes, restart",
                 must="the reconciler detects and republishes; an alarm is raised", inject=inject_corrupt_blocks,
                 expect=Expect(max_gap_s=None, recover_s=60.0, max_stranded_s=STRANDED_S), verify=verify_alarm,
                 ci_options=ci),
        Scenario(id="F15", fault="clock skew +/- 5 min on two tocsin nodes",
                 must="dedupe by identity not time; skew beyond the bound is rejected", inject=inject_skew,
                 prepare=prepare_skew, verify=verify_skew, expect=Expect(refusals_expected=3), ci_options=ci,
                 needs=needs_faketime),
        Scenario(id="F16", fault="fan-out stuck on one node while NATS is healthy",
                 must="/readyz red within 10 s although every process runs", inject=inject_stuck_fanout,
                 prepare=prepare_inproc, expect=Expect(red_nodes=("node3",), max_stranded_s=STRANDED_S),
                 ci_options=ci),
        Scenario(id="F17", fault="the prober itself dies", must="dead man's switch within two heartbeat periods",
                 inject=inject_prober_dies, prepare=prepare_watchdog, verify=verify_watchdog, ci_options=ci),
        Scenario(id="F18", fault="reconnect storm: the node holding 2,000 devices dies",
                 must="jittered reconnects; every device resyncs; no node overloads", inject=inject_storm,
                 options=Options(devices=2000, homes=[0], rate=1.0, outside=0.05, settle_s=90.0),
                 ci_options={**ci, "devices": 300}),
        Scenario(id="F19", fault="all NATS down for 3 min, then up", must="every tocsin node reconnects without a restart",
                 inject=inject_all_nats_down, verify=verify_same_pids,
                 options=Options(give_up_s=300.0), expect=Expect(max_gap_s=None),
                 ci_options={**ci, "give_up_s": 150.0}),
        Scenario(id="F20", fault="kill -9 a node between the publish ack and its HTTP reply",
                 must="displayed once", inject=inject_kill_before_reply, ci_options=ci),
        Scenario(id="F21", fault="a dispatcher (the live fan-out) paused longer than its timeouts",
                 must="redelivered, displayed once", inject=inject_pause_dispatcher,
                 expect=Expect(max_stranded_s=STRANDED_S), ci_options=ci),
        Scenario(id="F22", fault="noisy neighbour (stress-ng) during F01", must="p99 under 10 s; invariants",
                 inject=inject_noisy, expect=Expect(p99_s=10.0), ci_options=ci, needs=needs_stress),
        Scenario(id="F28-dispatcher", fault="kill -9 a node's tocsin (its push dispatchers) with sends in flight",
                 must="every push delivery made, shown once; repeats within the sends in flight; invariants",
                 inject=inject_kill_dispatcher, verify=verify_in_flight, options=Options(**PUSH_OPTIONS),
                 ci_options=PUSH_CI),
        Scenario(id="F28-planner", fault="kill -9 the tocsin planning an alert of 2,500 push devices, mid-plan",
                 must="re-planned by another node after ack_wait; every push delivery once; invariants",
                 inject=inject_kill_planner, verify=verify_replanned,
                 options=Options(**PUSH_OPTIONS, push_crowd=2500), ci_options={**PUSH_CI, "push_crowd": 2500}),
        Scenario(id="F28-gateway", fault="the push service answers 500, 429, 503, then hangs, 6 s each",
                 must="retried (Retry-After honoured) until accepted; every push delivery once; invariants",
                 inject=inject_gateway_errors, verify=verify_gateway, options=Options(**PUSH_OPTIONS),
                 ci_options=PUSH_CI),
        Scenario(id="F28-node", fault="kill -9 a whole node (nats-server and tocsin) with push sends in flight",
                 must="every push delivery made, shown once; repeats within the sends in flight; invariants",
                 inject=inject_kill_push_node, verify=verify_in_flight, options=Options(**PUSH_OPTIONS),
                 ci_options=PUSH_CI),
    ]


def _needs_mount() -> str | None:
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    return None if shutil.which("mount") and shutil.which("umount") else "mount or umount missing (apt-get install mount)"


def _needs_loop() -> str | None:
    if os.geteuid() != 0:
        return "loop devices need root"
    if not shutil.which("mkfs.ext4") or not shutil.which("losetup"):
        return "mkfs.ext4 or losetup missing"
    probe = subprocess.run(["losetup", "-f"], capture_output=True, text=True, timeout=10)
    return None if probe.returncode == 0 else f"no free loop device: {probe.stderr.strip()[:100]}"


SCENARIOS: dict[str, Scenario] = {s.id: s for s in _matrix()}
CI_SUBSET = ("F01", "F02", "F03", "F04", "F07", "F08", "F09", "F12", "F16", "F19", "F28-dispatcher")


async def run_scenario(scenario: Scenario, workdir: Path, *, ci: bool = False, workers: int | None = None) -> Result:
    """Set up, run, check; every process is stopped whatever happens. `workers`: each node's
    TOCSIN_WORKERS (docs/workers.md; default: the node's own default)."""
    started = time.monotonic()
    reason = scenario.needs()
    if reason:
        return Result(fault=scenario.id, skipped=reason)
    options = scenario.options_for(ci)
    if workers is not None:
        options = replace(options, env={**options.env, "TOCSIN_WORKERS": str(workers)})
    if os.environ.get("TOCSIN_FAULTS_SEED"):
        options = replace(options, seed=int(os.environ["TOCSIN_FAULTS_SEED"]))
    async with Run(workdir / scenario.id, scenario.id, options) as run:
        if scenario.prepare:
            await scenario.prepare(run, ci)
        await _start(run)
        await run.execute(lambda r: scenario.inject(r, ci), green=scenario.expect.red_nodes)
        await run.stop_fleet()  # the fleet writes its last lines as it stops
        run.history.flush()
        result = check(scenario.id, read(run.workdir / "history.jsonl", run.fleet_history), run.final,
                       scenario.expect)
        if scenario.verify:
            await scenario.verify(run, result, ci)
        result.mutation = scenario.mutation
    result.duration_s = round(time.monotonic() - started, 1)
    return result


async def _start(run: Run) -> None:
    await run.start()

"""A local cluster on one machine: per node a nats-server and a tocsin process beside it.

For demos, tests, the fault suite and drills. Each process is started, stopped, killed or
paused by its pid; DIR/cluster.json lists every node's name, URLs and pids.
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
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tocsin.approval.automated import write_automated_source
from tocsin.cluster.nats_server import NATS_USER, ClusterSpec, NatsServer, die_with_parent, load_or_create_password
from tocsin.secret_file import private_dir, write_secret
from tocsin.signing import SigningKey

log = logging.getLogger(__name__)

CLUSTER_NAME = "tocsin"


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSpec:
    """One node's name, directory and ports."""

    name: str
    data_dir: Path
    http_port: int
    nats_port: int
    monitor_port: int
    route_port: int
    # Loopback by default; the fault suite gives each node its own address in a network
    # namespace (tocsin.faults.netns) so that it can be cut off from its peers.
    host: str = "127.0.0.1"
    # `user:password` every client and route peer logs in with (docs/security.md, NATS).
    nats_login: str = ""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def nats_address(self) -> str:
        """The client URL without credentials, for the nodes (which read the password file)."""
        return f"nats://{self.host}:{self.nats_port}"

    @property
    def nats_url(self) -> str:
        """The client URL with its credentials: what a tool connecting by hand uses."""
        login = f"{self.nats_login}@" if self.nats_login else ""
        return f"nats://{login}{self.host}:{self.nats_port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.monitor_port}"


def free_port_block(count: int) -> int:
    """A base port P such that P..P+count-1 look free now (bounded search on loopback).

    Chosen below the kernel's ephemeral range: outgoing connections (thousands of them
    in a device fleet) take ports from that range and would collide with a block in it.
    """
    low, high = _ephemeral_range()
    candidates = [(10_000, low)] if low - 10_000 > count else []
    candidates.append((high + 1, 65_000))
    rng = random.Random()
    for _ in range(200):
        start, end = rng.choice([c for c in candidates if c[1] - c[0] > count])
        base = rng.randrange(start, end - count)
        if all(_is_free(base + i) for i in range(count)):
            return base
    raise RuntimeError("no free block of loopback ports")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999  # Linux's default


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def node_specs(
    data_dir: Path, nodes: int, base_port: int, hosts: list[str] | None = None, nats_login: str = ""
) -> list[NodeSpec]:
    """Node i serves HTTP on P+i, NATS on P+10+i, monitoring on P+20+i, routes on P+30+i."""
    return [
        NodeSpec(
            name=f"node{i + 1}",
            data_dir=data_dir / f"node{i + 1}",
            http_port=base_port + i,
            nats_port=base_port + 10 + i,
            monitor_port=base_port + 20 + i,
            route_port=base_port + 30 + i,
            host=hosts[i] if hosts else "127.0.0.1",
            nats_login=nats_login,
        )
        for i in range(nodes)
    ]


@dataclass(slots=True)
class LocalCluster:
    """Starts and controls the processes of an N-node cluster on loopback."""

    data_dir: Path
    nodes: int = 3
    base_port: int = 0
    admin_token: str = ""
    # An automated source's token (approval none, from an accounts file every node applies):
    # what fleets issue with, since the admin's Actual alerts wait for a second person.
    issuer_token: str = ""
    # A duty room's author and approver (approval always): the fault suite's alerts that go
    # through the two-person rule while a fault is on.
    author_token: str = ""
    approver_token: str = ""
    sync_always: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    # The fault suite's hooks, empty by default: an address per node, a command prefix per
    # node for both processes (`ip netns exec NS`), one for its tocsin process only
    # (`faketime`), and extra environment per node.
    hosts: list[str] | None = None
    launchers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    tocsin_launchers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    node_extra_env: dict[str, dict[str, str]] = field(default_factory=dict)
    specs: list[NodeSpec] = field(init=False)
    # `user:password` of the cluster's NATS, kept in nats_password_file across restarts.
    nats_login: str = field(init=False)
    nats: dict[str, NatsServer] = field(init=False, default_factory=dict)
    tocsin: dict[str, asyncio.subprocess.Process] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.nodes not in (1, 3, 5):
            raise ValueError("a cluster has 1, 3 or 5 nodes")
        self.data_dir = self.data_dir.resolve()
        self.base_port = self.base_port or free_port_block(40)
        self.admin_token = self.admin_token or f"tca_{secrets.token_urlsafe(32)}"
        self.issuer_token = self.issuer_token or f"tci_{secrets.token_urlsafe(32)}"
        self.nats_login = f"{NATS_USER}:{load_or_create_password(self.nats_password_file)}"
        self.author_token = self.author_token or f"tcu_{secrets.token_urlsafe(32)}"
        self.approver_token = self.approver_token or f"tcu_{secrets.token_urlsafe(32)}"
        write_automated_source(self.accounts_file, self.issuer_token,
                               people=(self.author_token, self.approver_token))
        self.specs = node_specs(self.data_dir, self.nodes, self.base_port, self.hosts, self.nats_login)

    @property
    def replicas(self) -> int:
        return 3 if self.nodes >= 3 else 1

    @property
    def signing_key_file(self) -> Path:
        return self.data_dir / "keys" / "signing-key.pem"

    @property
    def accounts_file(self) -> Path:
        """Declares the automated source (no secret: its token by SHA-256 only)."""
        return self.data_dir / "keys" / "accounts.toml"

    @property
    def nats_password_file(self) -> Path:
        """One password for the cluster's NATS: its clients and its route peers."""
        return self.data_dir / "keys" / "nats-password"

    def spec(self, name: str) -> NodeSpec:
        return next(s for s in self.specs if s.name == name)

    async def start(self) -> None:
        """Start every nats-server, then every tocsin node; write cluster.json."""
        SigningKey.load_or_create(self.signing_key_file)
        await asyncio.gather(*(self.start_nats(s.name) for s in self.specs))
        await asyncio.gather(*(self.start_tocsin(s.name) for s in self.specs))
        self.write_description()

    def _nats_server(self, spec: NodeSpec) -> NatsServer:
        login = self.nats_login + "@"
        routes = tuple(f"nats-route://{login}{s.host}:{s.route_port}" for s in self.specs if s is not spec)
        cluster = ClusterSpec(name=CLUSTER_NAME, port=spec.route_port, routes=routes) if self.nodes > 1 else None
        return NatsServer(
            store_dir=spec.data_dir / "nats",
            name=spec.name,
            client_port=spec.nats_port,
            monitor_port=spec.monitor_port,
            cluster=cluster,
            sync_always=self.sync_always,
            host=spec.host,
            launcher=self.launchers.get(spec.name, ()),
            user=NATS_USER,
            password=self.nats_login.partition(":")[2],
        )

    async def start_nats(self, name: str) -> NatsServer:
        server = self._nats_server(self.spec(name))
        await server.start()
        self.nats[name] = server
        self.write_description()
        return server

    def node_env(self, spec: NodeSpec) -> dict[str, str]:
        own_first = [spec.nats_address] + [s.nats_address for s in self.specs if s is not spec]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOCSIN_")}
        env.update(
            TOCSIN_NODE_NAME=spec.name,
            TOCSIN_NATS_URL=",".join(own_first),
            TOCSIN_NATS_MONITOR_URL=spec.monitor_url,
            TOCSIN_REPLICAS=str(self.replicas),
            TOCSIN_NATS_USER=NATS_USER,
            TOCSIN_NATS_PASSWORD_FILE=str(self.nats_password_file),
            TOCSIN_SIGNING_KEY_FILE=str(self.signing_key_file),
            TOCSIN_ADMIN_TOKEN=self.admin_token,
            TOCSIN_ACCOUNTS_FILE=str(self.accounts_file),
            TOCSIN_PUBLIC_URL=spec.url,
        )
        env.update(self.extra_env)
        env.update(self.node_extra_env.get(spec.name, {}))
        return env

    async def start_tocsin(self, name: str, timeout_s: float = 60.0) -> asyncio.subprocess.Process:
        """Start the node's tocsin process and wait until it serves."""
        spec = self.spec(name)
        private_dir(spec.data_dir)
        log_file = open(spec.data_dir / "tocsin.log", "ab")  # noqa: SIM115 - owned by the child
        prefix = (*self.launchers.get(name, ()), *self.tocsin_launchers.get(name, ()))
        process = await asyncio.create_subprocess_exec(
            *prefix, sys.executable, "-m", "tocsin.cli.main", "serve",
            "--data", str(spec.data_dir), "--listen", f"{spec.host}:{spec.http_port}",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=log_file,
            env=self.node_env(spec), start_new_session=True, preexec_fn=die_with_parent,
        )
        log_file.close()
        self.tocsin[name] = process
        assert process.stdout is not None
        try:
            async with asyncio.timeout(timeout_s):
                line = await process.stdout.readline()
        except TimeoutError:
            raise RuntimeError(f"{name}: tocsin did not start in {timeout_s} s; see {spec.data_dir}/tocsin.log") from None
        if b"serving on" not in line:
            raise RuntimeError(f"{name}: tocsin failed to start; see {spec.data_dir}/tocsin.log")
        self.write_description()
        return process

    def pids(self, name: str) -> dict[str, int | None]:
        nats = self.nats.get(name)
        process = self.tocsin.get(name)
        return {
            "nats": nats.pid if nats else None,
            "tocsin": process.pid if process and process.returncode is None else None,
        }

    def signal(self, name: str, sig: signal.Signals, *, nats: bool = True, tocsin: bool = True) -> None:
        """Send a signal to the node's processes by pid (SIGKILL, SIGSTOP, SIGCONT, ...): to
        tocsin's whole process group, so that a node of several workers (docs/workers.md) is
        frozen or killed whole, its supervisor and every worker, as a host that fails."""
        pids = self.pids(name)
        if nats and pids["nats"] is not None:
            os.kill(pids["nats"], sig)
        if tocsin and pids["tocsin"] is not None:
            os.killpg(pids["tocsin"], sig)  # started in a session of its own: its group

    async def kill(self, name: str, *, nats: bool = True, tocsin: bool = True) -> None:
        """kill -9 the node's processes (tocsin's whole process group) and reap them."""
        if tocsin and (process := self.tocsin.get(name)) and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        if nats and (server := self.nats.get(name)):
            await server.kill()
        self.write_description()

    async def stop_node(self, name: str) -> None:
        """Stop the node in order: tocsin first (SIGTERM), then its nats-server."""
        process = self.tocsin.get(name)
        if process and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(15):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        if server := self.nats.get(name):
            await server.stop()
        self.write_description()

    async def stop(self) -> None:
        """Stop everything; nothing is left running."""
        for name in list(self.tocsin):
            if (p := self.tocsin[name]).returncode is None:
                p.send_signal(signal.SIGCONT)
        for server in self.nats.values():
            if server.pid:
                os.kill(server.pid, signal.SIGCONT)
        await asyncio.gather(*(self.stop_node(s.name) for s in self.specs), return_exceptions=True)

    def describe(self) -> dict[str, Any]:
        return {
            "nodes": [
                {
                    "name": s.name,
                    "url": s.url,
                    "nats_url": s.nats_url,
                    "monitor_url": s.monitor_url,
                    "data_dir": str(s.data_dir),
                    "pids": self.pids(s.name),
                }
                for s in self.specs
            ],
            "replicas": self.replicas,
            "admin_token": self.admin_token,
            "issuer_token": self.issuer_token,
            "signing_key_file": str(self.signing_key_file),
        }

    def write_description(self) -> None:
        # It holds the admin and issuer tokens.
        write_secret(private_dir(self.data_dir) / "cluster.json", json.dumps(self.describe(), indent=2))

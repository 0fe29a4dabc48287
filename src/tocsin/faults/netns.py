"""Network namespaces for partitions (F06): each node gets its own namespace and address.

A bridge on the host joins one veth pair per node; the harness, the fleet and the issuer
stay on the host and reach every node through it. Cutting a node off from its peers (but
not from clients) adds blackhole routes on both sides for the other side's address (this
kernel has no `prio` qdisc for tc filters, and there is no iptables): packets between the
node and its peers are dropped silently, as on a cut link; its nats-server loses its
routes, its tocsin keeps its clients.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=10)


def _in(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *args], check=check, capture_output=True, text=True,
                          timeout=10)


def available() -> str | None:
    """None when namespaces, veth pairs and tc filters work here; else why not."""
    probe = "tocsin-probe"
    try:
        _ip("netns", "add", probe)
        try:
            _in(probe, "ip", "link", "set", "lo", "up")
            _in(probe, "ip", "route", "add", "blackhole", "10.9.9.9/32")
            _ip("link", "add", "tfprobe0", "type", "veth", "peer", "name", "tfprobe1")
            _ip("link", "del", "tfprobe0")
        finally:
            _ip("netns", "del", probe, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        return f"network namespaces, veth pairs or blackhole routes unavailable: {detail.strip()[:200]}"
    return None


@dataclass(slots=True)
class Namespaces:
    """One namespace per node on a private /24, joined by a host bridge."""

    tag: int  # 0..249, keeps concurrent runs apart
    nodes: int = 3
    created: list[str] = field(default_factory=list)
    cut: set[tuple[int, int]] = field(default_factory=set)

    @property
    def bridge(self) -> str:
        return f"tfb{self.tag}"

    def ns(self, i: int) -> str:
        return f"tocsin-f{self.tag}-n{i}"

    def host(self, i: int) -> str:
        return f"10.213.{self.tag}.{10 + i}"

    @property
    def hosts(self) -> list[str]:
        return [self.host(i) for i in range(self.nodes)]

    def launcher(self, i: int) -> tuple[str, ...]:
        # `ip netns exec` execs the command: the pid LocalCluster keeps is the process's own.
        return ("ip", "netns", "exec", self.ns(i))

    def setup(self) -> None:
        self.teardown()
        _ip("link", "add", self.bridge, "type", "bridge")
        self.created.append(self.bridge)
        _ip("addr", "add", f"10.213.{self.tag}.1/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i in range(self.nodes):
            ns, outside, inside = self.ns(i), f"tfv{self.tag}n{i}", f"tfp{self.tag}n{i}"
            _ip("netns", "add", ns)
            self.created.append(ns)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", ns)
            _ip("link", "set", outside, "master", self.bridge)
            _ip("link", "set", outside, "up")
            _in(ns, "ip", "link", "set", "lo", "up")
            _in(ns, "ip", "link", "set", inside, "name", "eth0")
            _in(ns, "ip", "addr", "add", f"{self.host(i)}/24", "dev", "eth0")
            _in(ns, "ip", "link", "set", "eth0", "up")
            _in(ns, "ip", "route", "add", "default", "via", f"10.213.{self.tag}.1")

    def partition(self, i: int) -> None:
        """Drop every packet between node i and the other nodes (clients still reach it)."""
        for j in range(self.nodes):
            if j != i:
                for a, b in ((i, j), (j, i)):
                    _in(self.ns(a), "ip", "route", "add", "blackhole", f"{self.host(b)}/32")
                    self.cut.add((a, b))

    def heal(self) -> None:
        for a, b in sorted(self.cut):
            _in(self.ns(a), "ip", "route", "del", "blackhole", f"{self.host(b)}/32", check=False)
        self.cut.clear()

    def teardown(self) -> None:
        for i in range(self.nodes):
            _ip("netns", "del", self.ns(i), check=False)
            _ip("link", "del", f"tfv{self.tag}n{i}", check=False)
        _ip("link", "del", self.bridge, check=False)
        self.created.clear()

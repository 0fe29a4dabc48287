"""Bench: a year in an hour (F23). One simulated year of a 3-node deployment against a fresh one.

    python bench/year_bench.py [--mode full|quick|smoke] [--alerts N] [--alert-rate R]
                               [--probe-s S] [--accept N] [--tmp DIR] [--keep] [--save FILE]

Two 3-node LocalClusters (R3, `sync_interval: always`), one after the other, with the same
settings: a FRESH one, and an AGED one that first lives through a year. Time is compressed
by one factor K = one year / the year's wall time: alert lifetimes, the default lifetime
and TOCSIN_RETENTION_AFTER_EXPIRY_S are divided by K (7 days -> ~24 s in the full mode).

The year on the aged cluster:
- real alerts (50,000 in the full mode) through the issuer API, paced at `--alert-rate`
  and spread over the three nodes: accept, ledger, R3 publish, per-message TTL. Lifetimes
  1 h to 48 h (scaled); one in five has no <expires>, so the default lifetime applies;
- the nodes' own probers, at their real rate (one System alert every 5 s per node);
- the bulk of the year's probes (3 nodes x one per 5 s = 18.9 million) preloaded straight
  into the alerts stream as probe-shaped messages: the prober's subject scheme, accept's
  headers (store/jetstream.py `_headers`), a TTL, at the highest rate R3 sustains here
  (pipelined publishes, bounded in flight), for at most `--probe-s` seconds. They are
  already expired when written (a probe's 30 s of life is nothing at this scale), so every
  follower reads them and drops them, and the stream lets them go one second later.

Then the year ends, and the bench waits until what it left could still be kept (the
scaled retention after the longest lifetime). Each cluster is then measured the same way:
the stream (bytes, messages, deleted, store dir on disk), the ledger (bytes, rows), accept
p50/p99 (`--accept` sequential requests to node1, one keep-alive connection), node RSS
(tocsin and nats-server of node1), reconciler CPU per pass (a Reconciler in this process on
node1's ledger file and the cluster's stream, as the node runs it; process CPU per pass),
and restart time to ready (node3's tocsin and nats-server killed -9, started again, until
its /readyz answers 200, which needs its first canary). Every figure but the ledger should
be within 10 % of the fresh cluster's: printed with the ratio and PASS/MISS. Every loop is
bounded in count and time; every process is stopped by pid at the end and on error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sqlite3
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.accept_bench import TocsinIssuer, accept_polygon, stats  # noqa: E402
from bench.serve_bench import XML, machine, proc_cpu_s, rss_bytes, run_in_workdir  # noqa: E402
from tests.samples import alert_xml  # noqa: E402
from tocsin.cap.parse import parse_xml  # noqa: E402
from tocsin.cap.render import to_xml  # noqa: E402
from tocsin.cluster.local import LocalCluster  # noqa: E402
from tocsin.pipeline.reconcile import Reconciler  # noqa: E402
from tocsin.prober.probe import prober_sender, probe_xml  # noqa: E402
from tocsin.settings import Settings  # noqa: E402
from tocsin.signing import SigningKey  # noqa: E402
from tocsin.store.base import AlertId, Envelope, alert_id_for  # noqa: E402
from tocsin.store.jetstream import JetStreamStore, _headers, connect, subject_for  # noqa: E402
from tocsin.store.ledger import Ledger  # noqa: E402

YEAR_S = 365 * 86400.0
# The probe rate of a deployment on its defaults: what a year's probes are counted by.
PROBE_INTERVAL_S = Settings().probe_interval_s
STREAM = "TOCSIN_ALERTS"
# Real lifetimes (hours) and their weights; None: no <expires>, the default lifetime applies.
LIFETIMES_H: tuple[tuple[float | None, int], ...] = ((1, 20), (3, 20), (6, 15), (12, 10), (24, 10), (48, 5), (None, 20))
# CAP times have whole seconds and an accept under the year's load can take a second:
# no alert lives less than this, whatever the scale (else some are refused `cap.expired`).
MIN_LIFETIME_S = 4.0
# The nodes' own probes: the shortest life the settings allow, the same in both clusters.
PROBE_ENV = {"TOCSIN_PROBE_EXPIRES_S": "5", "TOCSIN_PROBE_DEADLINE_S": "10", "TOCSIN_PROBE_RETENTION_S": "15"}
PROBE_RETENTION_S = 15.0
ISSUE_IN_FLIGHT = 32
PRELOAD_IN_FLIGHT = 384
TOLERANCE = 0.10
# The preload waits while a node's follower is further behind than this.
FOLLOWER_LAG_MAX = 2000


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """The run's sizes; the year's wall time is alerts / alert_rate."""

    alerts: int
    alert_rate: float
    probe_s: float
    accept: int
    reconcile_passes: int
    restarts: int = 2

    @property
    def year_wall_s(self) -> float:
        return self.alerts / self.alert_rate

    @property
    def scale(self) -> float:
        return YEAR_S / self.year_wall_s

    def scaled(self, real_s: float) -> float:
        return real_s / self.scale

    @property
    def retention_after_expiry_s(self) -> float:
        return max(1.0, self.scaled(7 * 86400.0))

    @property
    def default_lifetime_s(self) -> float:
        return max(MIN_LIFETIME_S, self.scaled(24 * 3600.0))

    @property
    def longest_lifetime_s(self) -> float:
        return max(MIN_LIFETIME_S, self.scaled(48 * 3600.0), self.default_lifetime_s)

    def env(self) -> dict[str, str]:
        # The publish dedupe window is scaled too: at the preload's rate, 120 s of message
        # ids would be a rate's cost in nats-server memory, not a year's.
        return {**PROBE_ENV, "TOCSIN_RETENTION_AFTER_EXPIRY_S": f"{self.retention_after_expiry_s:.3f}",
                "TOCSIN_DUPLICATE_WINDOW_S": f"{max(1.0, self.scaled(120.0)):.3f}",
                "TOCSIN_DEFAULT_LIFETIME_S": f"{self.default_lifetime_s:.3f}",
                # The Atom feeds' window (docs/feeds.md), scaled: within the retention, as it must be.
                "TOCSIN_FEED_WINDOW_S": f"{min(self.scaled(24 * 3600.0), self.retention_after_expiry_s):.3f}"}


MODES = {
    "full": Plan(alerts=50_000, alert_rate=50.0, probe_s=1000.0, accept=400, reconcile_passes=13),
    "quick": Plan(alerts=4_000, alert_rate=40.0, probe_s=100.0, accept=300, reconcile_passes=13),
    "smoke": Plan(alerts=150, alert_rate=30.0, probe_s=5.0, accept=40, reconcile_passes=3, restarts=1),
}


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- the year -------------------------------------------------------------------------------


class YearIssuer:
    """The year's real alerts, paced, over the three nodes; counts every answer."""

    def __init__(self, urls: list[str], token: str, plan: Plan, seed: int = 23) -> None:
        self.urls, self.plan = urls, plan
        self.rng = random.Random(seed)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": XML}
        limits = httpx.Limits(max_connections=ISSUE_IN_FLIGHT, max_keepalive_connections=ISSUE_IN_FLIGHT)
        self.http = httpx.AsyncClient(headers=headers, timeout=30, limits=limits)
        self.statuses: dict[str, int] = {}
        self.without_expires = 0
        self.problems: set[str] = set()

    def _document(self, n: int) -> bytes:
        hours = self.rng.choices([h for h, _ in LIFETIMES_H], weights=[w for _, w in LIFETIMES_H])[0]
        if hours is None:
            self.without_expires += 1
            expires = None
        else:
            expires = max(MIN_LIFETIME_S, self.plan.scaled(hours * 3600.0))
        return alert_xml(polygon=accept_polygon(n), headline=f"year {n}", expires_in_s=expires)

    async def _one(self, n: int, gate: asyncio.Semaphore) -> None:
        try:
            response = await self.http.post(f"{self.urls[n % len(self.urls)]}/api/v1/alerts", content=self._document(n))
            key = str(response.status_code)
            if response.status_code != 201 and len(self.problems) < 5:
                self.problems.add(response.text[:160])
        except httpx.HTTPError as exc:
            key = type(exc).__name__
        finally:
            gate.release()
        self.statuses[key] = self.statuses.get(key, 0) + 1

    async def run(self) -> None:
        """Every alert at its time; bounded in flight and by 1.5 x the year's wall time."""
        gate = asyncio.Semaphore(ISSUE_IN_FLIGHT)
        loop = asyncio.get_running_loop()
        started = loop.time()
        give_up = started + 1.5 * self.plan.year_wall_s + 10
        async with asyncio.TaskGroup() as tasks:
            for n in range(self.plan.alerts):
                delay = started + n / self.plan.alert_rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await gate.acquire()
                if loop.time() > give_up:
                    gate.release()
                    self.statuses["not sent (time bound)"] = self.plan.alerts - n
                    break
                tasks.create_task(self._one(n, gate))
        await self.http.aclose()


class ProbePreloader:
    """Probe-shaped messages straight into the stream, pipelined, bounded in flight."""

    def __init__(self, cluster: LocalCluster, goal: int, seconds: float) -> None:
        self.cluster, self.goal, self.seconds = cluster, goal, seconds
        self.signer = SigningKey.load_or_create(cluster.signing_key_file)
        self.stored = 0
        self.failed = 0
        self.wall_s = 0.0
        self.max_lag = 0
        self.paused_s = 0.0
        # Set while every node's follower keeps up; the workers wait on it.
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._templates: dict[str, tuple[int, bytes]] = {}

    def _template(self, node: str, second: int) -> bytes:
        """The node's probe as accept renders it, sent two seconds ago and already expired."""
        cached = self._templates.get(node)
        if cached is not None and cached[0] == second:
            return cached[1]
        sent = datetime.fromtimestamp(second - 2, UTC)
        raw = probe_xml(sender=prober_sender(node), identifier="probe-preload-0000000000", sent=sent, expires_in_s=1)
        rendered = to_xml(parse_xml(raw))
        self._templates[node] = (second, rendered)
        return rendered

    def envelope(self, n: int) -> Envelope:
        node = self.cluster.specs[n % len(self.cluster.specs)].name
        identifier = f"probe-preload-{n:010d}"
        now = datetime.now(UTC)
        payload = self._template(node, int(now.timestamp())).replace(b"probe-preload-0000000000", identifier.encode())
        return Envelope(
            alert_id=alert_id_for(prober_sender(node), identifier), payload=payload,
            sig=self.signer.sign(payload), kid=self.signer.kid, issuer=f"prober:{node}", node=node,
            accepted_at=now, expires_at=now - timedelta(seconds=1), retain_until=now + timedelta(seconds=1),
        )

    async def _worker(self, js: Any, counter: list[int], deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while counter[0] < self.goal and loop.time() < deadline:
            await self.flowing.wait()
            n = counter[0]
            counter[0] += 1
            env = self.envelope(n)
            try:
                await js.publish(subject_for(STREAM, env.alert_id), env.payload, stream=STREAM,
                                 headers=_headers(env), timeout=10)
                self.stored += 1
            except Exception:  # a refusal or timeout: counted, the year goes on
                self.failed += 1

    async def _pace(self, deadline: float) -> None:
        """Hold the workers while a node's follower is more than FOLLOWER_LAG_MAX behind.

        R3 takes probes faster than a node's follower reads them here; unchecked, each
        node would buffer a backlog (memory, a red /readyz) that no real year has.
        """
        loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(timeout=2) as http:
            while loop.time() < deadline:
                lag = max([await follower_lag(http, spec.url) for spec in self.cluster.specs])
                self.max_lag = max(self.max_lag, lag)
                if lag > FOLLOWER_LAG_MAX:
                    self.flowing.clear()
                elif lag < FOLLOWER_LAG_MAX // 2:
                    self.flowing.set()
                if not self.flowing.is_set():
                    self.paused_s += 0.5
                await asyncio.sleep(0.5)
        self.flowing.set()

    async def run(self) -> None:
        import nats

        connections = [await nats.connect(s.nats_url, connect_timeout=5) for s in self.cluster.specs]
        loop = asyncio.get_running_loop()
        started = loop.time()
        counter = [0]
        try:
            per = PRELOAD_IN_FLIGHT // len(connections)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._pace(started + self.seconds))
                for nc in connections:
                    js = nc.jetstream(timeout=10)
                    for _ in range(per):
                        tasks.create_task(self._worker(js, counter, started + self.seconds))
        finally:
            self.wall_s = loop.time() - started
            for nc in connections:
                await nc.close()


# -- measuring a cluster --------------------------------------------------------------------


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def ledger_figures(data_dir: Path) -> dict[str, int]:
    path = data_dir / "ledger.sqlite3"
    files = [path, path.with_name(path.name + "-wal")]
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT count(*) FROM accepted").fetchone()[0]
        probes = db.execute("SELECT count(*) FROM probes").fetchone()[0]
    return {"bytes": sum(f.stat().st_size for f in files if f.exists()), "rows": int(rows), "probe_rows": int(probes)}


async def stream_state(nats_url: str) -> dict[str, int]:
    import nats

    nc = await nats.connect(nats_url, connect_timeout=5)
    try:
        info = await nc.jetstream(timeout=5).stream_info(STREAM)
    finally:
        await nc.close()
    s = info.state
    return {"bytes": int(s.bytes), "messages": int(s.messages), "first_seq": int(s.first_seq),
            "last_seq": int(s.last_seq), "deleted": int(s.num_deleted or 0)}


async def follower_lag(http: httpx.AsyncClient, url: str) -> int:
    """How many stream messages the node's follower has yet to read (its /readyz says)."""
    try:
        checks = (await http.get(f"{url}/readyz")).json()["checks"]
        return int(checks["follower"]["value"]["lag"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return 0


async def wait_ready(url: str, timeout_s: float) -> float:
    """Seconds until GET /readyz answers 200 (polled every 50 ms, bounded)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with httpx.AsyncClient(timeout=2) as http:
        while loop.time() - started < timeout_s:
            try:
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    return loop.time() - started
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} not ready within {timeout_s} s")


async def accept_latency(clusters: dict[str, LocalCluster], count: int, blocks: int = 4) -> dict[str, dict[str, float]]:
    """Sequential accepts to each cluster's node1, in alternating blocks so drift hits both alike."""
    issuers = {name: TocsinIssuer(c.specs[0].url, c.issuer_token) for name, c in clusters.items()}
    times: dict[str, list[float]] = {name: [] for name in clusters}
    try:
        for block in range(blocks):
            for name, issuer in issuers.items():
                for n in range(block * count // blocks, (block + 1) * count // blocks):
                    elapsed = await issuer.one(100_000 + n)
                    if elapsed is not None:
                        times[name].append(elapsed)
    finally:
        for issuer in issuers.values():
            await issuer.close()
    return {name: {**stats(times[name]), "refused": len(issuers[name].errors)} for name in clusters}


async def reconciler_cpu(cluster: LocalCluster, plan: Plan) -> dict[str, float]:
    """CPU of this process per Reconciler pass over node1's ledger and the cluster's stream."""
    spec = cluster.specs[0]
    settings = Settings(stream=STREAM, replicas=cluster.replicas)
    nc = await connect(settings, [spec.nats_url], name="year-bench-reconciler")
    ledger = Ledger(spec.data_dir / "ledger.sqlite3")
    reconciler = Reconciler(
        JetStreamStore(nc, settings), ledger, interval_s=5.0, settle_s=0.0, clock=lambda: datetime.now(UTC),
        legacy_lifetime_s=plan.default_lifetime_s + plan.retention_after_expiry_s, forget_before_s=0.5, sweep_s=60.0,
    )
    cpu: list[float] = []
    try:
        for _ in range(plan.reconcile_passes):
            before = time.process_time()
            await reconciler.reconcile()
            cpu.append(time.process_time() - before)
    finally:
        ledger.close()
        await nc.close()
    steady = cpu[1:] or cpu
    return {"first_pass_ms": cpu[0] * 1000, "per_pass_ms": sum(steady) / len(steady) * 1000,
            "window": reconciler.window_size, "checked_last_pass": reconciler.checked_last_pass,
            "republished": reconciler.republished}


async def restart_to_ready(cluster: LocalCluster, name: str) -> dict[str, float]:
    """kill -9 the node's tocsin and nats-server, start both again; seconds until /readyz is 200."""
    await cluster.kill(name)
    began = time.monotonic()
    await cluster.start_nats(name)
    nats_s = time.monotonic() - began
    await cluster.start_tocsin(name, timeout_s=120)
    serving_s = time.monotonic() - began
    await wait_ready(cluster.spec(name).url, 120)
    return {"ready_s": time.monotonic() - began, "nats_s": nats_s, "serving_s": serving_s}


async def measure(clusters: dict[str, LocalCluster], plan: Plan) -> dict[str, dict[str, Any]]:
    """The same figures of each cluster, taken one cluster after the other (accept interleaved)."""
    figures: dict[str, dict[str, Any]] = {name: {"accept": a} for name, a in
                                          (await accept_latency(clusters, plan.accept)).items()}
    for name, cluster in clusters.items():
        node1, f = cluster.specs[0], figures[name]
        f["stream"] = await stream_state(node1.nats_url)
        f["stream"]["disk_bytes"] = tree_bytes(node1.data_dir / "nats")
        f["ledger"] = ledger_figures(node1.data_dir)
        pids = cluster.pids(node1.name)
        f["rss"] = {"tocsin": rss_bytes(pids["tocsin"]), "nats": rss_bytes(pids["nats"]),
                    "tocsin_cpu_s": proc_cpu_s(pids["tocsin"])}
    for name, cluster in clusters.items():
        figures[name]["reconciler"] = await reconciler_cpu(cluster, plan)
    restarts: dict[str, list[dict[str, float]]] = {name: [] for name in clusters}
    for _ in range(plan.restarts):
        for name, cluster in clusters.items():
            restarts[name].append(await restart_to_ready(cluster, cluster.specs[-1].name))
            say(f"{name}: node3 restarted: " + ", ".join(f"{k} {v:.2f}" for k, v in restarts[name][-1].items()))
    for name in clusters:
        figures[name]["restarts"] = restarts[name]
        figures[name]["restart_s"] = sum(r["ready_s"] for r in restarts[name]) / plan.restarts
    return figures


async def started(cluster: LocalCluster, name: str) -> float:
    """Start the cluster and wait until every node is ready; when it started (monotonic)."""
    await cluster.start()
    up = time.monotonic()
    for spec in cluster.specs:
        await wait_ready(spec.url, 120)
    say(f"{name}: 3 nodes ready in {time.monotonic() - up:.1f} s")
    return up


async def live_a_year(cluster: LocalCluster, plan: Plan) -> dict[str, Any]:
    goal = int(len(cluster.specs) * YEAR_S / PROBE_INTERVAL_S)
    issuer = YearIssuer([s.url for s in cluster.specs], cluster.issuer_token, plan)
    preloader = ProbePreloader(cluster, goal, plan.probe_s)
    say(f"aged: a year in {plan.year_wall_s:.0f} s (K = {plan.scale:.0f}): {plan.alerts} alerts at "
        f"{plan.alert_rate}/s; up to {goal} probes preloaded for at most {plan.probe_s:.0f} s")
    began = time.monotonic()
    progress = asyncio.create_task(report_progress(preloader, issuer))
    try:
        await asyncio.gather(issuer.run(), preloader.run())
    finally:
        progress.cancel()
    wall = time.monotonic() - began
    probes_by_probers = int(len(cluster.specs) * wall / PROBE_INTERVAL_S)
    return {"wall_s": wall, "alerts": issuer.statuses, "without_expires": issuer.without_expires,
            "problems": sorted(issuer.problems),
            "probes_preloaded": preloader.stored, "probes_failed": preloader.failed,
            "preload_rate": preloader.stored / max(preloader.wall_s, 1e-9), "probes_by_probers": probes_by_probers,
            "preload_paused_s": preloader.paused_s, "max_follower_lag": preloader.max_lag,
            "probe_goal": goal, "probe_share": (preloader.stored + probes_by_probers) / goal}


async def report_progress(preloader: ProbePreloader, issuer: YearIssuer, period_s: float = 30.0) -> None:
    began = time.monotonic()
    while True:
        await asyncio.sleep(period_s)
        rate = preloader.stored / (time.monotonic() - began)
        say(f"aged: {time.monotonic() - began:.0f} s: probes preloaded {preloader.stored} ({rate:.0f}/s), "
            f"failed {preloader.failed}; alerts {issuer.statuses}")


async def run(plan: Plan, workdir: Path) -> dict[str, Any]:
    """The aged cluster lives its year; then a fresh one starts beside it; both are measured."""
    clusters = {name: LocalCluster(workdir / name, nodes=3, extra_env=plan.env()) for name in ("fresh", "aged")}
    try:
        await started(clusters["aged"], "aged")
        year = await live_a_year(clusters["aged"], plan)
        ended = time.monotonic()
        # What the year left may be kept this long (its nodes' own probes included).
        drain_s = max(plan.longest_lifetime_s + plan.retention_after_expiry_s, PROBE_RETENTION_S) + 3.0
        say(f"aged: year done in {year['wall_s']:.0f} s; its retention ends in {drain_s:.0f} s; fresh cluster starting")
        for spec in clusters["aged"].specs:  # every follower caught up, every canary fresh
            await wait_ready(spec.url, 300)
        up = await started(clusters["fresh"], "fresh")
        # Both hold their own probes' steady state before they are measured.
        await asyncio.sleep(max(0.0, ended + drain_s - time.monotonic(), up + PROBE_RETENTION_S + 2 - time.monotonic()))
        figures = await measure(clusters, plan)
    finally:
        for cluster in clusters.values():
            await cluster.stop()
    figures["aged"]["year"] = year
    return {"machine": machine(), "plan": {**asdict(plan), "scale": plan.scale,
                                           "retention_after_expiry_s": plan.retention_after_expiry_s},
            **figures}


# -- the report -----------------------------------------------------------------------------


# (label, path into the figures, unit)
ROWS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("stream bytes", ("stream", "bytes"), "B"),
    ("stream messages", ("stream", "messages"), ""),
    ("stream store on disk (node1)", ("stream", "disk_bytes"), "B"),
    ("restart to ready (node3)", ("restart_s",), "s"),
    ("accept p50", ("accept", "p50_ms"), "ms"),
    ("accept p99", ("accept", "p99_ms"), "ms"),
    ("reconciler CPU per pass", ("reconciler", "per_pass_ms"), "ms"),
    ("reconciler first pass CPU", ("reconciler", "first_pass_ms"), "ms"),
    ("node1 tocsin RSS", ("rss", "tocsin"), "B"),
    ("node1 nats-server RSS", ("rss", "nats"), "B"),
)
LEDGER_ROWS = (("ledger bytes (node1)", ("ledger", "bytes"), "B"), ("ledger rows (node1)", ("ledger", "rows"), ""))


def _get(figures: dict[str, Any], path: tuple[str, ...]) -> float:
    value: Any = figures
    for key in path:
        value = value[key]
    return float(value)


def _fmt(value: float, unit: str) -> str:
    if unit == "B":
        return f"{value / 2**20:.2f} MiB" if value >= 2**20 else f"{value / 1024:.1f} KiB"
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    return f"{value:.0f}"


def table(report: dict[str, Any]) -> str:
    fresh, aged, plan = report["fresh"], report["aged"], report["plan"]
    year = aged["year"]
    lines = [
        f"a year in an hour: 3 nodes, R3, sync always; K = {plan['scale']:.0f} (7 days of retention -> "
        f"{plan['retention_after_expiry_s']:.1f} s)",
        f"year: {year['wall_s']:.0f} s wall; alerts {year['alerts']} ({year['without_expires']} without <expires>)",
        f"probes: {year['probes_preloaded']} preloaded at {year['preload_rate']:.0f}/s "
        f"({year['probes_failed']} failed) + {year['probes_by_probers']} by the nodes' probers = "
        f"{100 * year['probe_share']:.2f} % of the year's {year['probe_goal']}; preload held "
        f"{year['preload_paused_s']:.0f} s for followers (max lag {year['max_follower_lag']})",
        *([f"refusals: {year['problems']}"] if year.get("problems") else []),
        "",
        f"{'figure':32} {'fresh':>12} {'aged':>12} {'aged/fresh':>10}  target within 10 %",
    ]
    for label, path, unit in ROWS:
        a, f = _get(aged, path), _get(fresh, path)
        ratio = a / f if f else (1.0 if a == f else math.inf)
        verdict = "PASS" if abs(ratio - 1) <= TOLERANCE else "MISS"
        lines.append(f"{label:32} {_fmt(f, unit):>12} {_fmt(a, unit):>12} {ratio:>10.3f}  {verdict}")
    for label, path, unit in LEDGER_ROWS:
        a, f = _get(aged, path), _get(fresh, path)
        lines.append(f"{label:32} {_fmt(f, unit):>12} {_fmt(a, unit):>12} {a / f if f else math.inf:>10.3f}  "
                     "(grows by design)")
    lines += ["", "details: " + json.dumps({k: {x: v for x, v in report[k].items() if x != "year"}
                                              for k in ("fresh", "aged")}, default=str)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="full")
    parser.add_argument("--alerts", type=int, help="real alerts in the year")
    parser.add_argument("--alert-rate", type=float, help="alerts per second (sets the year's wall time)")
    parser.add_argument("--probe-s", type=float, help="preload probes for at most this many seconds")
    parser.add_argument("--accept", type=int, help="sequential accepts measured per cluster")
    parser.add_argument("--tmp", default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--save", default="")
    args = parser.parse_args()
    plan = MODES[args.mode]
    changes = {k: v for k, v in (("alerts", args.alerts), ("alert_rate", args.alert_rate),
                                 ("probe_s", args.probe_s), ("accept", args.accept)) if v is not None}
    plan = replace(plan, **changes)
    run_in_workdir("tocsin-year-", args, lambda workdir: run(plan, workdir), table)

if __name__ == "__main__":
    main()

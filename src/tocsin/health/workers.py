"""One node of several worker processes, one face to the outside (docs/workers.md).

Each worker listens on the node's ports (SO_REUSEPORT) and on a private loopback port of its
own, named in `DATA_DIR/workers/<index>.json` (written by the worker, removed by the
supervisor when it exits). Every worker asks the others' `/readyz` on their private ports
each readiness interval and keeps the answers; the node's `/readyz`, whichever worker takes
the request, is its own report merged with theirs, so a worker that is stuck (an answer too
old), dead or not ready turns the node red and is named. `/metrics` on the public port sums
the workers' metrics, read from their private ports when scraped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import operator
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# Metrics of the node that are not sums of the workers' (a gauge per worker that says
# "this worker is ready" is ready for the node only when every worker's is).
LEAST = frozenset({"tocsin_ready", "tocsin_readiness_check"})
MOST = frozenset({"tocsin_canary_age_seconds", "tocsin_follower_behind_seconds", "tocsin_pending_deliveries"})
# The node's /metrics reads the other workers at most this often: scrapes in between get the
# same merge, so a flood of scrapes costs each worker one round of reads a second, not one each.
METRICS_FRESH_S = 1.0


def registry_dir(data_dir: Path) -> Path:
    return data_dir / "workers"


def entry_path(data_dir: Path, index: int) -> Path:
    return registry_dir(data_dir) / f"{index}.json"


def register(data_dir: Path, index: int, url: str) -> None:
    """Say where this worker's private listener is (atomically: a reader never sees half)."""
    path = entry_path(data_dir, index)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps({"index": index, "pid": os.getpid(), "url": url}), encoding="utf-8")
    temporary.replace(path)


def read_entry(data_dir: Path, index: int) -> dict[str, Any] | None:
    """A worker's entry, or None when it has none (not started, or exited)."""
    try:
        entry = json.loads(entry_path(data_dir, index).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("url"), str) or not isinstance(entry.get("pid"), int):
        return None
    return entry


@dataclass(slots=True)
class _Answer:
    at: float | None = None  # monotonic time of the last answer
    report: dict[str, Any] | None = None
    pid: int | None = None
    error: str | None = None


@dataclass(slots=True, kw_only=True)
class WorkerPeers:
    """What the node's other workers said of their readiness, and the merged view."""

    data_dir: Path
    index: int
    count: int
    interval_s: float
    timeout_s: float
    private_port: int = 0  # this worker's private listener: requests there are answered locally
    _answers: dict[int, _Answer] = field(default_factory=dict)
    _http: httpx.AsyncClient | None = None  # while `run` runs: its connections to the others
    _merged: tuple[float, bytes] | None = None  # the last merged metrics, and when
    _merging: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def max_age_s(self) -> float:
        """An answer older than this is a worker that stopped answering (stuck or gone)."""
        return 3 * self.interval_s + self.timeout_s

    def others(self) -> list[int]:
        return [i for i in range(self.count) if i != self.index]

    async def run(self) -> None:
        """Ask every other worker's /readyz each interval, all at once, each within the timeout."""
        async with httpx.AsyncClient(timeout=self.timeout_s) as http:
            self._http = http
            try:
                while True:
                    started = time.monotonic()
                    await asyncio.gather(*(self._ask(http, i) for i in self.others()))
                    await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))
            finally:
                self._http = None

    async def _ask(self, http: httpx.AsyncClient, index: int) -> None:
        answer = self._answers.setdefault(index, _Answer())
        entry = read_entry(self.data_dir, index)
        if entry is None:
            answer.report, answer.error = None, "is not running (starting or restarting)"
            return
        try:
            response = await http.get(f"{entry['url']}/readyz")
            report = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            answer.error = f"did not answer /readyz: {type(exc).__name__}"
            return
        if not isinstance(report, dict) or not isinstance(report.get("checks"), dict):
            answer.error = "answered /readyz with no report"
            return
        answer.at, answer.report, answer.pid, answer.error = time.monotonic(), report, entry["pid"], None

    def merge(self, own: dict[str, Any]) -> dict[str, Any]:
        """The node's readiness: this worker's report, every other worker's failing checks
        added under their names (the detail says which worker), and a `workers` check."""
        now = time.monotonic()
        checks: dict[str, dict[str, Any]] = dict(own["checks"])
        failing = set(own["failing"])
        value: dict[str, dict[str, Any]] = {
            str(self.index): {"pid": os.getpid(), "ready": own["ready"], "failing": own["failing"], "age_s": 0.0}}
        problems = []
        for i in self.others():
            answer = self._answers.get(i)
            if answer is None or answer.report is None or answer.at is None:
                problems.append(f"worker {i} {answer.error if answer and answer.error else 'has not answered yet'}")
                value[str(i)] = {"pid": None, "ready": False, "failing": None, "age_s": None}
                continue
            age = now - answer.at
            report = answer.report
            value[str(i)] = {"pid": answer.pid, "ready": bool(report.get("ready")), "age_s": round(age, 3),
                             "failing": report.get("failing")}
            if age > self.max_age_s:
                problems.append(f"worker {i} (pid {answer.pid}) has not answered for {age:.1f} s"
                                + (f" ({answer.error})" if answer.error else ""))
                continue
            theirs = [str(name) for name in report.get("failing") or []]
            if theirs:
                problems.append(f"worker {i} (pid {answer.pid}) is not ready: {', '.join(theirs)}")
            for name in theirs:
                check = report["checks"].get(name)
                failing.add(name)
                if isinstance(check, dict) and checks.get(name, {}).get("ok", True):
                    checks[name] = {**check, "detail": f"worker {i}: {check.get('detail')}"}
        checks["workers"] = {
            "ok": not problems, "age_s": 0.0, "max_age_s": round(self.max_age_s, 3), "value": value,
            "detail": "; ".join(problems) if problems else f"{self.count} workers ready",
        }
        if problems:
            failing.add("workers")
        ordered = sorted(failing)
        return {**own, "status": "not ready" if ordered else "ready", "ready": not ordered, "failing": ordered,
                "checks": dict(sorted(checks.items()))}

    async def metrics(self, own: Callable[[], bytes]) -> bytes:
        """The node's metrics: every worker's, read from their private ports (at most once
        every METRICS_FRESH_S, with the client `run` holds), merged."""
        async with self._merging:
            if self._merged is not None and time.monotonic() - self._merged[0] < METRICS_FRESH_S:
                return self._merged[1]
            http = self._http
            theirs = [] if http is None else await asyncio.gather(*(self._metrics_of(http, i) for i in self.others()))
            texts = [own().decode("utf-8"), *(t for t in theirs if t is not None)]
            merged = merge_metrics(texts, configured=self.count)
            self._merged = (time.monotonic(), merged)
            return merged

    async def _metrics_of(self, http: httpx.AsyncClient, index: int) -> str | None:
        entry = read_entry(self.data_dir, index)
        if entry is None:
            return None
        try:
            response = await http.get(f"{entry['url']}/metrics")
        except httpx.HTTPError:
            return None
        return response.text if response.status_code == 200 else None


def _fold(family: str, sample: str) -> Any:
    """How two workers' values of a sample make the node's: the earliest creation time, the
    least or greatest of the gauges of LEAST and MOST, the sum of everything else."""
    if sample.endswith("_created") or family in LEAST:
        return min
    if family in MOST:
        return max
    return operator.add


class _Collected(Collector):
    """Metric families already made, for generate_latest."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Any:
        return iter(self._families)


def merge_metrics(texts: list[str], *, configured: int) -> bytes:
    """Prometheus texts of the workers as one: sums, except the gauges of LEAST (the least
    worker's value) and MOST (the greatest), and the `_created` times (the earliest)."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = defaultdict(dict)
    for text in texts:
        for family in text_string_to_metric_families(text):
            kept = families.setdefault(family.name, Metric(family.name, family.documentation, family.type,
                                                            family.unit))
            samples = values[kept.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                had = samples.get(key)
                samples[key] = sample.value if had is None else _fold(family.name, sample.name)(had, sample.value)
    for name, family in families.items():
        for (sample_name, labels), number in values[name].items():
            family.add_sample(sample_name, dict(labels), number)
    workers = Metric("tocsin_workers", "Worker processes of this node: configured, and answering this scrape.",
                     "gauge")
    workers.add_sample("tocsin_workers", {"state": "configured"}, configured)
    workers.add_sample("tocsin_workers", {"state": "answering"}, len(texts))
    families["tocsin_workers"] = workers
    registry = CollectorRegistry()
    registry.register(_Collected(list(families.values())))
    return generate_latest(registry)

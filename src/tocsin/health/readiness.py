"""Readiness checks, computed in the background and served with their age.

`/readyz` never waits on NATS, the disk or a lock: a background task refreshes every check
under its own deadline, and the report reads the last results. A result older than its
own maximum age is a failure, so a stuck checker cannot keep a node green. Canary ages
are read at report time (they are in memory), so they are exact to the request.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from tocsin.errors import StoreUnavailable
from tocsin.store.base import ConsumerHealth, StreamHealth

log = logging.getLogger(__name__)


class StoreView(Protocol):
    @property
    def is_connected(self) -> bool: ...

    async def stream_health(self) -> StreamHealth: ...

    async def consumer_health(self) -> list[ConsumerHealth]: ...


class FollowerView(Protocol):
    @property
    def last_seq(self) -> int: ...

    caught_up: asyncio.Event


class LedgerView(Protocol):
    def touch(self, at: str) -> None: ...


class ReconcilerView(Protocol):
    passes: int
    last_error: str | None


class DevicesView(Protocol):
    """The audience index (api/device_index.py): loaded once the bucket's first pass ended."""

    loaded: bool

    def __len__(self) -> int: ...


class ProberView(Protocol):
    interval_s: float
    running: bool

    @property
    def channels(self) -> dict[str, Any]: ...

    def canary_age_s(self, channel: str) -> float | None: ...

    def is_connected(self, channel: str) -> bool: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """One check's last result: computed at monotonic time `at`, valid for `max_age_s`."""

    name: str
    ok: bool
    at: float
    max_age_s: float
    value: Any = None
    detail: str = ""

    def as_json(self, now: float) -> dict[str, Any]:
        age = max(0.0, now - self.at)
        stale = age > self.max_age_s
        detail = f"stale: last computed {age:.1f} s ago (limit {self.max_age_s:.1f} s)" if stale else self.detail
        return {
            "ok": self.ok and not stale,
            "age_s": round(age, 3),
            "max_age_s": self.max_age_s,
            "value": self.value,
            "detail": detail,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """How each check judges; from Settings."""

    interval_s: float  # how often the background checks run
    check_timeout_s: float  # each check's deadline
    stall_s: float  # a follower or consumer stuck this long is stalled
    disk_min_free_bytes: int
    reconcile_interval_s: float
    # Red when the alert stream holds more than this share of its byte limit.
    stream_usage_red: float = 0.9


def redundancy(replicas: int) -> dict[str, Any]:
    """A plain statement of what failure this deployment survives."""
    if replicas <= 1:
        statement = (
            "no redundancy: one node, one copy of each alert (R1). If this node, its disk or its "
            "nats-server fails, no alert can be accepted or delivered until it is repaired."
        )
    else:
        statement = f"R{replicas}: survives the loss of {(replicas - 1) // 2} of {replicas} nodes"
    return {"replicas": replicas, "redundant": replicas > 1, "statement": statement}


class Readiness:
    """Runs the checks every `interval_s`; `report()` is instant."""

    def __init__(
        self,
        *,
        node: str,
        replicas: int,
        data_dir: Path,
        limits: Limits,
        store: StoreView,
        follower: FollowerView,
        ledger: LedgerView,
        prober: ProberView | None,
        reconciler: ReconcilerView | None = None,
        devices: DevicesView | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self.replicas = replicas
        self._data_dir = data_dir
        self.limits = limits
        self._store = store
        self._follower = follower
        self._ledger = ledger
        self.prober = prober
        self.reconciler = reconciler
        self.devices = devices
        self._monotonic = monotonic
        self.results: dict[str, Check] = {}
        self.refreshed_at: float | None = None
        self.stream: StreamHealth | None = None
        self.lag = 0
        self.behind_s = 0.0
        self._behind: tuple[int, float] | None = None  # (stream seq to reach, since)
        self._at_max: dict[str, float] = {}
        self._reconciler_progress: tuple[int, float] | None = None
        self._threads: dict[str, asyncio.Future[None]] = {}
        self._failing: frozenset[str] = frozenset()
        # Non-blocking checks (e.g. each CAP route, `route:<name>`): shown and named in
        # `degraded` when failing, never in `failing`, never making the node unready.
        self.advisory: Callable[[], dict[str, dict[str, Any]]] | None = None

    @property
    def max_age_s(self) -> float:
        return 2 * self.limits.interval_s + self.limits.check_timeout_s

    async def run(self) -> None:
        """Refresh every check forever, at a fixed rate."""
        while True:
            started = self._monotonic()
            await self.refresh()
            await asyncio.sleep(max(0.0, self.limits.interval_s - (self._monotonic() - started)))

    async def refresh(self) -> None:
        """Run every background check concurrently, each under its deadline."""
        checks = await asyncio.gather(
            self._guarded("nats", self._nats),
            self._guarded("stream", self._stream),
            self._guarded("consumers", self._consumers),
            self._guarded("ledger", self._ledger_writable),
            self._guarded("disk", self._disk),
        )
        for check in checks:
            self.results[check.name] = check
        self.results["follower"] = self._judge_follower()
        self.results["stream-usage"] = self._judge_usage()
        self.results["reconciler"] = self._judge_reconciler()
        if self.devices is not None:
            self.results["devices"] = self._judge_devices(self.devices)
        self.refreshed_at = self._monotonic()
        self._log_changes()

    def _check(self, name: str, ok: bool, value: Any = None, detail: str = "") -> Check:
        return Check(name=name, ok=ok, at=self._monotonic(), max_age_s=self.max_age_s, value=value, detail=detail)

    async def _guarded(self, name: str, run: Callable[[], Awaitable[Check]]) -> Check:
        try:
            async with asyncio.timeout(self.limits.check_timeout_s):
                return await run()
        except TimeoutError:
            return self._check(name, False, detail=f"no answer within {self.limits.check_timeout_s} s")
        except StoreUnavailable as exc:
            return self._check(name, False, detail=str(exc)[:300])
        except Exception as exc:  # a check must fail red, never crash the node
            return self._check(name, False, detail=f"{type(exc).__name__}: {str(exc)[:300]}")

    async def _in_thread(self, name: str, work: Callable[[], None]) -> None:
        """Run blocking work in a thread; never start a second one while the first hangs."""
        running = self._threads.get(name)
        if running is not None and not running.done():
            raise RuntimeError("the previous check has not returned yet (a hung disk?)")
        future = asyncio.ensure_future(asyncio.to_thread(work))
        self._threads[name] = future
        await asyncio.shield(future)

    async def _nats(self) -> Check:
        connected = self._store.is_connected
        return self._check("nats", connected, {"connected": connected},
                           "" if connected else "the NATS client is disconnected")

    async def _stream(self) -> Check:
        try:
            stream = await self._store.stream_health()
        except BaseException:
            self.stream = None
            raise
        self.stream = stream
        value = {"last_seq": stream.last_seq, "replicas": stream.replicas, "leader": stream.leader,
                 "peers": [{"name": n, "current": ok} for n, ok in stream.peers]}
        if stream.replicas <= 1:
            return self._check("stream", True, value, "the stream answers (R1: a single copy, no quorum to lose)")
        if stream.has_quorum:
            return self._check("stream", True, value, f"leader {stream.leader}, a majority of R{stream.replicas} current")
        return self._check("stream", False, value, "no quorum: too few current replicas")

    async def _consumers(self) -> Check:
        consumers = await self._store.consumer_health()
        now = self._monotonic()
        stalled: list[str] = []
        value = []
        seen = set()
        for c in consumers:
            seen.add(c.name)
            at_max_s = 0.0
            if c.is_at_max_ack_pending:
                since = self._at_max.setdefault(c.name, now)
                at_max_s = now - since
                if at_max_s > self.limits.stall_s:
                    stalled.append(c.name)
            else:
                self._at_max.pop(c.name, None)
            value.append({"name": c.name, "ack_pending": c.ack_pending, "max_ack_pending": c.max_ack_pending,
                          "pending": c.pending, "at_max_ack_pending_s": round(at_max_s, 3)})
        for gone in set(self._at_max) - seen:
            del self._at_max[gone]
        detail = f"at max ack pending for over {self.limits.stall_s} s: {', '.join(stalled)}" if stalled else ""
        return self._check("consumers", not stalled, value, detail)

    async def _ledger_writable(self) -> Check:
        await self._in_thread("ledger", lambda: self._ledger.touch(datetime.now(UTC).isoformat()))
        return self._check("ledger", True, {"writable": True})

    async def _disk(self) -> Check:
        usage: list[Any] = []
        await self._in_thread("disk", lambda: usage.append(shutil.disk_usage(self._data_dir)))
        free, total = usage[0].free, usage[0].total
        minimum = self.limits.disk_min_free_bytes
        value = {"path": str(self._data_dir), "free_mb": round(free / 2**20, 1),
                 "total_mb": round(total / 2**20, 1), "min_free_mb": round(minimum / 2**20, 1)}
        ok = free >= minimum
        return self._check("disk", ok, value, "" if ok else "free space below the minimum")

    def _judge_follower(self) -> Check:
        """Behind = not yet at a seq the stream had; stalled when behind for over `stall_s`."""
        followed = self._follower.last_seq
        stream = self.stream
        if stream is None:
            return self._check("follower", False, {"followed_seq": followed},
                               "cannot compare: the stream did not answer")
        now = self._monotonic()
        goal = stream.last_seq
        self.lag = max(0, goal - followed)
        if self.lag == 0:
            self._behind = None
        elif self._behind is None or followed >= self._behind[0]:
            self._behind = (goal, now)
        self.behind_s = 0.0 if self._behind is None else now - self._behind[1]
        value = {"stream_seq": goal, "followed_seq": followed, "lag": self.lag, "behind_s": round(self.behind_s, 3)}
        if not self._follower.caught_up.is_set():
            return self._check("follower", False, value, "still catching up with the stream")
        if self.behind_s > self.limits.stall_s:
            return self._check("follower", False, value, f"behind the stream for {self.behind_s:.1f} s")
        return self._check("follower", True, value)

    def _judge_usage(self) -> Check:
        """Red before the stream is full: an operator hears of it before an issuer gets a 507."""
        stream = self.stream
        if stream is None:
            return self._check("stream-usage", False, None, "cannot tell: the stream did not answer")
        value = {"bytes": stream.bytes, "max_bytes": stream.max_bytes, "messages": stream.messages,
                 "usage": round(stream.usage, 4), "red_above": self.limits.stream_usage_red}
        if stream.usage > self.limits.stream_usage_red:
            return self._check("stream-usage", False, value,
                               f"the alert stream is {stream.usage:.0%} full (red above "
                               f"{self.limits.stream_usage_red:.0%}); see docs/operations.md")
        return self._check("stream-usage", True, value)

    def _judge_devices(self, devices: DevicesView) -> Check:
        """Red until the device feed's first pass ended: a half index would authenticate
        too few devices from memory and count too small an audience in a preview."""
        value = {"devices": len(devices), "loaded": devices.loaded}
        if not devices.loaded:
            return self._check("devices", False, value, f"still reading the device bucket ({len(devices)} so far)")
        return self._check("devices", True, value)

    def _judge_reconciler(self) -> Check:
        r = self.reconciler
        if r is None:
            return self._check("reconciler", True, {"running": False}, "no reconciler in this node")
        now = self._monotonic()
        if self._reconciler_progress is None or r.passes != self._reconciler_progress[0]:
            self._reconciler_progress = (r.passes, now)
        since = now - self._reconciler_progress[1]
        value = {"passes": r.passes, "last_pass_s": round(since, 3), "last_error": r.last_error}
        limit = 3 * self.limits.reconcile_interval_s + self.limits.check_timeout_s
        if r.last_error is not None:
            return self._check("reconciler", False, value, f"last pass failed: {r.last_error[:200]}")
        if since > limit:
            return self._check("reconciler", False, value, f"no pass for {since:.1f} s")
        return self._check("reconciler", True, value)

    def _canary_checks(self) -> dict[str, dict[str, Any]]:
        """Live: the last probe displayed on each channel is younger than two intervals."""
        prober = self.prober
        if prober is None:
            off = {"ok": False, "age_s": 0.0, "max_age_s": None, "value": None,
                   "detail": "the prober is disabled: nothing measures delivery on this node"}
            return {"canary": off}
        limit = 2 * prober.interval_s
        checks: dict[str, dict[str, Any]] = {}
        youngest: float | None = None
        late: dict[str, str] = {}
        for channel in sorted(prober.channels):
            age = prober.canary_age_s(channel)
            ok = prober.running and age is not None and age < limit
            if age is not None:
                youngest = age if youngest is None else min(youngest, age)
            detail = "" if ok else ("the prober is not running" if not prober.running
                                    else _late(channel, age))
            if not ok and prober.running:
                late[channel] = detail
            checks[f"canary:{channel}"] = {
                "ok": ok, "age_s": _round(age), "max_age_s": limit,
                "value": {"connected": prober.is_connected(channel)}, "detail": detail,
            }
        all_ok = bool(checks) and all(c["ok"] for c in checks.values())
        # The node's canary names the late channels: an operator reads which link is down.
        summary = "; ".join(late.values()) if late else "the prober is not running" if not prober.running else "no canary runs"
        node = {"ok": all_ok, "age_s": _round(youngest), "max_age_s": limit,
                "value": {"channels": len(checks), "late": sorted(late)},
                "detail": "" if all_ok else summary}
        return {"canary": node, **checks}

    def report(self) -> dict[str, Any]:
        """The readiness document; `ready` only when every check passes now."""
        now = self._monotonic()
        checks: dict[str, dict[str, Any]] = {name: c.as_json(now) for name, c in sorted(self.results.items())}
        if not checks:
            checks["checks"] = {"ok": False, "age_s": None, "max_age_s": self.max_age_s, "value": None,
                                "detail": "not checked yet"}
        checks.update(self._canary_checks())
        checks.update(self._advisory_checks())
        failing = sorted(name for name, c in checks.items() if not c["ok"] and c.get("blocking", True))
        return {
            "status": "ready" if not failing else "not ready",
            "ready": not failing,
            "node": self.node,
            "failing": failing,
            "degraded": sorted(name for name, c in checks.items() if not c["ok"] and not c.get("blocking", True)),
            "checked_age_s": None if self.refreshed_at is None else round(now - self.refreshed_at, 3),
            "redundancy": redundancy(self.replicas),
            "checks": checks,
        }

    def _advisory_checks(self) -> dict[str, dict[str, Any]]:
        if self.advisory is None:
            return {}
        try:
            found = self.advisory()
        except Exception as exc:  # a view of something else: never a reason to fail the report
            log.warning("advisory checks failed", extra={"error": repr(exc)[:200]})
            return {}
        return {name: {**check, "blocking": False} for name, check in found.items()}

    def is_ready(self) -> bool:
        return bool(self.report()["ready"])

    def _log_changes(self) -> None:
        failing = frozenset(name for name, c in self.results.items() if not c.ok)
        if failing != self._failing:
            for name in sorted(failing - self._failing):
                log.warning("readiness check failing", extra={"node": self.node, "check": name,
                                                              "detail": self.results[name].detail})
            for name in sorted(self._failing - failing):
                log.info("readiness check passing", extra={"node": self.node, "check": name})
            self._failing = failing


def _late(channel: str, age: float | None) -> str:
    """Why a channel's canary fails, naming the channel ("the webpush canary is late: 9.1 s")."""
    if age is None:
        return f"the {channel} canary is late: no probe displayed yet"
    return f"the {channel} canary is late: {age:.1f} s since its last probe was displayed"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)

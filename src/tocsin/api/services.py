"""What the HTTP edge needs from the node, as one explicit value."""

from __future__ import annotations

import asyncio
import time
import collections
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tocsin.accounts.book import Accounts
from tocsin.api.device_index import DeviceIndex
from tocsin.api.ratelimit import RateLimit, RatesByKey
from tocsin.api.listener import Edge
from tocsin.api.ttl_cache import TtlCache
from tocsin.channels.live import LiveRegistry
from tocsin.delivery.route_worker import RouteWorker
from tocsin.delivery.routes import RouteBook
from tocsin.sources.model import SourceBook
from tocsin.sources.poller import SourcePoller
from tocsin.delivery.model import Sender
from tocsin.delivery.progress import Progress
from tocsin.geo.gazetteer_mirror import AreasMirror
from tocsin.health.readiness import Readiness
from tocsin.health.workers import WorkerPeers
from tocsin.pipeline.accept import Accept
from tocsin.pipeline import Pipeline
from tocsin.pipeline.early import EarlyCopies
from tocsin.prober.probe import ProbeResult, Prober
from tocsin.settings import Settings
from tocsin.signing import SigningKey
from tocsin.store.base import Store

if TYPE_CHECKING:  # FEEDS: api/feeds.py uses this module
    from tocsin.api.feeds import Feeds


# A wrong token is remembered this long (a token created elsewhere meanwhile waits as long).
ISSUER_CACHE_S = 1.0
# Issuers are few; a flood of distinct wrong tokens evicts only wrong tokens and old entries.
ISSUER_CACHE_ENTRIES = 4096

# Registration changes one device may make a minute (PUT /api/v1/devices/{id}).
DEVICE_UPDATES_PER_MIN = 6

# Issue-to-display latency of the probes: loopback is milliseconds, a stalled path is seconds.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(slots=True)
class Metrics:
    """The node's Prometheus metrics, on a registry of its own (names in docs/health.md)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    accepted: Counter = field(init=False)
    refused: Counter = field(init=False)
    accept_seconds: Histogram = field(init=False)
    accept_phase_seconds: Histogram = field(init=False)
    # The reconciler calls republished.inc(n) for each alert it had to publish again.
    republished: Counter = field(init=False)
    probes: Counter = field(init=False)
    probe_seconds: Histogram = field(init=False)
    heartbeats: Counter = field(init=False)
    # CORE: gateway deliveries (delivery/dispatcher.py; docs/delivery.md, "Metrics").
    push_attempts: Counter = field(init=False)
    registrations_removed: Counter = field(init=False)

    def __post_init__(self) -> None:
        r = self.registry
        self.accepted = Counter("tocsin_alerts_accepted_total", "Alerts stored, by status.", ["status"], registry=r)
        self.refused = Counter("tocsin_alerts_refused_total", "Requests refused, by problem code.", ["code"], registry=r)
        self.accept_seconds = Histogram(
            "tocsin_accept_seconds",
            "Time from request to durable acknowledgement.",
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.accept_phase_seconds = Histogram(
            "tocsin_accept_phase_seconds",
            "Time of each durable write of an accept, side by side: publish (JetStream, with the "
            "stream's fsync) and ledger (the SQLite row, with its fsync).",
            ["phase"], buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
            registry=r,
        )
        self.republished = Counter(
            "tocsin_reconciler_republished_total",
            "Alerts in this node's ledger that the stream had lost and the reconciler published again.",
            registry=r,
        )
        self.probes = Counter(
            "tocsin_probes_total", "Probes by channel and outcome (delivered, lost, refused).",
            ["channel", "outcome"], registry=r,
        )
        self.probe_seconds = Histogram(
            "tocsin_probe_latency_seconds", "Issue-to-display latency of the probes, by channel.",
            ["channel"], buckets=LATENCY_BUCKETS_S, registry=r,
        )
        self.heartbeats = Counter(
            "tocsin_heartbeats_total", "Heartbeat periods by outcome (sent, failed, withheld).",
            ["outcome"], registry=r,
        )

        self.push_attempts = Counter(
            "tocsin_push_attempts_total", "Gateway send attempts by channel and outcome (sent, retry, "
            "rate-limited, permanent, gone; unregistered: the device was gone before the send).",
            ["channel", "outcome"], registry=r,
        )
        self.registrations_removed = Counter(
            "tocsin_push_registrations_removed_total",
            "Push registrations removed because their gateway said the token or subscription is gone.",
            ["channel"], registry=r,
        )

    def observe_probe(self, result: ProbeResult) -> None:
        """Count one probe outcome; a delivered probe's latency goes to the histogram."""
        self.probes.labels(result.channel, result.outcome.value).inc()
        if result.latency_s is not None:
            self.probe_seconds.labels(result.channel).observe(result.latency_s)

    def watch(self, live: LiveRegistry, readiness: Readiness | None, prober: Prober | None,
              progress: Progress | None = None, early: EarlyCopies | None = None) -> None:
        """Read the node's in-memory counters at each scrape (no bookkeeping on the hot path)."""
        self.registry.register(_NodeCollector(live, readiness, prober, progress, early))


class _NodeCollector(Collector):
    """Values owned by lower layers, read when /metrics is scraped."""

    def __init__(self, live: LiveRegistry, readiness: Readiness | None, prober: Prober | None,
                 progress: Progress | None = None, early: EarlyCopies | None = None) -> None:
        self._live = live
        self._early = early
        self._readiness = readiness
        self._prober = prober
        self._progress = progress

    def describe(self) -> list[Metric]:
        return []  # collected at scrape time only; no names to reserve at registration

    def collect(self) -> Iterator[Metric]:
        deliveries = CounterMetricFamily(
            "tocsin_deliveries", "Deliveries by channel and outcome (live: queued, dropped).",
            labels=["channel", "outcome"],
        )
        for protocol, n in sorted(self._live.queued.items()):
            deliveries.add_metric([protocol, "queued"], n)
        for protocol, n in sorted(self._live.dropped.items()):
            deliveries.add_metric([protocol, "dropped"], n)
        if self._progress is not None:  # PROGRESS: gateway deliveries planned, sent, failed here
            for (channel, outcome), n in sorted(self._progress.totals.items()):
                deliveries.add_metric([channel, outcome], n)
        yield deliveries
        connected = GaugeMetricFamily("tocsin_connected_devices", "Devices connected now, by channel.",
                                      labels=["channel"])
        for protocol, n in sorted(self._live.connected.items()):
            connected.add_metric([protocol], n)
        yield connected
        if self._prober is not None:
            age = GaugeMetricFamily("tocsin_canary_age_seconds",
                                    "Seconds since a probe was last displayed on this channel's canary.",
                                    labels=["channel"])
            for channel in sorted(self._prober.channels):
                value = self._prober.canary_age_s(channel)
                age.add_metric([channel], float("inf") if value is None else value)
            yield age
        if self._early is not None:
            early = CounterMetricFamily("tocsin_early_copies", "Early copies (alerts sent to live devices before "
                                        "they were stored: an election) by outcome: offered to this node's devices, "
                                        "or dropped (held copies full, or not signed with this node's key).",
                                        labels=["outcome"])
            early.add_metric(["offered"], self._early.heard)
            early.add_metric(["dropped"], self._early.dropped)
            yield early
        if self._readiness is not None:
            yield from self._readiness_metrics(self._readiness)
        if self._progress is not None:
            yield from _progress_metrics(self._progress)

    def _readiness_metrics(self, readiness: Readiness) -> Iterator[Metric]:
        yield GaugeMetricFamily("tocsin_pending_deliveries",
                                "Alerts in the stream this node's follower has not fanned out yet.",
                                value=readiness.lag)
        yield GaugeMetricFamily("tocsin_follower_behind_seconds",
                                "How long this node's follower has been behind the stream.",
                                value=readiness.behind_s)
        report = readiness.report()
        yield GaugeMetricFamily("tocsin_ready", "1 when /readyz answers 200.", value=1 if report["ready"] else 0)
        checks = GaugeMetricFamily("tocsin_readiness_check", "1 when the readiness check passes.", labels=["check"])
        for name, check in report["checks"].items():
            checks.add_metric([name], 1 if check["ok"] else 0)
        yield checks


def _progress_metrics(progress: Progress) -> Iterator[Metric]:
    """PROGRESS: receipts by channel and this node's progress bookkeeping (delivery/progress.py)."""
    receipts = CounterMetricFamily("tocsin_receipts", "Receipts counted on this node (devices that showed an "
                                   "alert, once per device and alert), by channel.", labels=["channel"])
    for channel, n in sorted(progress.receipts_by_channel.items()):
        receipts.add_metric([channel], n)
    yield receipts
    yield CounterMetricFamily("tocsin_receipts_uncounted", "Receipts not counted: this node's table of counted "
                              "receipts was full.", value=progress.receipts_uncounted)
    yield GaugeMetricFamily("tocsin_progress_alerts", "Alerts whose delivery progress this node counts now.",
                            value=len(progress))
    yield CounterMetricFamily("tocsin_progress_write_failures", "Progress records this node could not write "
                              "(written again at the next flush).", value=progress.flush_failures)


@dataclass(slots=True, kw_only=True)
class Services:
    """The node's parts the routes use."""

    settings: Settings
    store: Store
    accept: Accept
    pipeline: Pipeline
    live: LiveRegistry
    signer: SigningKey
    clock: Callable[[], datetime]
    metrics: Metrics = field(default_factory=Metrics)
    # Set by app.py when the node starts its prober and readiness checks.
    prober: Prober | None = None
    readiness: Readiness | None = None
    # The listeners' limits and connection counts (app.py sets it; None in ASGI-only tests).
    edge: Edge | None = None
    # WORKERS: the node's other worker processes (health/workers.py); None in a node of one.
    peers: WorkerPeers | None = None
    started_monotonic: float = field(default_factory=time.monotonic)
    # Every account record, mirrored from the accounts bucket (app.py runs the mirror), and
    # each organisation's alert rate on this node (accounts/book.py, api/auth.py).
    accounts: Accounts = field(init=False)
    issuer_rates: RatesByKey = field(default_factory=RatesByKey)
    # Each organisation's reach previews on this node (api/preview.py), apart from its alerts,
    # and how many this worker is computing now (bounded by PREVIEWS_AT_ONCE there).
    preview_rates: RatesByKey = field(default_factory=RatesByKey)
    previews_running: int = 0
    # Tokens found in no account (None), bounded in number and age: a flood of wrong
    # tokens costs one bucket read each per ISSUER_CACHE_S.
    issuer_cache: TtlCache[str, Any] = field(
        default_factory=lambda: TtlCache(ISSUER_CACHE_ENTRIES, ISSUER_CACHE_S)
    )
    # Every registered device and the cells it follows: fed from the bucket by
    # `store.mirror_devices`, plus what this node registered or read itself before the feed
    # had it (the audience index, api/device_index.py).
    device_cache: DeviceIndex = field(default_factory=DeviceIndex)
    # The pending bucket (submissions and drafts), mirrored by `store.mirror` (approval/).
    pending_cache: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Anonymous device registrations, by source and in all (api/devices.py).
    registrations_by_source: RateLimit = field(init=False)
    registrations_in_all: RateLimit = field(init=False)
    device_updates: RateLimit = field(init=False)
    # Open streams (SSE and WebSocket) per device id, bounded by max_streams_per_device.
    streams: collections.Counter[str] = field(default_factory=collections.Counter)
    # GAZ: the areas bucket mirrored into accept's gazetteer (app.py runs the mirror), and
    # one import at a time (api/areas.py: a large GeoJSON body is parsed off the loop).
    areas: AreasMirror = field(init=False)
    areas_importing: asyncio.Lock = field(default_factory=asyncio.Lock)
    # PROGRESS: delivery progress per alert and channel (delivery/progress.py; app.py gives
    # it the progress bucket), and each device's receipts on this node (api/receipts.py).
    progress: Progress = field(default_factory=Progress)
    receipt_rates: RateLimit = field(init=False)
    # ROUTES: the routes bucket and its status bucket mirrored (app.py runs the mirrors), and
    # the route worker (app.py starts it; None in ASGI-only tests) (delivery/routes.py).
    routes: RouteBook = field(default_factory=RouteBook)
    route_status: dict[str, dict[str, Any]] = field(default_factory=dict)
    route_worker: RouteWorker | None = None
    # SOURCES: the sources bucket and its status bucket mirrored (app.py runs the mirrors),
    # and the poller (app.py starts it; None in ASGI-only tests) (sources/).
    sources: SourceBook = field(default_factory=SourceBook)
    source_status: dict[str, dict[str, Any]] = field(default_factory=dict)
    source_poller: SourcePoller | None = None
    # CORE (delivery/): the senders this node delivers through, by channel (app.py: the
    # configured channels' `make_senders`, or the ones a test gives).
    senders: dict[str, Sender] = field(default_factory=dict)
    # FEEDS: the CAP Atom feeds and their window (api/feeds.py; app.py makes it; None in
    # ASGI-only tests: the feed routes then answer 404).
    feeds: Feeds | None = None

    def __post_init__(self) -> None:
        s = self.settings
        store = self.store
        self.accounts = Accounts(lambda: store.accounts)
        self.areas = AreasMirror(self.accept.gazetteer)
        self.registrations_by_source = RateLimit(s.registrations_per_source_per_min, max_keys=s.rate_limit_max_sources)
        self.registrations_in_all = RateLimit(s.registrations_per_min)
        self.receipt_rates = RateLimit(s.receipts_per_device_per_min, max_keys=s.rate_limit_max_sources)
        # PUT /api/v1/devices/{id}: each is a bucket write; a device rotates its subscription
        # or moves a few times a day, not every second (api/devices.py).
        self.device_updates = RateLimit(DEVICE_UPDATES_PER_MIN, max_keys=s.rate_limit_max_sources)

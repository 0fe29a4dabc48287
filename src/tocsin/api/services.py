"""What the HTTP edge needs from the node, as one explicit value."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tocsin.channels.live import LiveRegistry
from tocsin.pipeline.accept import Accept
from tocsin.pipeline.target import Target
from tocsin.settings import Settings
from tocsin.signing import SigningKey
from tocsin.store.jetstream import JetStreamStore


@dataclass(slots=True)
class Metrics:
    """The node's Prometheus metrics, on a registry of its own."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    accepted: Counter = field(init=False)
    refused: Counter = field(init=False)
    accept_seconds: Histogram = field(init=False)
    devices: Gauge = field(init=False)
    offered: Counter = field(init=False)
    dropped: Counter = field(init=False)

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
        self.devices = Gauge("tocsin_live_devices", "Devices connected to this node.", ["protocol"], registry=r)
        self.offered = Counter("tocsin_live_events_total", "Alert events queued to live devices.", registry=r)
        self.dropped = Counter("tocsin_live_dropped_total", "Live devices dropped for falling behind.", registry=r)


@dataclass(slots=True, kw_only=True)
class Services:
    """The node's parts the routes use."""

    settings: Settings
    store: JetStreamStore
    accept: Accept
    target: Target
    live: LiveRegistry
    signer: SigningKey
    clock: Callable[[], datetime]
    metrics: Metrics = field(default_factory=Metrics)
    started_monotonic: float = field(default_factory=time.monotonic)
    # Looked-up issuer accounts and devices, with the monotonic time they were read.
    issuer_cache: dict[str, tuple[float, Any]] = field(default_factory=dict)
    device_cache: dict[str, dict[str, Any]] = field(default_factory=dict)

"""The prober: issues a System alert every few seconds and waits for it on this node's canaries.

Health is what was measured end to end, seconds ago: the probe goes through the public
issuer API (with the node's own prober account, allowed System alerts only), the stream,
the follower and the live channel, and is read back by a canary device over loopback HTTP.
Each channel's issue-to-display latency is recorded; the age of its last delivered probe
is what `/readyz` and the dead man's switch judge.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx

from tocsin.cap.compose import simple_alert
from tocsin.policy import Issuer
from tocsin.delivery.model import FCM, APNS
from tocsin.prober.canary import Canary, SseCanary, canary_token
from tocsin.delivery.queue import node_token
from tocsin.prober.push_canary import GatewayCanary, Registration, WebPushCanary
from tocsin.prober.history import History
from tocsin.secret_file import write_secret
from tocsin.store.base import alert_id_for

log = logging.getLogger(__name__)

# Probes go to a small square far from any population (the Gulf of Guinea, 0°N 0°E).
PROBE_POINT = (0.0, 0.0)
_HALF_SIDE_DEG = 0.05
# Pending probes kept at most; older ones are counted lost (bounded memory).
MAX_PENDING = 256


class Outcome(StrEnum):
    """What became of one probe on one channel; also a metric label."""

    DELIVERED = "delivered"
    LOST = "lost"  # accepted, or its fate unknown, but not displayed within the deadline
    REFUSED = "refused"  # the issuer API did not accept it


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeResult:
    channel: str
    outcome: Outcome
    latency_s: float | None
    alert_id: str


@dataclass(slots=True)
class ChannelHealth:
    """The latest measurements of one channel's canary (monotonic times)."""

    last_delivered: float | None = None
    last_latency_s: float | None = None
    last_outcome: Outcome | None = None
    delivered: int = 0
    lost: int = 0
    refused: int = 0


@dataclass(slots=True)
class _Pending:
    issued: float
    channels: set[str] = field(default_factory=set)


def prober_sender(node: str) -> str:
    """The CAP sender of a node's probes (CAP 1.2 §3.2.1: no spaces, commas, '<' or '&')."""
    return "tocsin-prober@" + re.sub(r"[^A-Za-z0-9._-]", "-", node)


def prober_account(node: str) -> Issuer:
    """The node's prober account: its own sender, System alerts only, no admin rights."""
    return Issuer(name=f"prober:{node}", senders=(prober_sender(node),), statuses=("System",), probe=True)


def load_or_create_token(path: Path) -> str:
    """The prober's issuer token, kept beside the node's keys so restarts reuse it."""
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    token = f"tcp_{secrets.token_urlsafe(32)}"
    write_secret(path, token + "\n")
    return token


def probe_xml(*, sender: str, identifier: str, sent: datetime, expires_in_s: float) -> bytes:
    """A System alert over the probe square, expiring soon after it was sent."""
    # CAP times have whole seconds: sent rounds down, expires up, so it is never already past.
    exact = sent.astimezone(UTC)
    sent = exact.replace(microsecond=0)
    lifetime = math.ceil((exact - sent).total_seconds() + max(1.0, expires_in_s))
    lat, lon, d = PROBE_POINT[0], PROBE_POINT[1], _HALF_SIDE_DEG
    ring = [(lat - d, lon - d), (lat - d, lon + d), (lat + d, lon + d), (lat + d, lon - d), (lat - d, lon - d)]
    return simple_alert(
        identifier=identifier, sender=sender, sent=sent, expires_in_s=lifetime, status="System",
        polygon=" ".join(f"{a:.4f},{b:.4f}" for a, b in ring), language="en-US", category="Other",
        event="tocsin probe", urgency="Unknown", severity="Unknown", certainty="Unknown",
        headline="tocsin probe", area_desc="tocsin canary square",
    )


def issuer_client(base_url: str, timeout_s: float) -> httpx.AsyncClient:
    """The prober's issuer: a fresh connection for each probe, through the public listener.

    As an issuer after a pause would come. A kept-alive connection races the server's idle
    timeout (the probe interval and uvicorn's keep-alive timeout are both 5 s: a probe sent
    as the server closes the connection fails, a false "refused"), and it would keep
    succeeding while the listener takes no new connection (a false green).
    """
    fresh = httpx.Limits(max_connections=2, max_keepalive_connections=0)
    return httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=fresh)


class Prober:
    """Issues probes at a fixed rate and matches them with what the canaries read."""

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        node: str,
        interval_s: float,
        expires_in_s: float,
        deadline_s: float,
        read_timeout_s: float,
        canary_file: Path | None = None,
        webpush: bool = False,
        gateway_tokens: Mapping[str, str] | None = None,
        on_result: Callable[[ProbeResult], None] = lambda result: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        instance: str = "",
    ) -> None:
        self.base_url = base_url
        self._token = token
        self.node = node
        self.sender = prober_sender(node)
        self.interval_s = interval_s
        self._expires_in_s = expires_in_s
        self.deadline_s = deadline_s
        self._read_timeout_s = read_timeout_s
        self._canary_file = canary_file
        # PROGRESS: the gateway channels' canaries (prober/push_canary.py): Web Push when
        # the deployment delivers through it, FCM/APNs where a test device's token is set.
        self._webpush = webpush
        self._gateway_tokens = {c: t for c, t in (gateway_tokens or {}).items() if c in (FCM, APNS) and t}
        self._on_result = on_result
        self._clock = clock
        self._monotonic = monotonic
        # Probe identifiers: this start's, apart from another worker's of the node (`instance`).
        self._instance = instance
        self._boot = f"{int(time.time() * 1000):x}{instance}"
        self._issued = 0
        self._pending: dict[str, _Pending] = {}
        self._canaries: dict[str, Canary] = {}
        self.channels: dict[str, ChannelHealth] = {}
        self.history = History()
        self.running = False
        self.started_at: float | None = None

    # -- what readiness, metrics and the heartbeat read ----------------------------------

    def canary_age_s(self, channel: str) -> float | None:
        """Seconds since a probe was last displayed on this channel; None if never."""
        health = self.channels.get(channel)
        if health is None or health.last_delivered is None:
            return None
        return self._monotonic() - health.last_delivered

    def is_fresh(self, channel: str) -> bool:
        """The channel's last canary is younger than two probe intervals."""
        age = self.canary_age_s(channel)
        return age is not None and age < 2 * self.interval_s

    def is_healthy(self) -> bool:
        """The prober runs and every channel's canary is fresh."""
        return self.running and bool(self.channels) and all(self.is_fresh(c) for c in self.channels)

    def is_connected(self, channel: str) -> bool:
        canary = self._canaries.get(channel)
        return canary is not None and canary.is_connected

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Run the canaries and the issue loop until cancelled; a bug restarts them.

        The prober never takes the node down with it: while it is down, the node is not
        ready and sends no heartbeat, which is what an outside watchdog must see.
        """
        while True:
            try:
                await self._run_once()
            except Exception as exc:
                log.error("prober failed; restarting", extra={"node": self.node}, exc_info=exc)
            await asyncio.sleep(max(self.interval_s, 0.5))

    async def _run_once(self) -> None:
        limits = httpx.Limits(max_connections=8, max_keepalive_connections=4)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=self.deadline_s, limits=limits) as http:

            async def register(forget: bool) -> str:
                if forget and self._canary_file is not None:
                    self._canary_file.unlink(missing_ok=True)
                return await self._register(http)

            canaries: list[Canary] = [SseCanary(http, register, read_timeout_s=self._read_timeout_s),
                                      *self._push_canaries(http)]
            self._canaries = {c.channel: c for c in canaries}
            self.channels = {c.channel: ChannelHealth() for c in canaries}
            self.running = True
            self.started_at = self._monotonic()
            try:
                async with issuer_client(self.base_url, self.deadline_s) as issuer, asyncio.TaskGroup() as tasks:
                    for canary in canaries:
                        tasks.create_task(canary.run(self._seen_on(canary.channel)), name=f"canary-{canary.channel}")
                    tasks.create_task(self._issue_loop(issuer), name="probe-issuer")
            finally:
                self.running = False

    def _push_canaries(self, http: httpx.AsyncClient) -> list[Canary]:
        def registration(channel: str) -> Registration:
            saved = None if self._canary_file is None else self._canary_file.with_name(
                f"canary-{channel}{self._instance}.json")
            return Registration(http, self._token, saved, retry_max_s=max(self.interval_s, 1.0))

        found: list[Canary] = [WebPushCanary(http, registration("webpush"), node=node_token(self.node))] if self._webpush else []
        found += [GatewayCanary(channel, token, registration(channel)) for channel, token in sorted(self._gateway_tokens.items())]
        return found

    def canary(self, channel: str) -> Canary | None:
        """The running canary of a channel (tests and drills reach its receiver)."""
        return self._canaries.get(channel)

    def push_canary_devices(self) -> list[str]:
        """The push canaries' registered device ids (the node deletes them when it stops)."""
        found = []
        for canary in self._canaries.values():
            registration = getattr(canary, "registration", None)
            if isinstance(registration, Registration) and registration.device_id is not None:
                found.append(registration.device_id)
        return found

    def gateway_sent(self, channel: str, device_id: str, alert_id: str) -> None:
        """A gateway accepted a probe for a canary device (prober/relay.py, from any node's
        dispatcher): counted when it is this node's FCM/APNs canary."""
        canary = self._canaries.get(channel)
        if isinstance(canary, GatewayCanary):
            canary.sent(device_id, alert_id)

    async def _register(self, http: httpx.AsyncClient) -> str:
        """Register the canary device, retrying until the node answers."""
        delay = 0.2
        while True:
            try:
                return await canary_token(http, self._token, PROBE_POINT, self._canary_file)
            except (httpx.HTTPError, OSError) as exc:
                log.warning("canary registration failed", extra={"error": repr(exc)[:200]})
            await asyncio.sleep(delay)
            delay = min(delay * 2, max(self.interval_s, 1.0))

    def _seen_on(self, channel: str) -> Callable[[str, float, bool], None]:
        def seen(alert_id: str, at: float, live: bool) -> None:
            pending = self._pending.get(alert_id)
            if not live or pending is None or channel not in pending.channels:
                # A replay on reconnect proves nothing about pushing now; another node's
                # probe or one already counted lost is not ours to count.
                return
            pending.channels.discard(channel)
            if not pending.channels:
                del self._pending[alert_id]
            self._result(channel, Outcome.DELIVERED, at - pending.issued, alert_id)

        return seen

    async def _issue_loop(self, http: httpx.AsyncClient) -> None:
        # The first probe waits (a bounded time) for the canaries to connect, so that its
        # latency measures delivery rather than the canaries' start.
        waited = self._monotonic()
        while not all(c.is_connected for c in self._canaries.values()):
            if self._monotonic() - waited > self.deadline_s:
                break
            await asyncio.sleep(0.02)
        next_at = self._monotonic()
        while True:
            await self._issue_one(http)
            self._expire()
            now = self._monotonic()
            next_at += self.interval_s
            if next_at < now:  # an issue took longer than an interval: do not burst to catch up
                next_at = now
            await asyncio.sleep(next_at - now)

    async def _issue_one(self, http: httpx.AsyncClient) -> None:
        self._issued += 1
        identifier = f"probe-{self._boot}-{self._issued}"
        alert_id = alert_id_for(self.sender, identifier)
        body = probe_xml(sender=self.sender, identifier=identifier, sent=self._clock(),
                         expires_in_s=self._expires_in_s)
        # Pending before the request: the canary may read the alert before the answer comes.
        self._pending[alert_id] = _Pending(issued=self._monotonic(), channels=set(self._canaries))
        headers = {"Authorization": f"Bearer {self._token}", "Content-Type": "application/cap+xml"}
        error: str | None = None
        try:
            async with asyncio.timeout(self.deadline_s):
                response = await http.post("/api/v1/alerts", content=body, headers=headers)
            if response.status_code not in (200, 201):
                error = f"{response.status_code} {response.text[:200]}"
        except (httpx.HTTPError, TimeoutError) as exc:
            error = repr(exc)[:200]
        if error is None:
            return
        pending = self._pending.pop(alert_id, None)
        if pending is not None:
            log.debug("probe refused", extra={"node": self.node, "error": error})
            for channel in sorted(pending.channels):
                self._result(channel, Outcome.REFUSED, None, alert_id)

    def _expire(self) -> None:
        """Count probes past their deadline as lost; a canary that missed one reconnects."""
        now = self._monotonic()
        late = [aid for aid, p in self._pending.items() if now - p.issued > self.deadline_s]
        overflow = max(0, len(self._pending) - len(late) - MAX_PENDING)
        late += [aid for aid in list(self._pending)[:overflow] if aid not in late]
        missed: dict[str, float] = {}  # channel -> when the last probe it lost was issued
        for alert_id in late:
            pending = self._pending.pop(alert_id)
            for channel in sorted(pending.channels):
                self._result(channel, Outcome.LOST, None, alert_id)
                missed[channel] = max(missed.get(channel, pending.issued), pending.issued)
        for channel, issued in missed.items():
            canary = self._canaries.get(channel)
            # A stream open but silent (a channel that accepts and never writes) is reopened.
            if canary is not None:
                canary.reconnect(issued)

    def _result(self, channel: str, outcome: Outcome, latency_s: float | None, alert_id: str) -> None:
        health = self.channels.setdefault(channel, ChannelHealth())
        if outcome is not health.last_outcome:  # log changes of kind, not every probe
            level = logging.INFO if outcome is Outcome.DELIVERED else logging.WARNING
            log.log(level, "probe outcome changed", extra={
                "node": self.node, "channel": channel, "outcome": outcome.value, "alert_id": alert_id,
            })
        health.last_outcome = outcome
        if outcome is Outcome.DELIVERED:
            health.last_delivered = self._monotonic()
            health.last_latency_s = latency_s
            health.delivered += 1
        elif outcome is Outcome.LOST:
            health.lost += 1
        else:
            health.refused += 1
        self.history.record(channel, latency_s)
        self._on_result(ProbeResult(channel=channel, outcome=outcome, latency_s=latency_s, alert_id=alert_id))

    def as_json(self) -> dict[str, Any]:
        """The canaries as /status and /readyz show them."""
        return {
            "running": self.running,
            "interval_s": self.interval_s,
            "pending": self.pending,
            "channels": {
                channel: {
                    "connected": self.is_connected(channel),
                    "canary_age_s": _round(self.canary_age_s(channel)),
                    "last_latency_s": _round(health.last_latency_s),
                    "last_outcome": health.last_outcome.value if health.last_outcome else None,
                    "delivered": health.delivered,
                    "lost": health.lost,
                    "refused": health.refused,
                    **self._problems(channel),
                }
                for channel, health in self.channels.items()
            },
        }


    def _problems(self, channel: str) -> dict[str, Any]:
        """A push canary's refused or unshowable pushes by reason, when it has any."""
        problems = getattr(self._canaries.get(channel), "problems", None)
        return {"problems": dict(problems)} if problems else {}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)

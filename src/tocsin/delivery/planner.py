"""The planner: each stored alert -> one work-queue message per push device and CAP route.

Every node runs one, all on the same durable pull consumer of the alert stream, so each
alert is planned by one node at a time (docs/delivery.md, "Planner"):

- `max_ack_pending` 1: alerts are planned one after the other, in stream order. A CAP route
  keeps order (a Cancel only after the Alert it cancels): that holds only if the Alert's
  route message is enqueued before the Cancel's, whichever node plans each;
- explicit acks after the last enqueue; `in_progress()` while it works, so a large alert is
  not handed to another node; a node that dies mid-alert is replaced after its own short
  `ack_wait` (TOCSIN_PLANNER_ACK_WAIT_S: every later alert's pushes wait behind it), and
  its replacement enqueues everything again: the work queue's message ids (alert, channel,
  destination) keep none twice;
- the plan reads this node's follower index (the cover, Update/Cancel references and the
  expiry are the follower's): it waits, bounded, until the follower is past the alert. An
  alert the index does not hold once past it (expired, unreadable) is acked without plan.

FPAS subscriptions are also told when an alert expires (`removed`, docs/fpas.md): when the
index forgets an expired alert that no Update or Cancel replaced, the node's primary process
enqueues one withdrawal per FPAS subscription in its area. Every node does so within seconds
of the expiry, and the work queue's message ids (alert, channel, destination, "removed") keep
each once; the index is swept once a second so that this does not wait for the next alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from tocsin.api.device_index import DeviceIndex
from tocsin.cap.model import MsgType, Severity, Status
from tocsin.delivery.model import CAP, FPAS, Delivery
from tocsin.delivery.progress import Progress
from tocsin.delivery.queue import ATOMIC_BATCH, PLANNER_CONSUMER, enqueue_batch
from tocsin.errors import StoreUnavailable
from tocsin.pipeline.index import Active, ActiveIndex
from tocsin.settings import Settings

log = logging.getLogger(__name__)

CONSUMER = PLANNER_CONSUMER
# How long to wait for this node's follower to reach an alert before handing it back; a
# node whose follower is that far behind takes no alert to plan until it reaches that one
# (a stuck follower must not hold every alert of the cluster for this long, again and again).
FOLLOWER_WAIT_S = 3.0

RoutesFor = Callable[[str], Sequence[str]]
# FPAS: an expired alert's withdrawal waits this long at most for a phone that is offline.
REMOVAL_TTL_S = 24 * 3600.0
# How often the index forgets what expired, when no alert fanned out to do it.
SWEEP_S = 1.0


def no_routes(status: str) -> list[str]:
    return []


def is_urgent(active: Active) -> bool:
    """Extreme Actual: dispatched before anything else."""
    alert = active.alert
    return alert.status is Status.ACTUAL and any(info.severity is Severity.EXTREME for info in alert.infos)


def withdraws_on_expiry(active: Active, index: ActiveIndex) -> bool:
    """FPAS: an expired alert is withdrawn unless an Update or Cancel did it already (or it
    is a Cancel, which withdrew what it cancelled and was never shown)."""
    return active.alert.msg_type is not MsgType.CANCEL and active.stored.envelope.alert_id not in index.superseded


def withdrawals(active: Active, members: Sequence[tuple[str, str]], now: float) -> list[Delivery]:
    """An expired alert's `removed` pushes, one per FPAS subscription."""
    seq, alert_id = active.stored.seq, str(active.stored.envelope.alert_id)
    return [Delivery(alert_id=alert_id, seq=seq, channel=FPAS, destination=device_id,
                     expires_at=now + REMOVAL_TTL_S, urgent=False, removal=True) for device_id, _ in members]


def deliveries(active: Active, members: Sequence[tuple[str, str]], routes: Sequence[str]) -> list[Delivery]:
    """The work-queue messages of one alert: one per device, one per CAP route."""
    seq, alert_id = active.stored.seq, str(active.stored.envelope.alert_id)
    expires, urgent = active.expires_at.timestamp(), is_urgent(active)
    planned = [Delivery(alert_id=alert_id, seq=seq, channel=channel, destination=device_id,
                        expires_at=expires, urgent=urgent) for device_id, channel in members]
    planned += [Delivery(alert_id=alert_id, seq=seq, channel=CAP, destination=route,
                         expires_at=expires, urgent=urgent) for route in routes]
    return planned


async def enqueue_all(nc: Client, js: JetStreamContext, settings: Settings, planned: Sequence[Delivery],
                      *, still_working: Callable[[], Any] | None = None) -> None:
    """Enqueue every delivery in atomic batches (`queue.enqueue_batch`: one write each, not
    one round trip and one fsync per delivery). Raises StoreUnavailable when a batch is not
    acknowledged (the caller plans the alert again: dedupe keeps what was enqueued once)."""
    for start in range(0, len(planned), ATOMIC_BATCH):
        await enqueue_batch(nc, js, settings, planned[start: start + ATOMIC_BATCH])
        if still_working is not None:
            await still_working()


class Planner:
    """This node's share of the cluster's one planner (see the module docstring)."""

    def __init__(
        self, *, nc: Client, js: JetStreamContext, settings: Settings, index: ActiveIndex, devices: DeviceIndex,
        channels: Sequence[str], progress: Progress, routes_for: RoutesFor = no_routes,
    ) -> None:
        self._nc = nc
        self._js = js
        self._settings = settings
        self._index = index
        self._devices = devices
        self._channels = tuple(channels)
        self._progress = progress
        self._routes_for = routes_for
        self.planned = 0  # alerts this node planned (tests, status)
        self._behind_seq = 0  # an alert handed back because the follower had not reached it
        # FPAS: this process enqueues the withdrawals of expired alerts (the node's primary).
        self._withdraws = FPAS in self._channels and settings.primary
        self._withdrawing: set[asyncio.Task[int]] = set()
        if self._withdraws:
            index.on_expired.append(self._expired)

    def consumer_config(self) -> ConsumerConfig:
        s = self._settings
        return ConsumerConfig(
            durable_name=CONSUMER, deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.EXPLICIT,
            ack_wait=s.planner_ack_wait_s, max_deliver=-1, max_ack_pending=1,
            filter_subject=f"{s.stream}.>",
        )

    async def run(self) -> None:
        """Plan alerts until cancelled; a lost store is waited out. With FPAS withdrawals,
        sweep the index too."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._plan(), name="planner-pull")
            if self._withdraws:
                tasks.create_task(self._sweep(), name="planner-sweep")

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            self._index.prune_if_due()

    def _expired(self, gone: list[Active]) -> None:
        """The index forgets `gone` (index.on_expired): withdraw them, off the prune's path."""
        expired = [active for active in gone if withdraws_on_expiry(active, self._index)]
        if expired:
            task = asyncio.get_running_loop().create_task(self.withdraw(expired), name="planner-withdraw")
            self._withdrawing.add(task)
            task.add_done_callback(self._withdrawing.discard)

    async def withdraw(self, expired: Sequence[Active]) -> int:
        """Enqueue the `removed` pushes of alerts that expired; returns how many. A store
        that does not take them is logged: the other nodes enqueue the same (and FPAS
        clients drop expired alerts themselves)."""
        now = time.time()
        planned = [d for active in expired for d in withdrawals(active, self._members(active, (FPAS,)), now)]
        try:
            await enqueue_all(self._nc, self._js, self._settings, planned)
        except (StoreUnavailable, nats.errors.Error, asyncio.TimeoutError) as exc:
            log.warning("expired alerts' withdrawals not enqueued", extra={"error": repr(exc)[:200]})
            return 0
        if planned:
            log.info("expired alerts withdrawn", extra={"alerts": len(expired), "deliveries": len(planned)})
        return len(planned)

    def _members(self, active: Active, channels: Sequence[str]) -> list[tuple[str, str]]:
        """(device id, channel) of the devices on `channels` the alert reaches."""
        return self._devices.members(None if active.everywhere else active.cover, active.alert.status.value, channels)

    async def _plan(self) -> None:
        while True:
            try:
                subscription = await self._js.pull_subscribe(
                    f"{self._settings.stream}.>", durable=CONSUMER, stream=self._settings.stream,
                    config=self.consumer_config(),
                )
                await self._keep_ack_wait(subscription)
                await self._pull(subscription)
            except (nats.errors.Error, StoreUnavailable, OSError) as exc:
                log.warning("planner waiting for the store", extra={"error": repr(exc)[:200]})
                await asyncio.sleep(1.0)

    async def _keep_ack_wait(self, subscription: JetStreamContext.PullSubscription) -> None:
        """A consumer made with another ack_wait (an older node's, another node's setting) is
        updated to this node's: pull_subscribe keeps a durable's config as it found it."""
        info = await subscription.consumer_info()
        wanted = self._settings.planner_ack_wait_s
        if info.config.ack_wait is None or abs(float(info.config.ack_wait) - wanted) > 0.001:
            try:
                await self._js.add_consumer(self._settings.stream, config=self.consumer_config())
            except nats.js.errors.APIError as exc:  # refused: plan with the consumer as it is
                log.warning("planner consumer's ack_wait not changed", extra={
                    "was_s": info.config.ack_wait, "wanted_s": wanted, "error": repr(exc)[:200]})
                return
            log.info("planner consumer's ack_wait set", extra={"was_s": info.config.ack_wait, "now_s": wanted})

    async def _pull(self, subscription: JetStreamContext.PullSubscription) -> None:
        while True:
            while self._index.last_seq < self._behind_seq:  # leave the alerts to nodes that can plan them
                await asyncio.sleep(0.1)
            try:
                messages = await subscription.fetch(1, timeout=5.0)
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                continue
            for msg in messages:
                await self.handle(msg)

    async def handle(self, msg: Any) -> None:
        """Plan one alert message, then ack it; nak it when the plan could not finish."""
        seq = int(msg.metadata.sequence.stream)
        try:
            active = await self._wait_for(seq, msg)
            if active is not None:
                await self.plan(active, still_working=msg.in_progress)
        except (StoreUnavailable, nats.errors.Error, asyncio.TimeoutError, TimeoutError) as exc:
            log.warning("alert not planned; again soon", extra={"seq": seq, "error": repr(exc)[:200]})
            with contextlib.suppress(nats.errors.Error):
                await msg.nak(delay=1.0)
            return
        with contextlib.suppress(nats.errors.Error):
            await msg.ack()

    async def _wait_for(self, seq: int, msg: Any) -> Active | None:
        """This node's active alert at `seq`, once its follower is past it; None when the
        index does not hold it then (expired or unreadable: nothing to plan).

        Raises:
            TimeoutError: the follower did not reach it within FOLLOWER_WAIT_S.
        """
        deadline = time.monotonic() + FOLLOWER_WAIT_S
        last_word = time.monotonic()
        while self._index.last_seq < seq:
            if time.monotonic() > deadline:
                self._behind_seq = seq
                raise TimeoutError(f"this node's follower is not at seq {seq}")
            if time.monotonic() - last_word > self._settings.planner_ack_wait_s / 3:
                await msg.in_progress()
                last_word = time.monotonic()
            await asyncio.sleep(0.02)
        return self._index.active.get(seq)

    async def plan(self, active: Active, *, still_working: Callable[[], Any] | None = None) -> int:
        """Enqueue the alert's deliveries; returns how many (duplicates included)."""
        planned = deliveries(active, self._members(active, self._channels), self._routes_for(active.alert.status.value))
        await enqueue_all(self._nc, self._js, self._settings, planned, still_working=still_working)
        alert_id = str(active.stored.envelope.alert_id)
        counts: dict[str, int] = {}
        for delivery in planned:
            counts[delivery.channel] = counts.get(delivery.channel, 0) + 1
        for channel, n in counts.items():
            self._progress.planned(alert_id, channel, n)
        self.planned += 1
        log.info("alert planned", extra={"alert_id": alert_id, "deliveries": len(planned)})
        return len(planned)

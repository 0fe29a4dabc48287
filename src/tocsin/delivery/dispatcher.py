"""Dispatchers: the work queue's push deliveries -> one send each, retried until expiry.

Every node runs one `Dispatcher` on two durable pull consumers of the DELIVERIES stream
that all nodes share: "dispatch-urgent" (`S.device.urgent.>`, Extreme Actual alerts, pulled
first) and "dispatch-normal" (`S.device.normal.>`). A delivery is acked only once its last
word is said (sent, given up, registration gone); a dispatcher that dies holds its messages
until `ack_wait`, then another node's takes them (docs/delivery.md):

- a retryable failure (5xx, timeout, a send that raised) or a rate limit is nak'ed with a
  full-jitter backoff, uniform(0, min(max, base * 2**attempt)), never shorter than the
  gateway's Retry-After; an attempt that would fall after the alert's expiry is not made;
- a circuit breaker per gateway host: after `breaker_failures` failures in a row the host is
  left alone for `breaker_open_s`, then one trial send decides whether it closes again;
- a gateway that says the token or subscription is gone: the registration is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from tocsin.api.device_records import LIVE
from tocsin.cap.model import Alert, Info
from tocsin.delivery.model import EXPIRED, Delivery, Outcome, Push, Result, Sender, pointer_payload, push_payload, topic_for
from tocsin.delivery.progress import Progress
from tocsin.delivery.queue import canary_subject, enqueue, node_token
from tocsin.errors import StoreUnavailable
from tocsin.pipeline.index import Active, ActiveIndex
from tocsin.settings import Settings
from tocsin.store.base import Records, alert_id_for

log = logging.getLogger(__name__)

URGENT, NORMAL = "dispatch-urgent", "dispatch-normal"
# This node's own lane (queue.canary_subject): deliveries to its prober's Web Push canary.
LANE = "dispatch-canary-"
# Deliveries a consumer may hold unacked across the cluster: in flight plus those nak'ed
# with a delay (a failing gateway's backlog must not stop the others).
MAX_ACK_PENDING = 65536
# Alerts whose push payloads a dispatcher keeps made (Dispatcher._payloads).
PAYLOADS_KEPT = 64
# What a platform shows before the app runs: the start of the description.
BODY_CHARS = 240
# How long a pull waits on an empty lane: the urgent lane briefly (it is asked first each
# time), the normal one longer (a fresh urgent message waits at most this).
URGENT_WAIT_S = 0.01
NORMAL_WAIT_S = 0.25
# The work left for a channel no sender here serves (another node may serve it).
NO_SENDER_DELAY_S = 5.0

OnSent = Callable[[Delivery, Push], Any]


def backoff_s(attempt: int, settings: Settings, retry_after_s: float | None = None,
              uniform: Callable[[float, float], float] = random.uniform) -> float:
    """Full jitter: uniform(0, min(max, base * 2**attempt)), at least any Retry-After."""
    ceiling = min(settings.delivery_backoff_max_s, settings.delivery_backoff_base_s * 2 ** min(attempt, 40))
    return max(uniform(0.0, ceiling), retry_after_s or 0.0)


class Breaker:
    """Consecutive failures per gateway host; open for `open_s` after `failures` of them,
    then half-open: one trial send. Holds only hosts that are failing now (bounded by the
    hosts a deployment sends to)."""

    def __init__(self, failures: int, open_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._failures = failures
        self._open_s = open_s
        self._clock = clock
        self._failed: dict[str, int] = {}
        self._opened: dict[str, float] = {}
        self._trial: set[str] = set()

    def wait_s(self, host: str) -> float:
        """0 when a send to `host` may go now (the trial, when half-open); else how long to wait."""
        opened = self._opened.get(host)
        if opened is None:
            return 0.0
        remaining = opened + self._open_s - self._clock()
        if remaining > 0:
            return remaining
        if host in self._trial:
            return self._open_s / 4 or 0.01  # the trial is out: wait for its word
        self._trial.add(host)
        return 0.0

    def is_open(self, host: str) -> bool:
        return host in self._opened

    def record(self, host: str, *, failed: bool) -> None:
        self._trial.discard(host)
        if not failed:
            self._failed.pop(host, None)
            self._opened.pop(host, None)
            return
        n = self._failed[host] = self._failed.get(host, 0) + 1
        if n >= self._failures or host in self._opened:
            self._opened[host] = self._clock()


def info_for(alert: Alert, languages: Sequence[str]) -> Info | None:
    """The info in the device's first language (exact, then the primary subtag), else the first."""
    if not alert.infos:
        return None
    if languages:
        wanted = str(languages[0]).lower()
        for exact in (True, False):
            for info in alert.infos:
                tag = info.language.lower()
                if tag == wanted if exact else tag.split("-")[0] == wanted.split("-")[0]:
                    return info
    return alert.infos[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class Parts:
    """What a dispatcher reads besides the queue: the devices' records and its follower's index."""

    devices: Records
    index: ActiveIndex
    public_url: Callable[[], str]  # the node's public base URL (known once it listens)


class Dispatcher:
    """This node's dispatchers (both consumers, one bound on sends in flight)."""

    def __init__(
        self, *, js: JetStreamContext, settings: Settings, parts: Parts, senders: Mapping[str, Sender],
        progress: Progress, concurrency: int | None = None,
        on_attempt: Callable[[str, str], None] = lambda channel, outcome: None,
        on_removed: Callable[[str], None] = lambda channel: None,
    ) -> None:
        self._js = js
        self._settings = settings
        self._parts = parts
        self._senders = senders
        self._progress = progress
        self._concurrency = concurrency if concurrency is not None else settings.dispatch_concurrency
        self._on_attempt = on_attempt
        self._on_removed = on_removed
        self.on_sent: list[OnSent] = []
        self.forwarded = 0  # canary deliveries handed to their own node's lane
        # Each alert's payload and pointer, made once for all its devices (an alert's CAP is
        # encoded once, not once per device); a few alerts at a time, dropped in a lump.
        self._payloads: dict[tuple[int, str], tuple[bytes, bytes]] = {}
        self.breaker = Breaker(settings.breaker_failures, settings.breaker_open_s)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._room = asyncio.Condition()

    def consumer_config(self, name: str) -> ConsumerConfig:
        if name.startswith(LANE):
            subject = canary_subject(self._settings, self._settings.node_name)
        else:
            lane = "urgent" if name == URGENT else "normal"
            subject = f"{self._settings.deliveries_stream}.device.{lane}.>"
        return ConsumerConfig(
            durable_name=name, deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._settings.delivery_ack_wait_s, max_deliver=-1, max_ack_pending=MAX_ACK_PENDING,
            filter_subject=subject,
        )

    async def _subscribe(self, name: str) -> JetStreamContext.PullSubscription:
        config = self.consumer_config(name)
        assert config.filter_subject is not None
        return await self._js.pull_subscribe(config.filter_subject, durable=name,
                                             stream=self._settings.deliveries_stream, config=config)

    async def run(self) -> None:
        """Pull and send until cancelled; sends in flight are left unacked (redelivered)."""
        try:
            while True:
                try:
                    urgent, normal = await self._subscribe(URGENT), await self._subscribe(NORMAL)
                    own = await self._subscribe(LANE + node_token(self._settings.node_name))
                    await self._pull(urgent, normal, own)
                except (nats.errors.Error, StoreUnavailable, OSError) as exc:
                    log.warning("dispatcher waiting for the store", extra={"error": repr(exc)[:200]})
                    await asyncio.sleep(1.0)
        finally:
            for task in list(self._in_flight):
                task.cancel()

    async def drain(self, timeout_s: float) -> None:
        """Let the sends in flight finish (at shutdown), at most `timeout_s`."""
        if self._in_flight:
            await asyncio.wait(list(self._in_flight), timeout=timeout_s)

    async def _pull(self, urgent: Any, normal: Any, own: Any) -> None:
        # Pull again once half the slots are free (at least one): each pull is a round trip
        # (and a short wait on an empty urgent lane), so pulls of one message each would
        # bound a node to a few tens of sends a second (measured: bench/push_bench.py).
        refill_at = max(1, self._concurrency // 2)
        while True:
            async with self._room:
                await self._room.wait_for(lambda: self._concurrency - len(self._in_flight) >= refill_at)
            room = self._concurrency - len(self._in_flight)
            messages = (await _fetch(urgent, room, URGENT_WAIT_S) or await _fetch(own, room, URGENT_WAIT_S)
                        or await _fetch(normal, room, NORMAL_WAIT_S))
            for msg in messages:
                task = asyncio.create_task(self._handle_one(msg), name="dispatch")
                self._in_flight.add(task)
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)

        async def tell() -> None:
            async with self._room:
                self._room.notify_all()

        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(tell())

    async def _handle_one(self, msg: Any) -> None:
        try:
            await self.handle(msg)
        except (nats.errors.Error, StoreUnavailable) as exc:
            # The ack or the record read failed: left as it is, redelivered after ack_wait.
            log.warning("delivery left for redelivery", extra={"error": repr(exc)[:200]})

    async def handle(self, msg: Any) -> None:
        """One delivery: its last word (ack or term), or a nak with the delay until the next try."""
        try:
            delivery = Delivery.from_bytes(msg.data)
        except ValueError:
            await msg.term()
            return
        if delivery.expires_at <= time.time():
            await self._give_up(msg, delivery, Outcome.PERMANENT, "expired")
            return
        sender = self._senders.get(delivery.channel)
        if sender is None:
            await msg.nak(delay=NO_SENDER_DELAY_S)
            return
        push = await self._push(msg, delivery)
        if push is None:
            return
        host = sender.host(push)
        wait_s = self.breaker.wait_s(host)
        if wait_s > 0:
            await self._again(msg, delivery, wait_s, "breaker-open")
            return
        result = await self._send(sender, push)
        self.breaker.record(host, failed=result.outcome in (Outcome.RETRY, Outcome.RATE_LIMITED))
        self._on_attempt(delivery.channel, result.outcome.value)
        await self._conclude(msg, delivery, push, result)

    async def _send(self, sender: Sender, push: Push) -> Result:
        try:
            async with asyncio.timeout(self._settings.push_timeout_s + 1.0):
                return await sender.send(push)
        except TimeoutError:
            return Result(outcome=Outcome.RETRY, reason="timeout")
        except Exception as exc:  # a sender's bug: retried after a backoff, never lost
            log.exception("send raised", extra={"channel": sender.channel, "error": repr(exc)[:200]})
            return Result(outcome=Outcome.RETRY, reason="error")

    async def _conclude(self, msg: Any, delivery: Delivery, push: Push, result: Result) -> None:
        if result.outcome is Outcome.SENT:
            await msg.ack()
            if not delivery.removal:  # a withdrawal is not the alert's delivery
                self._progress.finished(delivery.alert_id, delivery.channel, Outcome.SENT)
            for hook in self.on_sent:
                try:
                    hook(delivery, push)
                except Exception:
                    log.exception("on_sent hook raised")
        elif result.outcome in (Outcome.RETRY, Outcome.RATE_LIMITED):
            attempt = int(msg.metadata.num_delivered or 1)
            await self._again(msg, delivery, backoff_s(attempt, self._settings, result.retry_after_s),
                              result.reason or result.outcome.value)
        elif result.outcome is Outcome.GONE:
            await self._remove(delivery, push)
            await self._give_up(msg, delivery, Outcome.GONE, result.reason or "gone")
        else:
            await self._give_up(msg, delivery, Outcome.PERMANENT, result.reason or "permanent")

    async def _again(self, msg: Any, delivery: Delivery, delay_s: float, reason: str) -> None:
        """A nak with `delay_s`, unless the next attempt would come after the alert expired."""
        if time.time() + delay_s >= delivery.expires_at:
            await self._give_up(msg, delivery, Outcome.PERMANENT, "expired")
            return
        await msg.nak(delay=delay_s)

    async def _give_up(self, msg: Any, delivery: Delivery, outcome: Outcome, reason: str) -> None:
        await msg.term()
        if not delivery.removal:
            self._progress.finished(delivery.alert_id, delivery.channel, outcome, reason)

    async def _remove(self, delivery: Delivery, push: Push) -> None:
        """The gateway says the registration is gone: delete it, unless it changed meanwhile
        (a PUT with a new subscription is not undone by a 410 for the old one)."""
        record = await self._parts.devices.get(delivery.destination)
        if record is not None and record.get("push") == push.target:
            await self._parts.devices.delete(delivery.destination)
            self._on_removed(delivery.channel)
            log.info("registration removed: its gateway says it is gone",
                     extra={"channel": delivery.channel, "device": delivery.destination})

    async def _push(self, msg: Any, delivery: Delivery) -> Push | None:
        """The request to make, or None when the delivery got its last word here already."""
        record = await self._parts.devices.get(delivery.destination)
        if record is None or record.get("channel", LIVE) != delivery.channel or not isinstance(record.get("push"), dict):
            # Deleted (or re-registered elsewhere) since it was planned: nothing to send.
            await self._give_up(msg, delivery, Outcome.PERMANENT, "unregistered")
            self._on_attempt(delivery.channel, "unregistered")
            return None
        owner = record.get("node")
        if record.get("canary") and isinstance(owner, str) and owner and owner != node_token(self._settings.node_name):
            # A canary's receiver is on its own node's loopback: only that node reaches it.
            await enqueue(self._js, self._settings, delivery, to_node=owner)
            await msg.ack()
            self.forwarded += 1
            return None
        if delivery.removal:  # FPAS: an expired alert's withdrawal, which the index no longer holds
            return self.removal_for(delivery, record)
        index = self._parts.index
        active = index.active.get(delivery.seq)
        if active is None:
            if index.last_seq < delivery.seq:  # this node's follower is behind: soon
                await msg.nak(delay=0.5)
            else:  # expired or unreadable here
                await self._give_up(msg, delivery, Outcome.PERMANENT, "expired")
            return None
        return self.push_for(delivery, active, record)

    def _payload_of(self, active: Active, url: str) -> tuple[bytes, bytes]:
        key = (active.stored.seq, url)
        found = self._payloads.get(key)
        if found is None:
            if len(self._payloads) >= PAYLOADS_KEPT:
                self._payloads.clear()
            envelope = active.stored.envelope
            found = self._payloads[key] = (push_payload(envelope, active.stored.seq, pointer_url=url),
                                           pointer_payload(envelope, active.stored.seq, pointer_url=url))
        return found

    @staticmethod
    def removal_for(delivery: Delivery, record: dict[str, Any]) -> Push:
        return Push(delivery=delivery, target=record["push"], payload=b"", pointer=b"", topic="", severity="Unknown",
                    status="Actual", ttl_s=max(0, int(delivery.expires_at - time.time())), msg_type=EXPIRED)

    def push_for(self, delivery: Delivery, active: Active, record: dict[str, Any]) -> Push:
        envelope = active.stored.envelope
        root = self._parts.index.active.get(active.root_seq) if active.root_seq else None
        root_id = str((root or active).stored.envelope.alert_id)
        url = f"{self._parts.public_url().rstrip('/')}/api/v1/events/{envelope.alert_id}"
        info = info_for(active.alert, record.get("languages") or [])
        payload, pointer = self._payload_of(active, url)
        return Push(
            delivery=delivery, target=record["push"], payload=payload, pointer=pointer,
            topic=topic_for(root_id), severity=info.severity.value if info else "Unknown",
            status=active.alert.status.value, ttl_s=max(0, int(delivery.expires_at - time.time())),
            headline=(info.headline or info.event) if info else "",
            body=((info.description or "")[:BODY_CHARS]) if info else "",
            msg_type=active.alert.msg_type.value,  # FPAS
            references=tuple(alert_id_for(r.sender, r.identifier) for r in active.alert.references),
        )


async def _fetch(subscription: Any, batch: int, timeout_s: float) -> list[Any]:
    try:
        messages: list[Any] = await subscription.fetch(batch, timeout=timeout_s)
        return messages
    except (nats.errors.TimeoutError, asyncio.TimeoutError):
        return []

"""The DELIVERIES work queue on JetStream: its stream, its subjects, and enqueueing.

Subjects (`S` is settings.deliveries_stream):

- `S.device.urgent.<channel>`: Extreme Actual alerts to push devices, pulled first;
- `S.device.normal.<channel>`: every other alert to push devices;
- `S.route.<route>`: CAP forwarding, one subject and one ordered consumer per route.

Work-queue retention: a message leaves the stream when a dispatcher acks it (or terms it);
consumers' filters never overlap, as JetStream requires of a work queue. The dedupe window
is longer than a planner can take over an alert (its ack_wait and a few redeliveries), so
a replanned alert enqueues nothing twice. Every message carries its alert's expiry as a
per-message TTL too: what no dispatcher took leaves the stream once it cannot matter.
"""

from __future__ import annotations

import asyncio
import math
import time

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from tocsin.delivery.model import Delivery
from tocsin.errors import StoreUnavailable
from tocsin.settings import Settings
from tocsin.store.audit import ensure_stream

# CORE: the planner's durable consumer on the alert stream (delivery/planner.py). It holds
# one alert at a time by design (max_ack_pending 1), so it is "at max ack pending" whenever
# it plans: the readiness check of consumers leaves it out (store.consumer_health).
PLANNER_CONSUMER = "planner"
# A planner that dies is replaced after its ack_wait; a few of those fit in this window.
DEDUPE_WINDOW_S = 15 * 60.0
_FIELDS = ("subjects", "max_bytes", "num_replicas", "duplicate_window", "allow_msg_ttl")


def device_subject(settings: Settings, delivery: Delivery) -> str:
    lane = "urgent" if delivery.urgent else "normal"
    return f"{settings.deliveries_stream}.device.{lane}.{delivery.channel}"


def route_subject(settings: Settings, route: str) -> str:
    return f"{settings.deliveries_stream}.route.{route}"


def subject_for(settings: Settings, delivery: Delivery) -> str:
    if delivery.channel == "cap":
        return route_subject(settings, delivery.destination)
    return device_subject(settings, delivery)


def stream_config(settings: Settings) -> StreamConfig:
    return StreamConfig(
        name=settings.deliveries_stream,
        subjects=[f"{settings.deliveries_stream}.>"],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        num_replicas=settings.replicas,
        discard=DiscardPolicy.NEW,
        max_bytes=settings.deliveries_max_bytes,
        max_msg_size=4096,
        duplicate_window=DEDUPE_WINDOW_S,
        allow_msg_ttl=True,
    )


async def ensure(js: JetStreamContext, settings: Settings) -> None:
    """Create or update the work queue's stream (nats errors as they come: the store's
    `ensure` says what they mean)."""
    await ensure_stream(js, stream_config(settings), _FIELDS)


async def enqueue(js: JetStreamContext, settings: Settings, delivery: Delivery) -> None:
    """Publish one delivery, idempotently (message id `delivery.msg_id`). Expired ones are
    not enqueued at all.

    Raises:
        StoreUnavailable: no acknowledgement (the caller retries the same delivery: safe).
    """
    ttl_s = delivery.expires_at - time.time()
    if ttl_s <= 0:
        return
    headers = {"Nats-Msg-Id": delivery.msg_id, "Nats-TTL": f"{max(1, math.ceil(ttl_s))}s"}
    try:
        await js.publish(subject_for(settings, delivery), delivery.to_bytes(), stream=settings.deliveries_stream,
                         headers=headers)
    except (nats.errors.Error, asyncio.TimeoutError) as exc:
        raise StoreUnavailable("enqueue delivery", repr(exc)) from exc

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
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Sequence

import nats.errors
import nats.js.errors
from nats.aio.client import Client
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
log = logging.getLogger(__name__)

# JetStream's answer to an atomic batch that holds a message id the stream already has.
DUPLICATE_IN_BATCH = 10201
# A planner that dies is replaced after its ack_wait; a few of those fit in this window.
DEDUPE_WINDOW_S = 15 * 60.0
_FIELDS = ("subjects", "max_bytes", "num_replicas", "duplicate_window", "allow_msg_ttl", "allow_atomic")
# CORE: the most messages nats-server takes in one atomic batch (its default limit).
ATOMIC_BATCH = 1000
# How long the answer to a batch's commit may take.
BATCH_TIMEOUT_S = 10.0


def device_subject(settings: Settings, delivery: Delivery) -> str:
    lane = "urgent" if delivery.urgent else "normal"
    return f"{settings.deliveries_stream}.device.{lane}.{delivery.channel}"


def node_token(node: str) -> str:
    """A node's name as one subject token (and as a canary registration's `node`)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", node)[:64] or "_"


def canary_subject(settings: Settings, node: str) -> str:
    """A node's own lane: deliveries to its prober's Web Push canary, whose receiver only
    that node reaches (on its loopback). Only that node's dispatcher pulls it."""
    return f"{settings.deliveries_stream}.canary.{node_token(node)}"


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
        # CORE: a plan enqueues in atomic batches (`enqueue_batch`): one write, one fsync.
        allow_atomic=True,
    )


async def ensure(js: JetStreamContext, settings: Settings) -> None:
    """Create or update the work queue's stream (nats errors as they come: the store's
    `ensure` says what they mean)."""
    await ensure_stream(js, stream_config(settings), _FIELDS)


async def enqueue(js: JetStreamContext, settings: Settings, delivery: Delivery, *, to_node: str = "") -> None:
    """Publish one delivery, idempotently (message id `delivery.msg_id`). Expired ones are
    not enqueued at all. `to_node`: onto that node's canary lane instead (its own id there).

    Raises:
        StoreUnavailable: no acknowledgement (the caller retries the same delivery: safe).
    """
    ttl_s = delivery.expires_at - time.time()
    if ttl_s <= 0:
        return
    subject = canary_subject(settings, to_node) if to_node else subject_for(settings, delivery)
    msg_id = f"{delivery.msg_id}.lane" if to_node else delivery.msg_id
    headers = {"Nats-Msg-Id": msg_id, "Nats-TTL": f"{max(1, math.ceil(ttl_s))}s"}
    try:
        await js.publish(subject, delivery.to_bytes(), stream=settings.deliveries_stream, headers=headers)
    except (nats.errors.Error, asyncio.TimeoutError) as exc:
        raise StoreUnavailable("enqueue delivery", repr(exc)) from exc


async def enqueue_batch(nc: Client, js: JetStreamContext, settings: Settings, deliveries: Sequence[Delivery]) -> None:
    """Enqueue up to ATOMIC_BATCH deliveries as one JetStream atomic batch: the server
    writes them together (with `sync_interval: always`, one fsync instead of one each: about
    15 times the rate of single publishes, docs/delivery.md "Figures"), all or none.

    Each keeps its message id. A batch holding an id the stream already has (an alert
    planned again) is refused whole by the server; so is any batch it cannot take (a stream
    from before `allow_atomic`): the deliveries are then enqueued one by one, concurrently,
    and the dedupe keeps each once. Expired deliveries are left out.

    Raises:
        StoreUnavailable: no answer, or a single publish not acknowledged (the caller
            enqueues the same again: safe).
    """
    now = time.time()
    live = [d for d in deliveries[:ATOMIC_BATCH] if d.expires_at > now]
    if not live:
        return
    batch_id = secrets.token_hex(12)
    try:
        for n, delivery in enumerate(live, 1):
            headers = {"Nats-Msg-Id": delivery.msg_id,
                       "Nats-TTL": f"{max(1, math.ceil(delivery.expires_at - now))}s",
                       "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(n)}
            if n < len(live):
                await nc.publish(subject_for(settings, delivery), delivery.to_bytes(), headers=headers)
                continue
            headers["Nats-Batch-Commit"] = "1"
            reply = await nc.request(subject_for(settings, delivery), delivery.to_bytes(), headers=headers,
                                     timeout=BATCH_TIMEOUT_S)
    except (nats.errors.Error, asyncio.TimeoutError) as exc:
        raise StoreUnavailable("enqueue a batch of deliveries", repr(exc)) from exc
    try:
        answer = json.loads(reply.data)
    except ValueError:
        answer = {"error": {"description": "not JSON"}}
    if isinstance(answer, dict) and "error" not in answer:
        return
    error = answer.get("error") if isinstance(answer, dict) else None
    if not (isinstance(error, dict) and error.get("err_code") == DUPLICATE_IN_BATCH):
        log.warning("atomic batch refused; enqueueing one by one", extra={"error": str(error)[:200]})
    await asyncio.gather(*(enqueue(js, settings, delivery) for delivery in live))

"""The route worker: posts each route's deliveries downstream in order, and tests its link.

Runs on every node (app.py). For each enabled route it pulls the route's durable consumer
(`route-<name>`, routes.py) on the DELIVERIES work queue. That consumer lets one delivery
be in flight in the whole cluster (max_ack_pending 1), and a delivery that is retried stays
in flight through its backoff (a nak with a delay keeps it pending), so a route's
deliveries reach it in the stream's order: a Cancel goes only once its Alert was accepted
downstream, refused for good (a 4xx), or given up at its expiry.

One attempt: the alert's signed CAP as stored, POSTed as `application/cap+xml` with the
signature, key id, alert id and seq in headers and the route's bearer token. 2xx: acked.
408, 425, 429, 5xx, a timeout or a broken connection: naked with a full-jitter backoff, at
least any Retry-After. Any other answer: termed, recorded as refused. At the alert's expiry,
or when the next attempt could only come after it: termed, recorded as expired. Nothing is
ever posted after the alert's expiry.

Link tests: every `route_link_test_s`, one node (the one that creates the route's lease key,
which expires after the interval) posts a System message signed by the deployment to the
route and records the outcome. What each route's status holds is in the status bucket
(`delivery.<name>`, `link.<name>`), mirrored by every node; the backlog (`pending`) is read
from the consumer by each node itself.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from tocsin.cap.compose import simple_alert
from tocsin.client.backoff import Backoff
from tocsin.delivery.http import gateway_client
from tocsin.delivery.model import CAP, Delivery, Outcome, Result
from tocsin.delivery.routes import (
    Route,
    RouteBook,
    consumer_name,
    ensure_consumer,
    is_route_consumer,
    remove_consumer,
)
from tocsin.errors import AlertNotFound, StoreUnavailable
from tocsin.settings import Settings
from tocsin.signing import SigningKey
from tocsin.store.base import AlertId, AlertStore, Envelope, Records, alert_id_for

log = logging.getLogger(__name__)

# How long one pull waits for a delivery before it asks again.
FETCH_S = 5.0
# How soon a route added or enabled on another node gets its loop here (the mirror's news).
SUPERVISE_S = 0.5
# A Retry-After beyond this is read as this (a day): the alert expires first anyway.
MAX_RETRY_AFTER_S = 86400.0
# The statuses of an answer worth trying again (RFC 9110, RFC 8470, RFC 6585).
RETRYABLE = frozenset({408, 425, 429})
LINK_TEST_SENDER = "tocsin-link-test"
# No attempt starts this close to the alert's expiry: what is sent arrives before it.
EXPIRY_MARGIN_S = 1.0
# What the downstream's answer may hold in our logs and records.
MAX_REASON_CHARS = 200

Finished = Callable[[str, str, Outcome, str], None]


def retry_after_s(value: str | None, now: float) -> float | None:
    """A Retry-After header in seconds (delta-seconds or an HTTP date), bounded; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()[:64]
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER_S)


def classify(status: int, retry_after: float | None) -> Result:
    """What an HTTP answer means for a CAP delivery."""
    reason = f"http-{status}"
    if 200 <= status < 300:
        return Result(outcome=Outcome.SENT, status=status)
    if status == 429:
        return Result(outcome=Outcome.RATE_LIMITED, reason=reason, retry_after_s=retry_after, status=status)
    if status in RETRYABLE or status >= 500:
        return Result(outcome=Outcome.RETRY, reason=reason, retry_after_s=retry_after, status=status)
    return Result(outcome=Outcome.PERMANENT, reason=reason, status=status)


async def post_cap(client: httpx.AsyncClient, route: Route, envelope: Envelope, *, seq: int, node: str,
                   clock: Callable[[], float] = time.time, timeout_s: float | None = None) -> Result:
    """One POST of the signed CAP to the route. Never raises for what the link does; the
    answer's body is not read (a downstream's answer costs nothing but its headers).
    `timeout_s`: a deadline shorter than the client's (the alert expires sooner)."""
    headers = {
        "Content-Type": "application/cap+xml",
        "Tocsin-Signature": envelope.sig, "Tocsin-Key-Id": envelope.kid,
        "Tocsin-Alert-Id": envelope.alert_id, "Tocsin-Seq": str(seq), "Tocsin-Node": node,
    }
    if route.token:
        headers["Authorization"] = f"Bearer {route.token}"
    timeout = httpx.USE_CLIENT_DEFAULT if timeout_s is None else httpx.Timeout(timeout_s)
    closed = Result(outcome=Outcome.RETRY, reason="connection: RemoteProtocolError")
    for _ in range(2):  # a kept connection the downstream had closed answered nothing: once more
        try:
            async with client.stream("POST", route.url, content=envelope.payload, headers=headers,
                                     timeout=timeout) as response:
                return classify(response.status_code, retry_after_s(response.headers.get("retry-after"), clock()))
        except httpx.RemoteProtocolError:
            continue
        except httpx.TimeoutException:
            return Result(outcome=Outcome.RETRY, reason="timeout")
        except httpx.HTTPError as exc:
            return Result(outcome=Outcome.RETRY, reason=f"connection: {type(exc).__name__}")
    return closed


def link_test_envelope(signer: SigningKey, route: str, node: str, now: datetime, lifetime_s: float) -> Envelope:
    """A System message signed by the deployment whose identifier says it is a link test."""
    sent = now.astimezone(UTC).replace(microsecond=0)
    identifier = f"tocsin-link-test.{route}.{node}.{int(sent.timestamp())}"
    payload = simple_alert(
        identifier=identifier, sender=LINK_TEST_SENDER, sent=sent, status="System", expires_in_s=max(60.0, lifetime_s),
        polygon="0.0000,0.0000 0.0000,0.0010 0.0010,0.0010 0.0010,0.0000 0.0000,0.0000", language="en-US",
        category="Other", event="tocsin link test", urgency="Unknown", severity="Unknown", certainty="Unknown",
        headline=f"tocsin link test of route {route}", area_desc="none: a link test",
    )
    return Envelope(alert_id=alert_id_for(LINK_TEST_SENDER, identifier), payload=payload, sig=signer.sign(payload),
                    kid=signer.kid, issuer="deployment", node=node, accepted_at=sent)


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat()


def delivery_key(route: str) -> str:
    return f"delivery.{route}"


def link_key(route: str) -> str:
    return f"link.{route}"


def lease_key(route: str) -> str:
    return f"lease.{route}"


def route_status(route: Route, status: Mapping[str, dict[str, Any]], pending: int | None) -> dict[str, Any]:
    """One route's status as answers show it: ok, a detail that names what is wrong, and
    the last success, last failure, last link test and the deliveries waiting."""
    delivery = status.get(delivery_key(route.name)) or {}
    link = status.get(link_key(route.name))
    success: dict[str, Any] = delivery.get("last_success") or {}
    failure: dict[str, Any] = delivery.get("last_failure") or {}
    failing_now = failure.get("outcome") == "retry" and str(failure.get("at", "")) > str(success.get("at", ""))
    detail = ""
    if link is not None and not link.get("ok"):
        detail = f"link test failed at {link.get('at')}: {link.get('reason')}"
    elif failing_now:
        detail = f"deliveries failing since {failure.get('at')}: {failure.get('reason')}"
    # A route an admin disabled is not a fault: said, never failing (nor link-tested).
    ok = not route.enabled or not detail
    return {
        "ok": ok, "detail": "disabled: nothing is forwarded" if not route.enabled else detail,
        "enabled": route.enabled, "pending": pending,
        "last_success": success or None, "last_failure": failure or None, "link_test": link, "counts": delivery.get("counts", {}),
    }


class RouteWorker:
    """Every route's delivery loop and link tests on this node."""

    def __init__(self, *, settings: Settings, js: JetStreamContext, store: AlertStore, book: RouteBook,
                 status_records: Records, status: dict[str, dict[str, Any]], signer: SigningKey,
                 finished: Finished | None = None, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None, loaded: asyncio.Event | None = None,
                 routes: Records | None = None) -> None:
        self.settings = settings
        self._js = js
        self._store = store
        self.book = book
        self._status_records = status_records
        self.status = status
        self._signer = signer
        # The routes bucket itself: the sweep reads it before it removes anything.
        self._routes = routes
        self._finished = finished
        self._clock = clock
        self._rng = rng or random.Random()
        # Set once the book holds the bucket (its mirror's first pass): only then may a
        # consumer whose route the book lacks be taken as left over.
        self.loaded = loaded or asyncio.Event()
        self.pending: dict[str, int] = {}
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._testing: dict[str, asyncio.Task[Any]] = {}
        self._client: httpx.AsyncClient | None = None
        self._backoff = Backoff(max(0.001, settings.delivery_backoff_base_s),
                                max(settings.delivery_backoff_base_s, settings.delivery_backoff_max_s))

    @property
    def tick_s(self) -> float:
        return min(5.0, max(0.2, self.settings.route_link_test_s / 4))

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = gateway_client(self.settings, max_connections=4)
        return self._client

    async def run(self) -> None:
        """Keep one delivery loop per enabled route, test links, read backlogs; forever."""
        passes = 0
        next_pass = 0.0
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._supervise()
                if loop.time() >= next_pass:
                    await self._pass(sweep=passes % 10 == 0)
                    passes += 1
                    next_pass = loop.time() + self.tick_s
                await asyncio.sleep(SUPERVISE_S)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        tasks = [*self._loops.values(), *self._testing.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loops.clear()
        self._testing.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _supervise(self) -> None:
        wanted = {route.name for route in self.book.routes() if route.enabled}
        for name in sorted(wanted - set(self._loops)):
            self._loops[name] = asyncio.create_task(self._deliver_loop(name), name=f"route:{name}")
        for name in sorted(set(self._loops) - wanted):
            self._loops.pop(name).cancel()
            self.pending.pop(name, None)
        for name, task in list(self._testing.items()):
            if task.done():
                del self._testing[name]

    async def _pass(self, *, sweep: bool) -> None:
        """Each route's backlog and link test; now and then, the consumers of removed routes."""
        for route in self.book.routes():
            if not route.enabled:
                continue
            try:
                info = await self._js.consumer_info(self.settings.deliveries_stream, consumer_name(route.name))
                self.pending[route.name] = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
            except Exception as exc:  # the backlog is a view: unknown until it answers
                log.debug("route backlog unread", extra={"route": route.name, "error": repr(exc)[:200]})
            if route.name not in self._testing and self._link_test_due(route.name) and await self._take_lease(route.name):
                self._testing[route.name] = asyncio.create_task(self.link_test(route), name=f"link-test:{route.name}")
        if sweep and self.loaded.is_set():
            await self._sweep()

    def _link_test_due(self, name: str) -> bool:
        """No bucket write for a lease while the mirrored last test is younger than the
        interval (the lease decides between the nodes once it is due)."""
        last = self.status.get(link_key(name)) or {}
        try:
            at = datetime.fromisoformat(str(last["at"])).timestamp()
        except (KeyError, ValueError):
            return True
        return self._clock() - at >= self.settings.route_link_test_s - self.tick_s

    async def _take_lease(self, name: str) -> bool:
        """One node at a time tests a route, once per interval: whoever creates the lease."""
        try:
            return await self._status_records.create(lease_key(name), {"node": self.settings.node_name},
                                                     ttl_s=self.settings.route_link_test_s)
        except Exception as exc:  # no lease, no test this time
            log.debug("route lease not taken", extra={"route": name, "error": repr(exc)[:200]})
            return False

    async def _sweep(self) -> None:
        """Delete the consumers (and queued deliveries) of routes the bucket no longer holds:
        a removal whose own clean-up failed, or a loop that raced it."""
        try:
            infos = await self._js.consumers_info(self.settings.deliveries_stream)
            for info in infos:
                name = str(info.name or "")
                if not is_route_consumer(name):
                    continue
                route = name.removeprefix("route-")
                if self.book.route(route) is None and self._routes is not None and await self._routes.get(route) is None:
                    await remove_consumer(self._js, self.settings, route)
                    log.info("left-over route consumer removed", extra={"route": route})
        except Exception as exc:
            log.warning("route sweep failed", extra={"error": repr(exc)[:200]})

    async def add(self, name: str) -> None:
        """A route was added: its consumer and its loop now (nats errors as they come)."""
        await ensure_consumer(self._js, self.settings, name)
        self._supervise()

    async def remove(self, name: str) -> None:
        """A route was removed: its loop stops, its consumer, queued deliveries and status
        go (nats errors as they come)."""
        loop = self._loops.pop(name, None)
        if loop is not None:
            loop.cancel()
        self.pending.pop(name, None)
        await remove_consumer(self._js, self.settings, name)
        await forget_status(self._status_records, name)
        for key in (delivery_key(name), link_key(name), lease_key(name)):
            self.status.pop(key, None)

    async def _deliver_loop(self, name: str) -> None:
        """Pull the route's consumer forever, one delivery at a time."""
        while True:
            try:
                if self.book.route(name) is None:  # removed meanwhile: never make its consumer again
                    return
                await ensure_consumer(self._js, self.settings, name)
                sub = await self._js.pull_subscribe_bind(consumer_name(name), stream=self.settings.deliveries_stream)
                try:
                    while True:
                        try:
                            msgs = await sub.fetch(1, timeout=FETCH_S)
                        except nats.errors.TimeoutError:
                            continue
                        for msg in msgs:
                            await self.handle(name, msg)
                finally:
                    try:
                        await sub.unsubscribe()
                    except Exception:
                        pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop must outlive any fault of the bus
                log.warning("route loop restarting", extra={"route": name, "error": repr(exc)[:200]})
                await asyncio.sleep(1.0)

    async def handle(self, name: str, msg: Msg) -> None:
        """One delivery: posted, then acked, naked with a backoff, or termed (never raises
        for what the link or the store does)."""
        try:
            delivery = Delivery.from_bytes(msg.data)
        except ValueError as exc:
            log.error("unreadable route delivery termed", extra={"route": name, "error": str(exc)[:200]})
            await msg.term()
            return
        route = self.book.route(name)
        if route is None or not route.enabled:
            await msg.nak(delay=self.tick_s)
            return
        if self._remaining_s(delivery) <= 0:
            await self._give_up(name, msg, delivery, "expired", "expired")
            return
        try:
            stored = await self._store.get(AlertId(delivery.alert_id))
        except AlertNotFound:
            await self._give_up(name, msg, delivery, "refused", "alert-gone")
            return
        except StoreUnavailable:
            await msg.nak(delay=self._delay(msg))
            return
        remaining = self._remaining_s(delivery)
        if remaining <= 0:
            await self._give_up(name, msg, delivery, "expired", "expired")
            return
        # No request is left in flight past the expiry: it is abandoned there.
        result = await post_cap(self.client, route, stored.envelope, seq=delivery.seq, node=self.settings.node_name,
                                clock=self._clock, timeout_s=min(self.settings.push_timeout_s, remaining))
        await self._settle(name, msg, delivery, result)

    def _remaining_s(self, delivery: Delivery) -> float:
        """How long an attempt may still take: until the expiry, less a margin so that what
        is sent arrives before it (an attempt in its last second is not made)."""
        return delivery.expires_at - EXPIRY_MARGIN_S - self._clock()

    def _delay(self, msg: Msg, at_least: float | None = None) -> float:
        attempt = max(0, int(msg.metadata.num_delivered or 1) - 1)
        return max(self._rng.uniform(0.0, self._backoff.ceiling(attempt)), at_least or 0.0)

    async def _settle(self, name: str, msg: Msg, delivery: Delivery, result: Result) -> None:
        if result.outcome is Outcome.SENT:
            await msg.ack_sync()
            await self._record(name, delivery, "sent", "")
            self._finish(delivery, Outcome.SENT, "")
            return
        if result.outcome is Outcome.PERMANENT:
            await self._give_up(name, msg, delivery, "refused", result.reason)
            return
        delay = self._delay(msg, result.retry_after_s)
        if delay >= self._remaining_s(delivery):
            # The next attempt could only come after the alert's expiry.
            await self._give_up(name, msg, delivery, "expired", f"expired after {result.reason}")
            return
        await msg.nak(delay=delay)
        await self._record(name, delivery, "retry", result.reason)

    async def _give_up(self, name: str, msg: Msg, delivery: Delivery, outcome: str, reason: str) -> None:
        await msg.term()
        log.warning("route delivery given up", extra={"route": name, "alert_id": delivery.alert_id,
                                                      "outcome": outcome, "reason": reason})
        await self._record(name, delivery, outcome, reason)
        self._finish(delivery, Outcome.PERMANENT, outcome if outcome == "expired" else reason)

    def _finish(self, delivery: Delivery, outcome: Outcome, reason: str) -> None:
        if self._finished is not None:
            self._finished(delivery.alert_id, CAP, outcome, reason)

    async def _record(self, name: str, delivery: Delivery, outcome: str, reason: str) -> None:
        """The route's delivery status: counts, last success, last failure (advisory: a
        status write that fails is logged, never a reason to send again)."""
        key = delivery_key(name)
        current = dict(self.status.get(key) or {})
        entry = {"at": _iso(self._clock()), "alert_id": delivery.alert_id}
        if outcome == "sent":
            current["last_success"] = entry
        else:
            current["last_failure"] = {**entry, "outcome": outcome, "reason": reason[:MAX_REASON_CHARS]}
        counts = dict(current.get("counts") or {})
        counts[outcome] = int(counts.get(outcome, 0)) + 1
        current["counts"] = counts
        self.status[key] = current
        try:
            await self._status_records.put(key, current)
        except Exception as exc:
            log.warning("route status not written", extra={"route": name, "error": repr(exc)[:200]})

    async def link_test(self, route: Route) -> dict[str, Any]:
        """Post a link test to the route now and record its outcome; returns the record."""
        now = self._clock()
        envelope = link_test_envelope(self._signer, route.name, self.settings.node_name,
                                      datetime.fromtimestamp(now, UTC), self.settings.route_link_test_s)
        result = await post_cap(self.client, route, envelope, seq=0, node=self.settings.node_name, clock=self._clock)
        record = {"at": _iso(now), "ok": result.outcome is Outcome.SENT, "reason": result.reason,
                  "status": result.status, "node": self.settings.node_name, "alert_id": envelope.alert_id}
        self.status[link_key(route.name)] = record
        try:
            await self._status_records.put(link_key(route.name), record)
        except Exception as exc:
            log.warning("route link test not recorded", extra={"route": route.name, "error": repr(exc)[:200]})
        if not record["ok"]:
            log.warning("route link test failed", extra={"route": route.name, "reason": result.reason})
        return record

    def report(self) -> dict[str, dict[str, Any]]:
        """Every route's status by name (the admin API, /status, /readyz)."""
        return {route.name: route_status(route, self.status, self.pending.get(route.name))
                for route in self.book.routes()}


async def forget_status(records: Records, route: str) -> None:
    """A removed route's status and lease leave the status bucket."""
    for key in (delivery_key(route), link_key(route), lease_key(route)):
        await records.delete(key)


def route_checks(report: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each route as a non-blocking readiness check `route:<name>`: a downstream that is
    down is named, but it is not this node's failure, so it never makes the node unready."""
    return {
        f"route:{name}": {"ok": status["ok"], "age_s": None, "max_age_s": None, "blocking": False,
                          "value": {"pending": status["pending"], "enabled": status["enabled"]},
                          "detail": status["detail"]}
        for name, status in sorted(report.items())
    }

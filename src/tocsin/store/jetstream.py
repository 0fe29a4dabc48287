"""The replicated store on NATS JetStream: alerts stream, the device, accounts and pending buckets, the audit log.

nats errors stop here: callers see StoreUnavailable, AlertNotFound or plain values.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.client import Server as NatsServerRef
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    StorageType,
    StreamConfig,
)
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from tocsin.delivery import queue as deliveries
from tocsin.loopback import is_loopback, url_is_loopback
from tocsin.errors import AlertNotFound, RecordsFull, StoreFull, StoreMisconfigured, StoreUnavailable, TocsinError
from tocsin.geo.gazetteer import MAX_RECORD_BYTES
from tocsin.settings import Settings
from tocsin.store.audit import AuditLog, JetStreamAuditLog, ensure_stream
from tocsin.store.base import AlertId, ConsumerHealth, DeviceSink, Envelope, Records, Stored, StreamHealth, StreamPosition
from tocsin.store.device_feed import SnapshotStale, feed_devices

log = logging.getLogger(__name__)

# JetStream API error: "wrong last sequence", i.e. the subject already holds an alert.
_WRONG_LAST_SEQUENCE = 10071
# JetStream API error: "insufficient storage resources available".
_INSUFFICIENT_RESOURCES = 10047
# JetStream API error: "maximum bytes exceeded": the stream reached its max_bytes (discard: new).
_MAXIMUM_BYTES_EXCEEDED = 10077
# What JetStream takes as a key: dot-separated tokens, none empty. nats-py checks the
# characters and the ends but not an empty token inside ("org..0"), which the server never
# answers: a read of such a key would wait out every retry (10 s) and say 503.
_KEY_TOKEN = re.compile(r"[-/_=a-zA-Z0-9]+")


def is_valid_key(key: str) -> bool:
    return bool(key) and all(_KEY_TOKEN.fullmatch(token) for token in key.split("."))

_H_SIG, _H_KID, _H_ISSUER = "Tocsin-Sig", "Tocsin-Kid", "Tocsin-Issuer"
_H_NODE, _H_ACCEPTED, _H_EXPIRES = "Tocsin-Node", "Tocsin-Accepted-At", "Tocsin-Expires"
_H_COVER = "Tocsin-Cover"  # the compacted cover's cells, space separated
_H_TTL = "Nats-TTL"
# The stream settings tocsin sets; a start updates the stream only when one differs.
_STREAM_FIELDS = (
    "subjects", "storage", "num_replicas", "discard", "max_bytes", "max_msg_size", "max_msgs_per_subject",
    "discard_new_per_subject", "duplicate_window", "deny_delete", "deny_purge", "allow_direct", "allow_msg_ttl",
)


# Early copies waiting for this node's handler at most (pipeline/early.py).
EARLY_PENDING = 256
EARLY_PENDING_BYTES = 64 * 1024 * 1024


def early_subject(stream: str) -> str:
    """The core NATS subject of a stream's early copies (pipeline/early.py): not under the
    stream's own subjects (`<stream>.>`), so JetStream never stores what is sent there."""
    return f"tocsin.early.{stream}"


def subject_for(stream: str, alert_id: AlertId) -> str:
    """One subject per alert, under the stream's own name (streams never overlap)."""
    return f"{stream}.{alert_id}"


def _jittered_server(servers: list[NatsServerRef], info: dict[str, Any]) -> tuple[NatsServerRef, float]:
    """Reconnect to a random known server after a full-jitter delay (no thundering herd)."""
    attempt = min((s.reconnects for s in servers), default=0)
    delay = random.uniform(0, min(2.0, 0.05 * 2**attempt))
    return random.choice(servers), delay


async def connect(
    settings: Settings, servers: list[str], name: str, *, user: str = "", password: str = ""
) -> Client:
    """Connect with tocsin's safe client settings: reconnect forever, ping often, jitter.

    Then refuse a NATS that lets anonymous clients in beyond loopback, unless allowed.

    Raises:
        StoreMisconfigured: the NATS accepts anonymous clients on a non-loopback address.
    """
    nc = await nats.connect(
        servers=servers,
        name=name,
        user=user or None,
        password=password or None,
        tls=_tls(settings),
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=2,
        ping_interval=int(max(1, settings.nats_ping_interval_s)),
        max_outstanding_pings=settings.nats_max_outstanding_pings,
        reconnect_to_server_handler=_jittered_server,
        error_cb=_log_error,
        disconnected_cb=_log_disconnected,
        reconnected_cb=_log_reconnected,
    )
    try:
        await _refuse_anonymous(settings, servers, nc)
    except BaseException:
        await nc.close()
        raise
    return nc


def _tls(settings: Settings) -> ssl.SSLContext | None:
    if not settings.nats_tls_ca_file:
        return None
    return ssl.create_default_context(cafile=settings.nats_tls_ca_file)


def _exposed(servers: list[str], nc: Client) -> str | None:
    """A non-loopback address the NATS is reached on or listens on; None when all loopback."""
    listening = str(nc._server_info.get("host", ""))  # the server's own INFO: where it listens
    if listening and not is_loopback(listening):
        return listening
    return next((url for url in servers if not url_is_loopback(url)), None)


async def accepts_anonymous(host: str, port: int, tls: ssl.SSLContext | None = None, timeout_s: float = 2.0) -> bool:
    """Whether the NATS server at host:port lets a client in without credentials.

    Speaks the protocol's first exchange itself (INFO, CONNECT, PING): a PONG is a yes,
    an -ERR (Authorization Violation) a no. Raises OSError/TimeoutError when unreachable.
    """
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    try:
        async with asyncio.timeout(timeout_s):
            info = json.loads((await reader.readline()).decode().partition(" ")[2] or "{}")
            if info.get("tls_required"):
                await writer.start_tls(tls or ssl.create_default_context(), server_hostname=host)
            writer.write(b'CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\nPING\r\n')
            await writer.drain()
            answer = await reader.readline()
        return answer.startswith(b"PONG")
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def _refuse_anonymous(settings: Settings, servers: list[str], nc: Client) -> None:
    """Try an anonymous client where the NATS is reachable from outside; refuse if let in."""
    exposed = _exposed(servers, nc)
    url = nc.connected_url
    if settings.nats_allow_anonymous or exposed is None or url is None or url.hostname is None:
        return
    try:
        if not await accepts_anonymous(url.hostname, url.port or 4222, _tls(settings)):
            return
    except (OSError, TimeoutError, ssl.SSLError, ValueError):
        return  # the logged-in client got through; this one failing says nothing more
    raise StoreMisconfigured(
        f"NATS at {exposed} accepts anonymous clients: anyone who reaches it can write to the store "
        "(an admin token in the accounts bucket). Give it credentials (docs/security.md, NATS), or set "
        "TOCSIN_NATS_ALLOW_ANONYMOUS=true on a closed network"
    )


async def _log_error(exc: Exception) -> None:
    log.warning("nats client error", extra={"error": repr(exc)[:300]})


async def _log_disconnected() -> None:
    log.warning("nats disconnected")


async def _log_reconnected() -> None:
    log.info("nats reconnected")


class JetStreamStore:
    """Alerts on one stream, one subject each, written create-if-absent."""

    def __init__(self, nc: Client, settings: Settings) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream(timeout=settings.publish_timeout_s)
        self._settings = settings
        self.stream = settings.stream
        self._devices: KvRecords | None = None
        self._accounts: KvRecords | None = None
        self._pending: KvRecords | None = None
        self._areas: KvRecords | None = None
        self._routes: KvRecords | None = None
        self._route_status: KvRecords | None = None
        self._sources: KvRecords | None = None
        self._source_status: KvRecords | None = None
        self._audit: JetStreamAuditLog | None = None
        self._progress: KvRecords | None = None

    @property
    def is_connected(self) -> bool:
        return bool(self._nc.is_connected)

    @property
    def jetstream(self) -> JetStreamContext:
        """For the delivery work queue's planner and dispatchers (tocsin/delivery)."""
        return self._js

    @property
    def nats(self) -> Client:
        return self._nc

    @property
    def devices(self) -> Records:
        """Device registrations by device id."""
        assert self._devices is not None, "ensure() first"
        return self._devices

    @property
    def accounts(self) -> Records:
        """Issuer organisations, users, API clients and tokens (tocsin/accounts)."""
        assert self._accounts is not None, "ensure() first"
        return self._accounts

    @property
    def pending(self) -> Records:
        """Submitted alerts that wait for approval, and drafts: outside the alert stream, so
        that they hold no alert identity there (tocsin/approval)."""
        assert self._pending is not None, "ensure() first"
        return self._pending

    @property
    def areas(self) -> Records:
        """Imported named areas (gazetteers), one record each (geo/gazetteer_mirror.py)."""
        assert self._areas is not None, "ensure() first"
        return self._areas

    @property
    def progress(self) -> KvRecords:
        """Delivery progress, one record per alert and node (delivery/progress.py)."""
        assert self._progress is not None, "ensure() first"
        return self._progress

    @property
    def routes(self) -> Records:
        """CAP forwarding routes, one record per route name (delivery/routes.py)."""
        assert self._routes is not None, "ensure() first"
        return self._routes

    @property
    def route_status(self) -> Records:
        """Each route's last deliveries, last link test and link-test lease (delivery/route_worker.py)."""
        assert self._route_status is not None, "ensure() first"
        return self._route_status

    @property
    def sources(self) -> Records:
        """Relayed CAP sources, one record per source name (sources/model.py)."""
        assert self._sources is not None, "ensure() first"
        return self._sources

    @property
    def source_status(self) -> Records:
        """Each source's poll status and poll lease (sources/poller.py)."""
        assert self._source_status is not None, "ensure() first"
        return self._source_status

    @property
    def audit(self) -> AuditLog:
        """The append-only record of every action (store/audit.py)."""
        assert self._audit is not None, "ensure() first"
        return self._audit

    async def ensure(self) -> None:
        """Create or update the stream and buckets with the settings tocsin relies on."""
        s = self._settings
        config = StreamConfig(
            name=self.stream,
            subjects=[f"{self.stream}.>"],
            storage=StorageType.FILE,
            num_replicas=s.replicas,
            discard=DiscardPolicy.NEW,
            max_bytes=s.stream_max_bytes,
            max_msg_size=2 * s.max_cap_bytes,
            max_msgs_per_subject=1,
            # With the expected-last-subject-sequence header: a second alert with the same
            # identity is refused, never allowed to replace the first.
            discard_new_per_subject=True,
            duplicate_window=s.duplicate_window_s,
            deny_delete=True,
            deny_purge=True,
            allow_direct=True,
            # Retention: each message carries its own TTL (Nats-TTL), set at accept from the
            # alert's expiry (or a probe's few minutes); nothing else ever removes one.
            allow_msg_ttl=True,
        )
        try:
            await self._ensure_stream(config)
            deadline_s = s.publish_deadline_s
            self._devices = KvRecords(await self._device_bucket(), deadline_s)
            self._accounts = KvRecords(await self._bucket("TOCSIN_ACCOUNTS"), deadline_s)
            self._pending = KvRecords(await self._bucket("TOCSIN_PENDING"), deadline_s)
            # GAZ: one named area a record, each at most one NATS message (geo/gazetteer.py).
            self._areas = KvRecords(await self._bucket(s.areas_bucket, max_value_size=MAX_RECORD_BYTES), deadline_s)
            # ROUTES: CAP forwarding routes and their status (delivery/routes.py).
            self._routes = KvRecords(await self._bucket(s.routes_bucket, max_value_size=16384), deadline_s)
            self._route_status = KvRecords(await self._bucket(f"{s.routes_bucket}_STATUS", max_value_size=16384),
                                           deadline_s)
            # SOURCES: relayed CAP feeds and their status (sources/model.py, sources/poller.py).
            self._sources = KvRecords(await self._bucket(s.sources_bucket, max_value_size=65536), deadline_s)
            self._source_status = KvRecords(await self._bucket(f"{s.sources_bucket}_STATUS", max_value_size=65536),
                                            deadline_s)
            audit = JetStreamAuditLog(self._js, s)
            await audit.ensure()
            self._audit = audit
            await deliveries.ensure(self._js, s)
            # PROGRESS: per-message TTLs (nats-py's KV streams allow them), so each record
            # leaves with its alert; bounded in bytes like the others.
            self._progress = KvRecords(await self._bucket(s.progress_bucket, max_bytes=s.progress_max_bytes), deadline_s)
        except nats.js.errors.APIError as exc:
            if exc.err_code == _INSUFFICIENT_RESOURCES:
                # Every replica reserves the stream's whole max_bytes: a plain refusal, not a
                # passing fault, so startup stops with a message instead of waiting.
                raise StoreMisconfigured(
                    f"the NATS servers cannot reserve {s.stream_max_bytes} bytes for the alert stream and "
                    f"{s.device_bucket_max_bytes} for the device bucket, {s.audit_max_bytes} for the audit "
                    f"log and {s.deliveries_max_bytes} for the delivery queue on each of {s.replicas} replica(s); "
                    "free disk space or lower TOCSIN_STREAM_MAX_BYTES, TOCSIN_DEVICE_BUCKET_MAX_BYTES, "
                    "TOCSIN_AUDIT_MAX_BYTES or TOCSIN_DELIVERIES_MAX_BYTES"
                ) from exc
            raise StoreUnavailable("ensure", repr(exc)) from exc
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise StoreUnavailable("ensure", repr(exc)) from exc

    async def _ensure_stream(self, config: StreamConfig) -> None:
        await ensure_stream(self._js, config, _STREAM_FIELDS)

    async def _bucket(self, name: str, *, max_value_size: int | None = None, max_bytes: int | None = None) -> KeyValue:
        # direct: any replica answers reads, so devices resume during a leader election.
        config = KeyValueConfig(
            bucket=name, history=1, storage=StorageType.FILE, replicas=self._settings.replicas, direct=True,
            max_value_size=max_value_size, max_bytes=max_bytes,
        )
        try:
            return await self._js.create_key_value(config)
        except nats.js.errors.BadRequestError:
            return await self._js.key_value(name)

    async def _device_bucket(self) -> KeyValue:
        """The device bucket, bounded in bytes and with records that expire by age.

        Changed settings apply to an existing bucket too. A record leaves the bucket
        `device_ttl_s` after it was last written, and the server then writes a marker
        that every node's mirror reads as a purge (`limit_marker_ttl`).
        """
        s = self._settings
        marker_ttl_s = min(300.0, max(1.0, s.device_ttl_s))
        config = KeyValueConfig(
            bucket=s.device_bucket, history=1, storage=StorageType.FILE, replicas=s.replicas, direct=True,
            ttl=s.device_ttl_s, max_bytes=s.device_bucket_max_bytes, limit_marker_ttl=marker_ttl_s,
        )
        try:
            return await self._js.create_key_value(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code == _INSUFFICIENT_RESOURCES:
                raise  # not "it exists": ensure() says which limit does not fit
            # it exists, perhaps with other limits
        info = await self._js.stream_info(f"KV_{s.device_bucket}")
        wanted = (float(s.device_ttl_s), s.device_bucket_max_bytes, marker_ttl_s)
        current = info.config
        if (current.max_age, current.max_bytes, current.subject_delete_marker_ttl) != wanted:
            current.max_age, current.max_bytes, current.subject_delete_marker_ttl = wanted
            current.duplicate_window = min(120.0, s.device_ttl_s)
            await self._js.update_stream(current)
        return await self._js.key_value(s.device_bucket)

    async def mirror_devices(self, into: DeviceSink, *, after: StreamPosition | None = None,
                             retry_s: float = 1.0) -> None:
        """Keep `into` (the node's audience index) holding every device record, forever.

        Reads the bucket's stream directly (store/device_feed.py: a million records in a few
        seconds, where a KV watch takes over twenty). With `after` (`into` holds a snapshot
        complete up to it), the first feed reads only the messages after it; if the stream
        cannot continue it, or that feed breaks, a full pass follows. Every restart after
        that is a full first pass: `into.end_pass()` drops the keys it did not meet, so no
        doubt about what a broken feed applied survives it. Never raises: it starts again.
        """
        while True:
            try:
                await feed_devices(self._nc, self._js, self._settings.device_bucket, into, _tls(self._settings),
                                   after=after)
            except SnapshotStale as exc:
                log.warning("device snapshot not continued: a full pass", extra={"error": str(exc)[:300]})
                after = None
                continue
            except Exception as exc:  # a cache: nothing it meets may stop the node
                log.warning("device feed restarting", extra={"error": repr(exc)[:200]})
            after = None
            await asyncio.sleep(retry_s)

    async def put(self, envelope: Envelope) -> Stored:
        """Store the alert unless its subject already holds one; return what is stored.

        A timeout means the outcome is unknown, so the same message is sent again with the
        same Nats-Msg-Id: the server's dedupe window and the subject check keep it single.

        Raises:
            StoreFull: the stream reached its byte limit (issuer gets a 507, not a retry).
            StoreUnavailable: no acknowledgement after every attempt (issuer gets a 503).
        """
        headers = _headers(envelope)
        last_error: BaseException | None = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.publish_deadline_s
        attempt = 0
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            attempt += 1
            try:
                ack = await self._js.publish(
                    subject_for(self.stream, envelope.alert_id),
                    envelope.payload,
                    timeout=min(self._settings.publish_timeout_s, max(remaining, 0.05)),
                    stream=self.stream,
                    headers=headers,
                )
                return Stored(seq=ack.seq, envelope=envelope, created=not ack.duplicate)
            except nats.js.errors.APIError as exc:
                if exc.err_code == _WRONG_LAST_SEQUENCE:
                    existing = await self.get(envelope.alert_id)
                    return Stored(seq=existing.seq, envelope=existing.envelope, created=False)
                if exc.err_code == _MAXIMUM_BYTES_EXCEEDED:
                    # Not a passing fault: nothing frees space but retention, so no retry.
                    log.error("alert stream full", extra={"alert_id": envelope.alert_id, "max_bytes": self._settings.stream_max_bytes})
                    raise StoreFull(self._settings.stream_max_bytes) from exc
                last_error = exc
                if exc.code is not None and exc.code < 500 and exc.code not in (408, 503):
                    break  # a refusal (e.g. stream full), not a passing fault
            except (nats.errors.Error, asyncio.TimeoutError) as exc:
                # No responders while a leader is elected, a timeout: outcome unknown, so
                # send the same message again (same Nats-Msg-Id) until the deadline.
                last_error = exc
            pause = random.uniform(0, min(1.0, 0.05 * 2**attempt))
            await asyncio.sleep(min(pause, max(deadline - loop.time(), 0)))
        log.warning("publish not acknowledged", extra={"alert_id": envelope.alert_id, "attempts": attempt,
                                                       "error": repr(last_error)[:200]})
        raise StoreUnavailable("publish", repr(last_error)) from last_error

    async def announce(self, envelope: Envelope) -> None:
        """An early copy of `envelope` to every node (pipeline/early.py): core NATS, on a
        subject outside every stream, so nothing stores it and nothing acknowledges it.

        Raises:
            StoreUnavailable: not sent (the connection is closed, or its buffer is full).
        """
        try:
            await self._nc.publish(early_subject(self.stream), envelope.payload, headers=_headers(envelope))
        except nats.errors.Error as exc:
            raise StoreUnavailable("early copy", repr(exc)) from exc

    async def listen_early(self, take: Callable[[Envelope], Awaitable[object]], listening: asyncio.Event) -> None:
        """Hand each early copy heard to `take`, one at a time, until cancelled; `listening`
        is set once the server has the subscription. What waits is bounded (EARLY_PENDING):
        past it the server's slow-consumer rule drops copies, which only makes them late."""

        async def heard(msg: Msg) -> None:
            alert_id = AlertId((msg.headers or {}).get("Nats-Msg-Id", ""))
            if len(msg.data) <= self._settings.max_stored_bytes:
                await take(_envelope(alert_id, msg.data, msg.headers or {}))

        subscription = await self._nc.subscribe(early_subject(self.stream), cb=heard,
                                                pending_msgs_limit=EARLY_PENDING,
                                                pending_bytes_limit=EARLY_PENDING_BYTES)
        try:
            await self._nc.flush()
            listening.set()
            await asyncio.Event().wait()
        finally:
            listening.clear()
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()

    async def get(self, alert_id: AlertId) -> Stored:
        """The stored alert with this id.

        Raises:
            AlertNotFound: nothing stored under this id.
            StoreUnavailable: the store did not answer.
        """
        try:
            raw = await self._js.get_last_msg(self.stream, subject_for(self.stream, alert_id), direct=True)
        except nats.js.errors.NotFoundError:
            raise AlertNotFound(alert_id) from None
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise StoreUnavailable("get", repr(exc)) from exc
        assert raw.seq is not None
        return Stored(seq=raw.seq, envelope=_envelope(alert_id, raw.data or b"", raw.headers or {}), created=False)

    async def get_by_seq(self, seq: int) -> Stored | None:
        """The alert stored at this seq, or None.

        Raises:
            StoreUnavailable: the store did not answer.
        """
        try:
            # From the leader, not any replica: a replica cut off from the others would call
            # a seq it has not received yet "missing" and send devices a needless full replay.
            raw = await self._js.get_msg(self.stream, seq)
        except nats.js.errors.NotFoundError:
            return None
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise StoreUnavailable("get", repr(exc)) from exc
        alert_id = AlertId((raw.subject or "").rsplit(".", 1)[-1])
        return Stored(seq=seq, envelope=_envelope(alert_id, raw.data or b"", raw.headers or {}), created=False)

    async def last_seq(self) -> int:
        """The stream's last sequence (0 when empty)."""
        try:
            info = await self._js.stream_info(self.stream)
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise StoreUnavailable("stream_info", repr(exc)) from exc
        return int(info.state.last_seq)

    async def holds(self, alert_id: AlertId) -> bool:
        """Whether the stream holds this alert, as its leader sees it (one read by key).

        Raises:
            StoreUnavailable: no answer.
        """
        try:
            # Not direct: a lagging replica would call an alert it has not received missing.
            await self._js.get_last_msg(self.stream, subject_for(self.stream, alert_id))
        except nats.js.errors.NotFoundError:
            return False
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise StoreUnavailable("get", repr(exc)) from exc
        return True

    async def stream_health(self) -> StreamHealth:
        """The stream's last seq and replication state, for readiness checks.

        Raises:
            StoreUnavailable: no answer (with R>1, no leader answers without quorum).
        """
        try:
            info = await self._js.stream_info(self.stream)
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise StoreUnavailable("stream_info", repr(exc)) from exc
        cluster = info.cluster
        replicas = (cluster.replicas or []) if cluster else []
        peers = tuple((p.name or "?", bool(p.current) and not p.offline) for p in replicas)
        return StreamHealth(
            last_seq=int(info.state.last_seq),
            replicas=int(info.config.num_replicas or 1),
            leader=cluster.leader if cluster else None,
            peers=peers,
            messages=int(info.state.messages),
            bytes=int(info.state.bytes),
            max_bytes=int(info.config.max_bytes or 0),
        )

    async def consumer_health(self) -> list[ConsumerHealth]:
        """Every durable consumer on the stream, with its ack-pending count and bound.

        Raises:
            StoreUnavailable: no answer.
        """
        try:
            infos = await self._js.consumers_info(self.stream)
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise StoreUnavailable("consumers_info", repr(exc)) from exc
        return [
            ConsumerHealth(
                name=info.name,
                ack_pending=int(info.num_ack_pending or 0),
                max_ack_pending=int(info.config.max_ack_pending or 0),
                pending=int(info.num_pending or 0),
            )
            for info in infos
            # CORE: the planner holds one alert at a time by design (delivery/queue.py).
            if info.config.durable_name and info.name != deliveries.PLANNER_CONSUMER
        ]

    async def follow(self, after_seq: int = 0) -> AsyncIterator[Stored]:
        """Every stored alert after `after_seq`, then each new one as it is stored.

        An ordered consumer: ephemeral, flow controlled, recreated from the last seen
        sequence after any gap, reconnect or missed heartbeat.
        """
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if after_seq else DeliverPolicy.ALL,
            opt_start_seq=after_seq + 1 if after_seq else None,
        )
        sub = await self._js.subscribe(
            f"{self.stream}.>",
            stream=self.stream,
            ordered_consumer=True,
            # Two missed heartbeats and the consumer is recreated from the last seq.
            idle_heartbeat=1.0,
            config=config,
            pending_msgs_limit=100_000,
        )
        try:
            async for msg in sub.messages:
                meta = msg.metadata
                alert_id = AlertId(msg.subject.rsplit(".", 1)[1])
                yield Stored(
                    seq=meta.sequence.stream,
                    envelope=_envelope(alert_id, msg.data, msg.headers or {}),
                    created=False,
                )
        finally:
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                pass


class KvRecords:
    """A KV bucket of JSON records: the `Records` the rest of tocsin sees."""

    def __init__(self, bucket: KeyValue, deadline_s: float) -> None:
        self._bucket = bucket
        self._deadline_s = deadline_s
        self.name = str(bucket._name)

    def _failed(self, operation: str, exc: BaseException) -> TocsinError:
        """The error a write failure means: a full bucket, or no confirmation."""
        if isinstance(exc, nats.js.errors.APIError) and exc.err_code == _MAXIMUM_BYTES_EXCEEDED:
            return RecordsFull(self.name)
        return StoreUnavailable(operation, repr(exc))

    async def get(self, key: str) -> dict[str, Any] | None:
        """Read a key, retried for a few seconds while the bucket elects a leader."""
        found = await self.get_versioned(key)
        return None if found is None else found[0]

    def _writable(self, key: str) -> str:
        """Callers build keys from checked names: an invalid one here is a bug, said plainly."""
        if not is_valid_key(key):
            raise ValueError(f"not a key of bucket {self.name}: {key[:64]!r}")
        return key

    async def put(self, key: str, value: dict[str, Any]) -> None:
        self._writable(key)
        try:
            await self._bucket.put(key, json.dumps(value).encode())
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise self._failed("kv_put", exc) from exc

    async def create(self, key: str, value: dict[str, Any], *, ttl_s: float | None = None) -> bool:
        """Create the key unless it exists; False when it already did. `ttl_s`: the record
        leaves the bucket that long after this write (per-message TTL)."""
        self._writable(key)
        try:
            await self._bucket.create(key, json.dumps(value).encode(), msg_ttl=_whole_s(ttl_s))
            return True
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        except nats.js.errors.KeyNotFoundError:
            # ACCOUNTS: the key exists (the server refused "wrong last sequence"), but nats-py's
            # check for a delete marker read a replica that has not caught up (seen in F09's
            # rolling restart): the create did not happen, the key is there.
            return False
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise self._failed("kv_create", exc) from exc

    async def get_versioned(self, key: str) -> tuple[dict[str, Any], int] | None:
        """The record and its revision (for `replace`), or None; retried as `get`. A key
        JetStream cannot hold (a name from a request path) names no record: None at once."""
        if not is_valid_key(key):
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._deadline_s
        while True:
            try:
                entry = await self._bucket.get(key)
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.InvalidKeyError):
                return None  # an invalid key names no record: never retried until the deadline
            except (nats.errors.Error, asyncio.TimeoutError) as exc:
                if loop.time() > deadline:
                    raise StoreUnavailable("kv_get", repr(exc)) from exc
                await asyncio.sleep(random.uniform(0.05, 0.3))
                continue
            if not entry.value or entry.revision is None:
                return None
            try:
                value = json.loads(entry.value)
            except ValueError:
                value = None
            if not isinstance(value, dict):
                # Fail-closed, as the mirror: an unreadable record names no one and grants nothing.
                log.warning("bucket record unreadable", extra={"key": key[:64]})
                return None
            return value, int(entry.revision)

    async def replace(self, key: str, value: dict[str, Any], revision: int, *, ttl_s: float | None = None) -> bool:
        """Write the record only if it is still at `revision`; False when another write
        came first (the caller reads again and decides again). `ttl_s` as for `create`."""
        self._writable(key)
        try:
            await self._bucket._update(key, json.dumps(value).encode(), last=revision, msg_ttl=_whole_s(ttl_s))
            return True
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise self._failed("kv_update", exc) from exc

    async def delete(self, key: str) -> None:
        if not is_valid_key(key):
            return  # it names no record: nothing to delete
        try:
            await self._bucket.delete(key)
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise StoreUnavailable("kv_delete", repr(exc)) from exc

    # PROGRESS: one record per alert and node, each with its own TTL (delivery/progress.py).
    async def put_with_ttl(self, key: str, value: dict[str, Any], *, ttl_s: float) -> None:
        """Write the record whatever its revision; it leaves the bucket `ttl_s` after this write."""
        self._writable(key)
        try:
            await self._bucket._js.publish(f"{self._bucket._pre}{key}", json.dumps(value).encode(),
                                           msg_ttl=_whole_s(ttl_s))
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise self._failed("kv_put", exc) from exc

    async def matching(self, pattern: str, *, limit: int, timeout_s: float) -> dict[str, dict[str, Any]]:
        """The records whose keys match `pattern` (`<alert id>.*`), at most `limit` of them.

        One short-lived pull consumer (the last message of each key): its pending count,
        read before anything is delivered, says exactly how many to fetch, so the read ends
        as soon as they are in (a watch's "no more for now" can come before its messages).

        Raises:
            StoreUnavailable: no full answer within `timeout_s`.
        """
        js, stream = self._bucket._js, self._bucket._stream
        config = ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT, ack_policy=AckPolicy.NONE,
                                inactive_threshold=max(1.0, 2 * timeout_s), mem_storage=True, num_replicas=1)
        found: dict[str, dict[str, Any]] = {}
        subscription = None
        try:
            async with asyncio.timeout(timeout_s):
                subscription = await js.pull_subscribe(f"{self._bucket._pre}{pattern}", stream=stream, config=config)
                pending = min(limit, int((await subscription.consumer_info()).num_pending or 0))
                messages = await subscription.fetch(pending, timeout=timeout_s) if pending else []
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise StoreUnavailable("kv_read", repr(exc)) from exc
        finally:
            if subscription is not None:
                with contextlib.suppress(Exception):
                    await js.delete_consumer(stream, str(config.name))
                    await subscription.unsubscribe()
        for msg in messages:
            operation = (msg.headers or {}).get("KV-Operation")
            if operation in (KV_DEL, KV_PURGE) or "Nats-Marker-Reason" in (msg.headers or {}) or not msg.data:
                continue
            with contextlib.suppress(ValueError):
                value = json.loads(msg.data)
                if isinstance(value, dict):
                    found[msg.subject[len(self._bucket._pre):]] = value
        return found

    async def put_raw(self, key: str, value: bytes) -> None:
        """Write bytes as they are (tests of what a mirror meets in a bucket)."""
        await self._bucket.put(key, value)

    async def mirror(self, into: MutableMapping[str, dict[str, Any]], *, retry_s: float = 1.0,
                     first_pass: asyncio.Event | None = None) -> None:
        """Keep `into` holding every key of the bucket with its JSON value, forever.

        Every node mirrors the device bucket, so a device that moves here from a lost node
        is authenticated from memory: a reconnect storm costs no bucket read per device.
        Deleted and expired keys are dropped as their markers arrive; when the watch
        (re)starts, keys it no longer finds in the bucket are dropped at the end of its
        first pass. A key the mirror has not seen yet is read from the bucket by the
        caller. The watch starts again after any error. `first_pass` is set once `into`
        holds what the bucket held when the mirror began (a start that must hold the bucket
        before it serves waits for it: the gazetteer).
        """
        while True:
            watcher = None
            present: set[str] | None = set()  # keys met in the first pass, until its end
            try:
                watcher = await self._bucket.watchall()
                async for entry in watcher:
                    if entry is None:  # the end of the values present when the watch began
                        if present is not None:
                            for gone in [key for key in into if key not in present]:
                                into.pop(gone, None)
                        present = None
                        if first_pass is not None:
                            first_pass.set()
                        continue
                    if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                        into.pop(entry.key, None)
                        continue
                    if present is not None:
                        present.add(entry.key)
                    try:
                        into[entry.key] = json.loads(entry.value)
                    except ValueError:
                        # Fail-closed: the version it replaces (an active token, an area) is
                        # gone too; a read of that key finds the same unreadable value.
                        into.pop(entry.key, None)
                        log.warning("bucket mirror dropped a value it cannot read", extra={"key": entry.key[:64]})
            except Exception as exc:  # a cache: nothing it meets may stop the node
                log.warning("bucket mirror restarting", extra={"error": repr(exc)[:200]})
            finally:
                if watcher is not None:
                    with contextlib.suppress(Exception):
                        await watcher.stop()  # type: ignore[no-untyped-call]
            await asyncio.sleep(retry_s)


def _whole_s(ttl_s: float | None) -> float | None:
    """A per-message TTL as the server takes it: whole seconds, at least 1 (None: none)."""
    return None if ttl_s is None else float(max(1, math.ceil(ttl_s)))


def ttl_header(retain_until: datetime, now: datetime) -> str:
    """The Nats-TTL value that removes a message at `retain_until` (whole seconds, at least 1)."""
    return f"{max(1, math.ceil((retain_until - now).total_seconds()))}s"


def _headers(envelope: Envelope) -> dict[str, str]:
    headers = {
        "Nats-Msg-Id": envelope.alert_id,
        "Nats-Expected-Last-Subject-Sequence": "0",
        _H_SIG: envelope.sig,
        _H_KID: envelope.kid,
        _H_ISSUER: envelope.issuer,
        _H_NODE: envelope.node,
        _H_ACCEPTED: envelope.accepted_at.isoformat(),
    }
    if envelope.expires_at is not None:
        headers[_H_EXPIRES] = envelope.expires_at.isoformat()
    if envelope.retain_until is not None:
        headers[_H_TTL] = ttl_header(envelope.retain_until, datetime.now(UTC))
    if envelope.cover is not None:
        headers[_H_COVER] = " ".join(envelope.cover)
    return headers


def stored_bytes(envelope: Envelope) -> int:
    """The size of the NATS message that stores `envelope`: its payload and header block."""
    block = sum(len(k) + len(v) + 4 for k, v in _headers(envelope).items())  # "k: v\r\n"
    return len(envelope.payload) + len("NATS/1.0\r\n\r\n") + block


def _when(raw: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(raw) if raw else None
    except ValueError:
        return None


def _envelope(alert_id: AlertId, payload: bytes, headers: dict[str, str]) -> Envelope:
    accepted = _when(headers.get(_H_ACCEPTED))
    return Envelope(
        alert_id=alert_id,
        payload=payload,
        sig=headers.get(_H_SIG, ""),
        kid=headers.get(_H_KID, ""),
        issuer=headers.get(_H_ISSUER, ""),
        node=headers.get(_H_NODE, ""),
        accepted_at=accepted or datetime.now(UTC),
        expires_at=_when(headers.get(_H_EXPIRES)),
        cover=tuple(headers[_H_COVER].split()) if _H_COVER in headers else None,
    )

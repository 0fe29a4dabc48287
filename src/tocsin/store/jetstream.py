"""The replicated store on NATS JetStream: alerts stream, device and issuer buckets.

nats errors stop here: callers see StoreUnavailable, AlertNotFound or plain values.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.client import Server as NatsServerRef
from nats.js import JetStreamContext
from nats.js.api import (
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    StorageType,
    StreamConfig,
)
from nats.js.kv import KeyValue

from tocsin.errors import AlertNotFound, StoreUnavailable
from tocsin.settings import Settings
from tocsin.store.base import AlertId, Envelope, Stored

log = logging.getLogger(__name__)

# JetStream API error: "wrong last sequence", i.e. the subject already holds an alert.
_WRONG_LAST_SEQUENCE = 10071

_H_SIG, _H_KID, _H_ISSUER = "Tocsin-Sig", "Tocsin-Kid", "Tocsin-Issuer"
_H_NODE, _H_ACCEPTED = "Tocsin-Node", "Tocsin-Accepted-At"


def subject_for(stream: str, alert_id: AlertId) -> str:
    """One subject per alert, under the stream's own name (streams never overlap)."""
    return f"{stream}.{alert_id}"


def _jittered_server(servers: list[NatsServerRef], info: dict[str, Any]) -> tuple[NatsServerRef, float]:
    """Reconnect to a random known server after a full-jitter delay (no thundering herd)."""
    attempt = min((s.reconnects for s in servers), default=0)
    delay = random.uniform(0, min(2.0, 0.05 * 2**attempt))
    return random.choice(servers), delay


async def connect(settings: Settings, servers: list[str], name: str) -> Client:
    """Connect with tocsin's safe client settings: reconnect forever, ping often, jitter."""
    return await nats.connect(
        servers=servers,
        name=name,
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
        self.devices: KeyValue | None = None
        self.issuers: KeyValue | None = None

    @property
    def is_connected(self) -> bool:
        return bool(self._nc.is_connected)

    @property
    def client(self) -> Client:
        return self._nc

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
        )
        try:
            try:
                await self._js.add_stream(config)
            except nats.js.errors.BadRequestError:
                await self._js.update_stream(config)
            self.devices = await self._bucket("TOCSIN_DEVICES")
            self.issuers = await self._bucket("TOCSIN_ISSUERS")
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise StoreUnavailable("ensure", repr(exc)) from exc

    async def _bucket(self, name: str) -> KeyValue:
        config = KeyValueConfig(
            bucket=name, history=1, storage=StorageType.FILE, replicas=self._settings.replicas
        )
        try:
            return await self._js.create_key_value(config)
        except nats.js.errors.BadRequestError:
            return await self._js.key_value(name)

    async def put(self, envelope: Envelope) -> Stored:
        """Store the alert unless its subject already holds one; return what is stored.

        A timeout means the outcome is unknown, so the same message is sent again with the
        same Nats-Msg-Id: the server's dedupe window and the subject check keep it single.

        Raises:
            StoreUnavailable: no acknowledgement after every attempt (issuer gets a 503).
        """
        headers = {
            "Nats-Msg-Id": envelope.alert_id,
            "Nats-Expected-Last-Subject-Sequence": "0",
            _H_SIG: envelope.sig,
            _H_KID: envelope.kid,
            _H_ISSUER: envelope.issuer,
            _H_NODE: envelope.node,
            _H_ACCEPTED: envelope.accepted_at.isoformat(),
        }
        last_error: BaseException | None = None
        for attempt in range(self._settings.publish_attempts):
            try:
                ack = await self._js.publish(
                    subject_for(self.stream, envelope.alert_id),
                    envelope.payload,
                    timeout=self._settings.publish_timeout_s,
                    stream=self.stream,
                    headers=headers,
                )
                return Stored(seq=ack.seq, envelope=envelope, created=not ack.duplicate)
            except nats.js.errors.APIError as exc:
                if exc.err_code == _WRONG_LAST_SEQUENCE:
                    existing = await self.get(envelope.alert_id)
                    return Stored(seq=existing.seq, envelope=existing.envelope, created=False)
                last_error = exc
                if exc.code is not None and exc.code < 500 and exc.code != 408:
                    break  # a refusal (e.g. stream full), not a passing fault
            except (nats.errors.Error, asyncio.TimeoutError) as exc:
                last_error = exc
            await asyncio.sleep(random.uniform(0, 0.1 * 2**attempt))
        raise StoreUnavailable("publish", repr(last_error)) from last_error

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

    async def last_seq(self) -> int:
        """The stream's last sequence (0 when empty)."""
        try:
            info = await self._js.stream_info(self.stream)
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise StoreUnavailable("stream_info", repr(exc)) from exc
        return int(info.state.last_seq)

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
            idle_heartbeat=2.0,
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

    async def kv_get(self, bucket: KeyValue | None, key: str) -> dict[str, Any] | None:
        assert bucket is not None
        try:
            entry = await bucket.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise StoreUnavailable("kv_get", repr(exc)) from exc
        return json.loads(entry.value) if entry.value else None

    async def kv_put(self, bucket: KeyValue | None, key: str, value: dict[str, Any]) -> None:
        assert bucket is not None
        try:
            await bucket.put(key, json.dumps(value).encode())
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise StoreUnavailable("kv_put", repr(exc)) from exc

    async def kv_create(self, bucket: KeyValue | None, key: str, value: dict[str, Any]) -> bool:
        """Create the key unless it exists; False when it already did."""
        assert bucket is not None
        try:
            await bucket.create(key, json.dumps(value).encode())
            return True
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise StoreUnavailable("kv_create", repr(exc)) from exc


def _envelope(alert_id: AlertId, payload: bytes, headers: dict[str, str]) -> Envelope:
    accepted = headers.get(_H_ACCEPTED)
    return Envelope(
        alert_id=alert_id,
        payload=payload,
        sig=headers.get(_H_SIG, ""),
        kid=headers.get(_H_KID, ""),
        issuer=headers.get(_H_ISSUER, ""),
        node=headers.get(_H_NODE, ""),
        accepted_at=datetime.fromisoformat(accepted) if accepted else datetime.now(UTC),
    )

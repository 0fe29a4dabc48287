"""Stage 1: issuer request -> a validated, policy-checked, signed alert, durably stored.

The issuer is answered only after JetStream acknowledged the alert and the node's ledger
holds it; the ledger is written while the publish is in flight, so the two fsyncs overlap.
An alert is published once, on its own subject, create-if-absent.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from tocsin.cap.model import Alert
from tocsin.cap.parse import parse_json, parse_xml
from tocsin.cap.render import to_xml
from tocsin.errors import IDENTITY_CONFLICT, Rejected, StoreUnavailable
from tocsin.policy import Issuer, check
from tocsin.signing import SigningKey
from tocsin.store.base import AlertId, Envelope, Stored, alert_id_for
from tocsin.store.jetstream import JetStreamStore
from tocsin.store.ledger import Ledger

log = logging.getLogger(__name__)

T = TypeVar("T")

def _outcome_read(task: asyncio.Task[object]) -> None:
    if not task.cancelled():
        task.exception()


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted:
    """The outcome for the issuer: the stored alert, and whether this call created it."""

    alert: Alert
    stored: Stored

    @property
    def created(self) -> bool:
        return self.stored.created


class Accept:
    """Parse, check, sign, record, publish."""

    def __init__(
        self,
        *,
        store: JetStreamStore,
        ledger: Ledger,
        signer: SigningKey,
        node: str,
        max_cap_bytes: int,
        max_skew_s: float,
        clock: Callable[[], datetime],
        prepared: Callable[[AlertId, bytes, Alert], None] = lambda alert_id, payload, alert: None,
    ) -> None:
        self._store = store
        self._prepared = prepared
        self._ledger = ledger
        self._signer = signer
        self._node = node
        self._max_bytes = max_cap_bytes
        self._max_skew_s = max_skew_s
        self._clock = clock

    def parse(self, body: bytes | object) -> Alert:
        """CAP XML bytes or the JSON form, through the same rules."""
        if isinstance(body, bytes):
            return parse_xml(body, max_bytes=self._max_bytes)
        return parse_json(body)

    async def __call__(self, alert: Alert, issuer: Issuer, original: bytes | None = None) -> Accepted:
        """Store the alert and return it with its seq.

        Raises:
            Rejected: a policy refusal, or an identity conflict (409).
            StoreUnavailable: no durable acknowledgement (the issuer gets a 503).
        """
        now = self._clock()
        check(alert, issuer, now=now, max_skew_s=self._max_skew_s)
        payload = to_xml(alert)
        envelope = Envelope(
            alert_id=alert_id_for(alert.sender, alert.identifier),
            payload=payload,
            sig=self._signer.sign(payload),
            kid=self._signer.kid,
            issuer=issuer.name,
            node=self._node,
            accepted_at=now,
        )
        recording = asyncio.create_task(self._record(envelope, original))
        publishing = asyncio.create_task(self._store.put(envelope))
        for task in (recording, publishing):
            # If this handler is cancelled, both go on (the alert may still be stored and
            # recorded); their outcome is then read here rather than reported as lost.
            task.add_done_callback(_outcome_read)
        try:
            # Two turns of the loop: the publish is on the wire (nats-py writes from its
            # flusher task) and the ledger's thread has started. Then, while both wait for
            # their fsyncs, hand this node's follower the parsed alert and its cover.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            self._prepared(envelope.alert_id, payload, alert)
            stored = await publishing
            if not stored.created and stored.envelope.payload != payload:
                raise Rejected(
                    IDENTITY_CONFLICT,
                    f"{alert.sender} / {alert.identifier} is stored as seq {stored.seq}; "
                    "send an Update with references instead",
                    headers={"Location": f"/api/v1/alerts/{stored.envelope.alert_id}"},
                )
        except (StoreUnavailable, Rejected):
            # Refused: the ledger row this attempt wrote must never be published later.
            if await recording:
                await self._withdraw(envelope)
            raise
        # The ledger holds the alert before the issuer hears of it.
        await recording
        if stored.created:
            log.info(
                "alert accepted",
                extra={"alert_id": envelope.alert_id, "seq": stored.seq, "issuer": issuer.name,
                       "status": alert.status.value, "msg_type": alert.msg_type.value},
            )
        return Accepted(alert=alert, stored=stored)

    async def _record(self, envelope: Envelope, original: bytes | None) -> bool:
        """Write the ledger row; whether this attempt owns it."""
        return await self._in_ledger("ledger write failed", envelope, self._ledger.record(envelope, original), False)

    async def _withdraw(self, envelope: Envelope) -> None:
        withdrawal = self._ledger.withdraw(envelope.alert_id, self._clock())
        await self._in_ledger("ledger withdrawal failed", envelope, withdrawal, None)

    async def _in_ledger(self, failure: str, envelope: Envelope, write: Awaitable[T], failed: T) -> T:
        """The alert is stored either way: a ledger that cannot write is an alarm
        (readiness, an error in the log), not a refusal."""
        try:
            return await write
        except sqlite3.Error as exc:
            self._ledger.failed(exc)
            log.error(failure, extra={"alert_id": envelope.alert_id, "error": str(exc)})
            return failed

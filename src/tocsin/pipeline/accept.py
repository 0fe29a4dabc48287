"""Stage 1: issuer request -> a validated, policy-checked, signed alert, durably stored.

The issuer is answered only after JetStream acknowledged the alert and the node's ledger
holds it; the ledger is written while the publish is in flight, so the two fsyncs overlap.
An alert is published once, on its own subject, create-if-absent. Before anything is
stored its cost is bounded (shapes, extent, stored size: policy.py, settings.py) and its cover
computed once, off the loop under a deadline, to be stored with it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from tocsin.audience import DEFAULT_LIFETIME_S, expires_at
from tocsin.cap.model import Alert, MsgType
from tocsin.cap.parse import parse_json, parse_xml
from tocsin.cap.render import to_xml
from tocsin.errors import (
    ACCEPT_BUSY,
    COVER_TOO_SLOW,
    IDENTITY_CONFLICT,
    STORED_TOO_LARGE,
    TOO_MANY_REFERENCES,
    AlertNotFound,
    Rejected,
    StoreFull,
    StoreUnavailable,
)
from tocsin.geo.cells import Cover, distinct_shapes
from tocsin.geo.covering import CoverTooSlow, CoverWorker
from tocsin.geo.gazetteer import Gazetteer, resolve
from tocsin.geo.territory import prepare as prepare_territory
from tocsin.pipeline.duplicates import Duplicates, Original
from tocsin.pipeline.gate import Entry, Gate, GateFull
from tocsin.pipeline.handoff import drawn_areas
from tocsin.pipeline.priority import rank
from tocsin.policy import AlertLimits, Issuer, check, check_limits, check_polygons, check_reference, check_territory
from tocsin.signing import SigningKey
from tocsin.store.base import AlertId, AlertStore, Envelope, Stored, alert_id_for
from tocsin.store.jetstream import stored_bytes
from tocsin.store.ledger import Ledger

log = logging.getLogger(__name__)

T = TypeVar("T")

def _outcome_read(task: asyncio.Task[object]) -> None:
    if not task.cancelled():
        task.exception()


def identity_conflict(alert: Alert, stored: Stored) -> Rejected:
    """409 alert.identity-conflict: another alert is stored under this sender and identifier."""
    return Rejected(
        IDENTITY_CONFLICT,
        f"{alert.sender} / {alert.identifier} is stored as seq {stored.seq}; send an Update with references instead",
        headers={"Location": f"/api/v1/alerts/{stored.envelope.alert_id}"},
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Retention:
    """How long the stream keeps what accept stores (settings.py explains each default)."""

    default_lifetime_s: float = DEFAULT_LIFETIME_S
    after_expiry_s: float = 7 * 86400.0
    probe_s: float = 300.0

    def expires_at(self, alert: Alert) -> datetime:
        """When devices stop showing the alert (the rule the devices apply too)."""
        return expires_at(alert, timedelta(seconds=self.default_lifetime_s))

    def retain_until(self, expires_at: datetime, now: datetime, *, probe: bool) -> datetime:
        """When the stream lets it go: a probe minutes from now, an alert a while after it expires."""
        if probe:
            return now + timedelta(seconds=self.probe_s)
        return max(expires_at, now) + timedelta(seconds=self.after_expiry_s)


@dataclass(frozen=True, slots=True, kw_only=True)
class Bounds:
    """What an alert may cost (settings.py explains each default)."""

    limits: AlertLimits
    # The stored message (payload and headers) at most; the smaller of max_stored_bytes and
    # the stream's max_msg_size.
    max_stored_bytes: int = 1024 * 1024
    cover_deadline_s: float = 10.0
    # References of an Update or Cancel, each looked up in the stream.
    max_references: int = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class EarlyPolicy:
    """When accept sends an alert's early copy (pipeline/early.py), and how."""

    # The durable publish unacknowledged this long (an election) sends the early copy.
    after_s: float
    # Sends it to every node (JetStreamStore.announce).
    announce: Callable[[Envelope], Awaitable[None]]
    # Whether this node holds an alert of this id already (its index): then no early copy.
    known: Callable[[AlertId], bool]
    # How long the check that the store holds no alert of this id may take (an election:
    # replicas still answer direct reads); past it the copy goes.
    check_s: float = 0.25


class EarlyWatch:
    """One accept's early copy: its timer task, and what the accept tells it."""

    def __init__(self) -> None:
        self.envelope: Envelope | None = None  # the accept's own, once sealed (its ledger row too)
        self.stored = False  # the store acknowledged it: no early copy
        self.begun = False  # past its timer: it will decide, and may send
        self.sent = False
        self._task: asyncio.Task[None] | None = None

    def start(self, sending: Coroutine[Any, Any, None]) -> None:
        self._task = asyncio.create_task(sending)
        self._task.add_done_callback(_outcome_read)

    async def settle(self) -> bool:
        """Whether the early copy went out: one not begun now never will, one begun is
        waited for (it is a read and a publish)."""
        self.stop()
        if self._task is not None:
            await asyncio.wait([self._task])
        return self.sent

    def stop(self) -> None:
        """The accept is over (stored, refused or cancelled): a copy not begun is not sent."""
        if self._task is not None and not self.begun:
            self._task.cancel()


@dataclass(frozen=True, slots=True, kw_only=True)
class Vetted:
    """An alert that passed every check before storage: its areas resolved (geocodes given
    their gazetteer polygons), and the canonical CAP that would be signed."""

    alert: Alert
    payload: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted:
    """The outcome for the issuer: the stored alert, and whether this call created it."""

    alert: Alert
    stored: Stored
    # How it went through the accept gate, and the alert it repeats (another issuer's).
    entry: Entry = Entry()
    duplicate_of: Original | None = None

    @property
    def created(self) -> bool:
        return self.stored.created


class Accept:
    """Parse, check, sign, record, publish."""

    def __init__(
        self,
        *,
        store: AlertStore,
        ledger: Ledger,
        signer: SigningKey,
        node: str,
        max_cap_bytes: int,
        max_skew_s: float,
        clock: Callable[[], datetime],
        bounds: Bounds,
        covers: CoverWorker,
        retention: Retention = Retention(),
        prepared: Callable[[AlertId, bytes, Alert, Cover | None], None] = lambda alert_id, payload, alert, cover: None,
        gate: Gate | None = None,
        duplicates: Duplicates | None = None,
        gazetteer: Gazetteer | None = None,
        territory_margin_m: float = 0.0,
        timed: Callable[[str, float], None] = lambda phase, seconds: None,
        early: EarlyPolicy | None = None,
    ) -> None:
        self._store = store
        # Early copies (pipeline/early.py): None sends none.
        self._early = early
        # How long each of the two durable writes took ("publish": JetStream, its fsync on the
        # stream's leader; "ledger": the SQLite row and its fsync), for /metrics.
        self._timed = timed
        self.gazetteer = gazetteer if gazetteer is not None else Gazetteer()
        # How far an area may pass its issuer's territory (settings.territory_margin_m).
        self.territory_margin_m = territory_margin_m
        self._gate = gate or Gate(16)
        self._duplicates = duplicates
        self._bounds = bounds
        self._covers = covers
        self._retention = retention
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
        """Store the alert and return it with its seq, through the accept gate (gate.py).

        Raises:
            Rejected: a policy refusal, a limit (413, 422), an identity conflict (409), or
                the gate's queue is full (503 accept.busy).
            StoreUnavailable: no durable acknowledgement (the issuer gets a 503).
        """
        await self.prepare(issuer)
        vetted = self.vet(alert, issuer, self._clock())
        alert, payload = vetted.alert, vetted.payload
        await self.check_references(alert, issuer)
        # From here the alert may go out early if it is not stored soon (an election), also
        # while it waits in the gate behind alerts whose publishes are held too.
        watch = self._watch_early(alert, issuer, payload, original)
        try:
            async with self._gate.enter(rank(alert), probe=issuer.probe) as entry:
                stored = await self._store_once(alert, issuer, original, payload, watch)
        except GateFull:
            raise Rejected(ACCEPT_BUSY, "too many alerts wait to be stored; retry", headers={"Retry-After": "1"}) from None
        finally:
            if watch is not None:
                watch.stop()
        duplicate_of = None
        if self._duplicates is not None and not issuer.probe:
            duplicate_of = self._duplicates.check(alert, stored.envelope.alert_id, issuer.name, stored.envelope.accepted_at)
        return Accepted(alert=alert, stored=stored, entry=entry, duplicate_of=duplicate_of)

    async def _store_once(
        self, alert: Alert, issuer: Issuer, original: bytes | None, payload: bytes, watch: EarlyWatch | None
    ) -> Stored:
        """Cover, sign, record and publish `payload` (vetted); returns once both are durable."""
        envelope, cover = await self._seal(alert, issuer, payload)
        if watch is not None:
            watch.envelope = envelope
        recording = asyncio.create_task(self._record(envelope, original, probe=issuer.probe))
        publishing = asyncio.create_task(self._timing("publish", self._store.put(envelope)))
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
            self._prepared(envelope.alert_id, payload, alert, cover)
            stored = await publishing
            if watch is not None:
                watch.stored = True
            if not stored.created and stored.envelope.payload != payload:
                raise identity_conflict(alert, stored)
        except StoreUnavailable as exc:
            owned = await recording
            if watch is not None and await watch.settle():
                # Live devices have it: the ledger row stays, and the reconciler stores the
                # alert once the stream is back (the issuer is told so, and may retry).
                log.error("alert sent early but not stored; the reconciler stores it",
                          extra={"alert_id": envelope.alert_id, "error": str(exc)[:200]})
                raise StoreUnavailable("publish-early", str(exc)) from exc
            if owned:  # refused: the ledger row this attempt wrote must never be published later
                await self._withdraw(envelope, probe=issuer.probe)
            raise
        except (StoreFull, Rejected):
            if watch is not None and await watch.settle():
                log.error("alert sent early, then refused by the store; live devices show it until it expires",
                          extra={"alert_id": envelope.alert_id})
            if await recording:
                await self._withdraw(envelope, probe=issuer.probe)
            raise
        # The ledger holds the alert before the issuer hears of it.
        await recording
        if stored.created:
            log.info(
                "alert accepted",
                extra={"alert_id": envelope.alert_id, "seq": stored.seq, "issuer": issuer.name,
                       "status": alert.status.value, "msg_type": alert.msg_type.value},
            )
        return stored

    async def _seal(self, alert: Alert, issuer: Issuer, payload: bytes) -> tuple[Envelope, Cover | None]:
        """The envelope to store `payload` (vetted) in: its cover computed, signed, sized.

        Raises:
            Rejected: 422 policy.cover-too-slow, 413 alert.stored-too-large.
        """
        now = self._clock()
        cover = await self.cover(alert)
        expires_at = self.expires_at(alert)
        envelope = Envelope(
            alert_id=alert_id_for(alert.sender, alert.identifier),
            payload=payload,
            sig=self._signer.sign(payload),
            kid=self._signer.kid,
            issuer=issuer.name,
            node=self._node,
            accepted_at=now,
            expires_at=expires_at,
            retain_until=self._retention.retain_until(expires_at, now, probe=issuer.probe),
            cover=tuple(sorted(cover.cells)) if cover is not None else None,
        )
        self._check_size(stored_bytes(envelope))
        return envelope, cover

    def _watch_early(self, alert: Alert, issuer: Issuer, payload: bytes, original: bytes | None) -> EarlyWatch | None:
        """Start the timer of this accept's early copy (none for a probe, or without a policy)."""
        if self._early is None or issuer.probe:
            return None
        watch = EarlyWatch()
        watch.start(self._send_early(watch, self._early, alert, issuer, payload, original))
        return watch

    async def _send_early(self, watch: EarlyWatch, policy: EarlyPolicy, alert: Alert, issuer: Issuer,
                          payload: bytes, original: bytes | None) -> None:
        """After `policy.after_s`, unless the alert is stored by then or its identity is taken:
        send its early copy (pipeline/early.py). An alert still waiting in the gate is sealed
        here, and its ledger row written first: once devices may show it, the reconciler must
        be able to store it whatever becomes of this request."""
        await asyncio.sleep(policy.after_s)
        watch.begun = True
        envelope = watch.envelope
        if envelope is None:
            try:
                envelope, _ = await self._seal(alert, issuer, payload)
            except Rejected:
                return  # the accept meets the same refusal when it gets its turn
        if watch.stored or policy.known(envelope.alert_id) or not await self._identity_free(envelope.alert_id, policy):
            return
        if watch.envelope is None:
            await self._record(envelope, original, probe=False)
        try:
            await policy.announce(envelope)
        except StoreUnavailable as exc:
            log.warning("early copy not sent", extra={"alert_id": envelope.alert_id, "error": str(exc)[:200]})
            return
        watch.sent = True
        log.info("alert not yet stored; early copy sent", extra={"alert_id": envelope.alert_id})

    async def _identity_free(self, alert_id: AlertId, policy: EarlyPolicy) -> bool:
        """No alert of this id is stored, or the store cannot tell within `policy.check_s`
        (while it elects its leader; an identity taken then is rare, docs/architecture.md)."""
        try:
            async with asyncio.timeout(policy.check_s):
                await self._store.get(alert_id)
        except (AlertNotFound, StoreUnavailable, TimeoutError):
            return True
        return False

    async def check_references(self, alert: Alert, issuer: Issuer) -> list[Stored]:
        """An Update or Cancel names alerts tocsin holds, of an organisation the issuer may
        reference (policy.check_reference); read from the stream by id and returned (the
        reach preview covers an Update or Cancel with them).

        Raises:
            Rejected: 422 policy.too-many-references, policy.reference-unknown,
                policy.reference-not-allowed.
        """
        if alert.msg_type not in (MsgType.UPDATE, MsgType.CANCEL):
            return []
        references = list({(r.sender, r.identifier): r for r in alert.references}.values())
        if len(references) > self._bounds.max_references:
            limit = self._bounds.max_references
            raise Rejected(TOO_MANY_REFERENCES, f"{len(references)} references; the limit is {limit}")
        found: list[Stored] = []
        for reference in references:
            try:
                stored = await self._store.get(alert_id_for(reference.sender, reference.identifier))
            except AlertNotFound:
                check_reference(reference, issuer, None)
            else:
                check_reference(reference, issuer, stored.envelope.issuer)
                found.append(stored)
        return found

    async def prepare(self, issuer: Issuer) -> None:
        """GAZ: what `vet` needs that costs, built off the loop: the issuer's territory widened
        by the margin (seconds for a large territory by code, once per change; then cached).
        Every caller of `vet` awaits this first."""
        if issuer.territory is not None:
            await prepare_territory(issuer.territory, self.gazetteer, self.territory_margin_m)

    def vet(self, alert: Alert, issuer: Issuer, now: datetime) -> Vetted:
        """Every check accept makes before any work that costs (geocodes resolved, policy,
        limits, territory, size), and the canonical CAP it would sign; approval and the
        reach preview vet with it too.

        Raises:
            Rejected: as `__call__`; 422 area.unknown-geocode for a code no gazetteer has.
        """
        alert = resolve(alert, self.gazetteer)  # dict reads; bounded by the CAP size limit
        check(alert, issuer, now=now, max_skew_s=self._max_skew_s)
        check_limits(alert, issuer.limits.over(self._bounds.limits))
        check_polygons(alert)  # after the limits bound its cost, before any cover
        check_territory(alert, issuer.territory, gazetteer=self.gazetteer, margin_m=self.territory_margin_m,
                        organisation=issuer.name)  # after the limits bound its cost
        payload = to_xml(alert)
        self._check_size(len(payload))  # before the cover: it only adds to the size
        return Vetted(alert=alert, payload=payload)

    def expires_at(self, alert: Alert) -> datetime:
        """When devices stop showing the alert (its CAP expiry or the default lifetime)."""
        return self._retention.expires_at(alert)

    def _check_size(self, size: int) -> None:
        limit = self._bounds.max_stored_bytes
        if size > limit:
            raise Rejected(STORED_TOO_LARGE, f"{size} bytes as stored; the limit is {limit} bytes")

    async def cover(self, alert: Alert) -> Cover | None:
        """The cover of the alert's drawn areas, off the loop and under the deadline; None
        when it draws none (an Update or Cancel going where its references went).

        Raises:
            Rejected: 422 policy.cover-too-slow.
        """
        drawn = drawn_areas(alert)
        if not drawn:
            return None
        deadline_s = self._bounds.cover_deadline_s
        try:
            return await self._covers.cover(distinct_shapes(drawn), deadline_s)
        except CoverTooSlow:
            raise Rejected(COVER_TOO_SLOW, f"the areas were not covered within {deadline_s:g} s") from None

    async def _record(self, envelope: Envelope, original: bytes | None, *, probe: bool) -> bool:
        """Write the ledger row; whether this attempt owns it."""
        writing = self._timing("ledger", self._ledger.record(envelope, original, probe=probe))
        return await self._in_ledger("ledger write failed", envelope, writing, False)

    async def _timing(self, phase: str, write: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await write
        finally:
            self._timed(phase, time.perf_counter() - started)

    async def _withdraw(self, envelope: Envelope, *, probe: bool) -> None:
        withdrawal = self._ledger.withdraw(envelope.alert_id, self._clock(), probe=probe)
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

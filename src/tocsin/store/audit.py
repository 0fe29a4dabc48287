"""The audit log: an append-only, replicated record of every action, on a stream of its own.

Each entry is one message on `<stream>.<action>.<subject token>`, where the token is a
digest of what the action was about (an alert id, an account name), so that the trail of one
alert or one account is read by subject filter, never by reading the whole log. The stream
denies delete and purge and has no age limit: nothing in tocsin changes or removes an entry.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from tocsin.errors import StoreUnavailable
from tocsin.settings import Settings

# A page holds at most this many entries, and one read looks at no more than SCAN_MAX
# entries of the filtered subjects before it answers with where to go on from.
PAGE_MAX = 200
SCAN_MAX = 5000
# JetStream API error: "no message found".
_NO_MESSAGE = 10037


class Action(StrEnum):
    """What happened (docs/audit.md lists who writes each)."""

    DRAFT_SAVED = "draft-saved"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"
    PUBLISHED = "published"
    UPDATED = "updated"
    CANCELLED = "cancelled"
    CORRECTED = "corrected"
    EXPIRED = "expired"
    ACCOUNT_CREATED = "account-created"
    ACCOUNT_CHANGED = "account-changed"
    ACCOUNT_REVOKED = "account-revoked"
    TOKEN_CREATED = "token-created"
    TOKEN_REVOKED = "token-revoked"
    POLICY_PROPOSED = "policy-proposed"
    POLICY_CHANGED = "policy-changed"
    AREAS_IMPORTED = "areas-imported"
    AREAS_REMOVED = "areas-removed"
    # ROUTES: CAP forwarding routes (api/cap_routes.py)
    ROUTE_CREATED = "route-created"
    ROUTE_CHANGED = "route-changed"
    ROUTE_REMOVED = "route-removed"
    ROUTE_TESTED = "route-tested"
    # SOURCES: relayed CAP feeds (docs/sources.md).
    SOURCE_CREATED = "source-created"
    SOURCE_CHANGED = "source-changed"
    SOURCE_REMOVED = "source-removed"


def subject_token(subject: str) -> str:
    """The subject-safe token for what an entry is about (the same for every node)."""
    return hashlib.sha256(subject.encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One action: what, about what, who did it, for which organisation, when, from where."""

    action: Action
    subject: str  # an alert id, an account name, a token id
    actor: str  # the principal ("user:alice"), "file:<path>" or "node:<name>"
    org: str = ""
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    source: str = ""  # the client address, "cli", or the accounts file
    detail: dict[str, Any] = field(default_factory=dict)
    seq: int = 0  # its place in the log, once appended

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "action": self.action.value, "subject": self.subject, "actor": self.actor, "org": self.org,
            "at": self.at.isoformat(), "source": self.source, "detail": self.detail,
        }
        if self.seq:
            data["seq"] = self.seq
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], seq: int) -> AuditEntry:
        return cls(
            action=Action(data["action"]), subject=str(data["subject"]), actor=str(data["actor"]),
            org=str(data.get("org", "")), at=datetime.fromisoformat(str(data["at"])),
            source=str(data.get("source", "")), detail=dict(data.get("detail") or {}), seq=seq,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditQuery:
    """Which entries: by action and subject (read by subject filter), by actor and
    organisation (checked on what was read), after a seq."""

    after_seq: int = 0
    limit: int = 50
    actions: Sequence[Action] = ()
    subject: str = ""
    actor: str = ""
    org: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditPage:
    entries: tuple[AuditEntry, ...]
    # Where the next page starts (pass as after_seq); None when the log holds nothing more.
    next_after_seq: int | None


async def ensure_stream(js: JetStreamContext, config: StreamConfig, fields: Sequence[str]) -> None:
    """Create the stream, or update it only when one of `fields` differs.

    A restarted node's own server may not have caught up with the cluster yet, and a
    needless update waits on it: the year bench saw restarts of 6 s instead of 1.5 s,
    each start's update timing out and being retried.
    """
    name = str(config.name)
    try:
        current = (await js.stream_info(name)).config
    except nats.js.errors.NotFoundError:
        # Not there, or this server cannot say yet (F12: a node whose JetStream could
        # not reserve its disk answered "not found" for a stream the others had made):
        # create it, and update it when it exists after all.
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError:
            await js.update_stream(config)
        return
    if any(getattr(current, f) != getattr(config, f) for f in fields):
        await js.update_stream(config)


class AuditLog(Protocol):
    async def append(self, entry: AuditEntry, *, once: str = "") -> int:
        """Append the entry and return its seq. `once`: an idempotency key; the same key
        within the stream's duplicate window appends nothing more (several nodes noting
        the same expiry).

        Raises:
            StoreUnavailable: no durable acknowledgement in time.
        """
        ...

    async def page(self, query: AuditQuery) -> AuditPage: ...


class JetStreamAuditLog:
    """The audit log on its JetStream stream."""

    def __init__(self, js: JetStreamContext, settings: Settings) -> None:
        self._js = js
        self._settings = settings
        self.stream = settings.audit_stream

    async def ensure(self) -> None:
        s = self._settings
        config = StreamConfig(
            name=self.stream, subjects=[f"{self.stream}.>"], storage=StorageType.FILE, num_replicas=s.replicas,
            discard=DiscardPolicy.NEW, max_bytes=s.audit_max_bytes, max_msg_size=64 * 1024,
            duplicate_window=s.duplicate_window_s, deny_delete=True, deny_purge=True,
        )
        await ensure_stream(self._js, config, ("subjects", "num_replicas", "max_bytes", "deny_delete", "deny_purge"))

    async def append(self, entry: AuditEntry, *, once: str = "") -> int:
        subject = f"{self.stream}.{entry.action.value}.{subject_token(entry.subject)}"
        payload = json.dumps(entry.as_json(), separators=(",", ":")).encode()
        headers = {"Nats-Msg-Id": once or uuid.uuid4().hex}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.publish_deadline_s
        while True:
            try:
                ack = await self._js.publish(subject, payload, stream=self.stream, headers=headers)
                return int(ack.seq)
            except (nats.errors.Error, asyncio.TimeoutError) as exc:
                # The same message id on every try: a retry after a lost ack appends nothing twice.
                if loop.time() > deadline or isinstance(exc, nats.js.errors.BadRequestError):
                    raise StoreUnavailable("audit_append", repr(exc)) from exc
                await asyncio.sleep(random.uniform(0.05, 0.3))

    async def page(self, query: AuditQuery) -> AuditPage:
        """Entries after `query.after_seq`, oldest first, at most `limit`; the read looks at
        no more than SCAN_MAX entries of the filtered subjects."""
        limit = max(1, min(query.limit, PAGE_MAX))
        token = subject_token(query.subject) if query.subject else "*"
        filters = [f"{self.stream}.{a.value}.{token}" for a in query.actions] or [f"{self.stream}.*.{token}"]
        found: list[AuditEntry] = []
        seq = query.after_seq
        for _ in range(SCAN_MAX):
            raw = await self._next(seq + 1, filters)
            if raw is None:
                return AuditPage(entries=tuple(found), next_after_seq=None)
            seq, entry = raw
            if (not query.actor or entry.actor == query.actor) and (not query.org or entry.org == query.org):
                found.append(entry)
                if len(found) >= limit:
                    break
        return AuditPage(entries=tuple(found), next_after_seq=seq)

    async def _next(self, start: int, filters: list[str]) -> tuple[int, AuditEntry] | None:
        """The first entry at or after `start` on any of the filters (one read each)."""
        best: tuple[int, AuditEntry] | None = None
        for subject in filters:
            try:
                msg = await self._js.get_msg(self.stream, seq=start, subject=subject, next=True)
            except nats.js.errors.NotFoundError:
                continue
            except nats.js.errors.APIError as exc:
                if exc.err_code == _NO_MESSAGE:
                    continue
                raise StoreUnavailable("audit_read", repr(exc)) from exc
            except (nats.errors.Error, asyncio.TimeoutError) as exc:
                raise StoreUnavailable("audit_read", repr(exc)) from exc
            if msg.seq is None or msg.data is None:
                continue
            if best is None or msg.seq < best[0]:
                best = (int(msg.seq), AuditEntry.from_json(json.loads(msg.data), int(msg.seq)))
        return best

"""Submitted alerts waiting for approval: one record each in the pending bucket.

A record is keyed by the alert stream's name and the alert id, so that one bucket serves
each deployment's stream. It leaves the bucket by its own TTL: a while after the alert would
have expired, or a while after it was rejected; a published one is deleted at once (the
stream holds it from then on). Every decision is a compare-and-set on the record, so two
approvers approving at once publish once.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from tocsin.errors import NOT_PENDING, TOO_MANY_PENDING, Rejected
from tocsin.policy import Issuer
from tocsin.store.base import AlertId, Records

# A claim to publish that is older than this was left by an approver whose node stopped
# before it finished: another approval may take it over (publishing is idempotent).
CLAIM_STALE_S = 30.0


class State(StrEnum):
    """Where a submission stands (docs/lifecycle.md)."""

    PENDING = "pending"
    PUBLISHING = "publishing"  # claimed by an approver; published or released shortly
    REJECTED = "rejected"
    EXPIRED = "expired"  # expired before anyone approved it: never published
    REFUSED = "refused"  # approved, but the accept path refused it at publish time


def actor_of(issuer: Issuer) -> str:
    """Who acts, as the audit log and the self-approval rule name them: the principal, or
    the organisation itself when the token names none."""
    return issuer.principal or f"org:{issuer.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Submission:
    """An alert submitted for approval, with its author's rights as they were then."""

    alert_id: AlertId
    org: str
    author: str
    rights: dict[str, Any]
    payload: bytes  # the canonical CAP XML accept would sign
    original: bytes | None  # the issuer's XML bytes, for the ledger
    status: str
    submitted_at: datetime
    expires_at: datetime
    state: State = State.PENDING
    decided_by: str = ""
    decided_at: datetime | None = None
    reason: str = ""
    source: str = ""

    def state_at(self, now: datetime) -> State:
        """The state as a reader sees it: a pending one past its expiry is expired."""
        if self.state is State.PENDING and self.expires_at <= now:
            return State.EXPIRED
        return self.state

    def author_rights(self) -> Issuer:
        return Issuer.from_json(self.rights)

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "kind": "submission", "id": self.alert_id, "org": self.org, "author": self.author,
            "rights": self.rights, "payload": self.payload.decode(), "status": self.status,
            "submittedAt": self.submitted_at.isoformat(), "expiresAt": self.expires_at.isoformat(),
            "state": self.state.value, "decidedBy": self.decided_by, "reason": self.reason, "source": self.source,
        }
        if self.original is not None:
            data["original"] = base64.b64encode(self.original).decode()
        if self.decided_at is not None:
            data["decidedAt"] = self.decided_at.isoformat()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Submission:
        """Raises KeyError, ValueError or TypeError for a record that is not a submission."""
        original = data.get("original")
        try:
            raw_original = base64.b64decode(original, validate=True) if isinstance(original, str) else None
        except binascii.Error:
            raw_original = None
        decided = data.get("decidedAt")
        return cls(
            alert_id=AlertId(str(data["id"])), org=str(data["org"]), author=str(data["author"]),
            rights=dict(data["rights"]), payload=str(data["payload"]).encode(), original=raw_original,
            status=str(data["status"]), submitted_at=datetime.fromisoformat(str(data["submittedAt"])),
            expires_at=datetime.fromisoformat(str(data["expiresAt"])), state=State(str(data["state"])),
            decided_by=str(data.get("decidedBy", "")), reason=str(data.get("reason", "")),
            decided_at=datetime.fromisoformat(str(decided)) if decided else None, source=str(data.get("source", "")),
        )

    def public_json(self, now: datetime) -> dict[str, Any]:
        """What the API shows of it (never the author's rights)."""
        shown: dict[str, Any] = {
            "id": self.alert_id, "state": self.state_at(now).value, "org": self.org, "author": self.author,
            "status": self.status, "submittedAt": self.submitted_at.isoformat(),
            "expires": self.expires_at.isoformat(),
            "links": {"self": f"/api/v1/alerts/{self.alert_id}",
                      "approve": f"/api/v1/alerts/{self.alert_id}/approve",
                      "reject": f"/api/v1/alerts/{self.alert_id}/reject"},
        }
        if self.decided_by:
            shown["decidedBy"] = self.decided_by
        if self.decided_at is not None:
            shown["decidedAt"] = self.decided_at.isoformat()
        if self.reason:
            shown["reason"] = self.reason
        return shown


@dataclass(frozen=True, slots=True, kw_only=True)
class Bounds:
    max_per_org: int
    decided_keep_s: float


class Submissions:
    """The submissions of one alert stream, in the pending bucket; `mirror` is the node's
    in-memory copy of the bucket (counts and listings read it, decisions read the bucket)."""

    def __init__(self, records: Records, stream: str, mirror: Mapping[str, dict[str, Any]], bounds: Bounds) -> None:
        self._records = records
        self._prefix = f"{stream}.alert."
        self._mirror = mirror
        self._bounds = bounds

    def key(self, alert_id: str) -> str:
        return f"{self._prefix}{alert_id}"

    def mirrored(self) -> list[Submission]:
        """Every submission of this stream the mirror holds (bounded: max_per_org each)."""
        found = []
        for key, value in list(self._mirror.items()):
            if key.startswith(self._prefix):
                try:
                    found.append(Submission.from_json(value))
                except (KeyError, ValueError, TypeError):
                    continue
        return found

    def listing(self, org: str | None, state: State, now: datetime) -> list[Submission]:
        """An organisation's (None: every) submissions in `state`, oldest first."""
        chosen = [s for s in self.mirrored() if (org is None or s.org == org) and s.state_at(now) is state]
        return sorted(chosen, key=lambda s: (s.submitted_at, s.alert_id))

    async def submit(self, submission: Submission, now: datetime) -> bool:
        """Keep the submission; False when the same alert is already submitted.

        Raises:
            Rejected: 409 approval.too-many-pending past the organisation's cap.
        """
        waiting = sum(1 for s in self.mirrored() if s.org == submission.org and s.state_at(now) is State.PENDING)
        if waiting >= self._bounds.max_per_org:
            raise Rejected(TOO_MANY_PENDING, f"{waiting} alerts of {submission.org!r} wait; the limit is "
                                             f"{self._bounds.max_per_org}")
        return await self._records.create(self.key(submission.alert_id), submission.as_json(),
                                          ttl_s=self._keep_s(submission, now))

    async def read(self, alert_id: str) -> tuple[Submission, int] | None:
        found = await self._records.get_versioned(self.key(alert_id))
        if found is None:
            return None
        try:
            return Submission.from_json(found[0]), found[1]
        except (KeyError, ValueError, TypeError):
            return None

    async def move(self, submission: Submission, revision: int, state: State, *, by: str, now: datetime,
                   reason: str = "") -> Submission:
        """Move the submission to `state` if nobody moved it since `revision`.

        Raises:
            Rejected: 409 approval.not-pending when another decision came first.
        """
        moved = replace(submission, state=state, decided_by=by, decided_at=now, reason=reason)
        ttl_s = self._keep_s(moved, now) if state is State.PENDING else self._bounds.decided_keep_s
        if not await self._records.replace(self.key(submission.alert_id), moved.as_json(), revision, ttl_s=ttl_s):
            raise Rejected(NOT_PENDING, "another decision on this alert came first")
        return moved

    async def remove(self, alert_id: str) -> None:
        await self._records.delete(self.key(alert_id))

    def may_claim(self, submission: Submission, now: datetime) -> bool:
        """Pending, or claimed by an approval that never finished."""
        if submission.state is State.PENDING:
            return True
        claimed = submission.decided_at
        return (submission.state is State.PUBLISHING and claimed is not None
                and now - claimed > timedelta(seconds=CLAIM_STALE_S))

    def _keep_s(self, submission: Submission, now: datetime) -> float:
        """Until a while after the alert would have expired (its state stays readable)."""
        return max(1.0, (submission.expires_at - now).total_seconds()) + self._bounds.decided_keep_s

"""Issuer API for alerts waiting for approval: submit, approve, reject, list, read.

An alert that needs a second person is vetted as accept would vet it and kept in the pending
bucket (202); approval publishes it through the same accept path, with its author's rights
as stored, so every check runs again at publish time (docs/lifecycle.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tocsin.api.audit import note
from tocsin.api.auth import issuer_for, require
from tocsin.api.ratelimit import source_of
from tocsin.api.services import Services
from tocsin.approval.pending import Bounds, State, Submission, Submissions, actor_of
from tocsin.cap.model import Alert, Status
from tocsin.cap.parse import parse_stored
from tocsin.cap.render import to_json
from tocsin.correction import is_correction
from tocsin.errors import (
    BAD_REQUEST,
    NOT_PENDING,
    PENDING_UNKNOWN,
    REASON_REQUIRED,
    SELF_APPROVAL,
    Rejected,
    StoreFull,
    StoreUnavailable,
    TocsinError,
)
from tocsin.pipeline.accept import Accepted
from tocsin.policy import Issuer, Role
from tocsin.store.audit import Action
from tocsin.store.base import AlertId

log = logging.getLogger(__name__)

PAGE_MAX = 100
# A decision's body (a reason) is small.
DECISION_MAX_BYTES = 16 * 1024
REASON_MAX_CHARS = 2000


def submissions(services: Services) -> Submissions:
    s = services.settings
    return Submissions(services.store.pending, s.stream, services.pending_cache,
                       Bounds(max_per_org=s.max_pending_per_org, decided_keep_s=s.decided_keep_s))


async def submit(request: Request, services: Services, alert: Alert, issuer: Issuer, original: bytes | None,
                 alert_id: AlertId) -> Response:
    """Vet the alert as accept would, keep it pending, answer 202 with its state."""
    now = services.clock()
    await services.accept.prepare(issuer)  # GAZ: the territory built off the loop
    vetted = services.accept.vet(alert, issuer, now)
    alert, payload = vetted.alert, vetted.payload
    # The issuer's bytes go to the ledger at publication when the record can hold both.
    fits = original is not None and len(original) + len(payload) <= services.settings.max_cap_bytes
    submission = Submission(
        alert_id=alert_id, org=issuer.name, author=actor_of(issuer), rights=issuer.as_json(), payload=payload,
        original=original if fits else None, status=alert.status.value, submitted_at=now,
        expires_at=services.accept.expires_at(alert), source=source_of(request),
    )
    pending = submissions(services)
    if not await pending.submit(submission, now):
        found = await pending.read(alert_id)
        if found is None:
            # The key exists but the replica that answered has not caught up (seen in F07,
            # a retry after a submission whose answer was lost): not a conflict; retry.
            raise StoreUnavailable("pending_read", "the submission exists but cannot be read back yet")
        if found[0].payload != payload:
            raise Rejected(NOT_PENDING, "an alert with this sender and identifier was already submitted",
                           headers={"Location": f"/api/v1/alerts/{alert_id}"})
        return _answer(found[0], services, 200)
    await note(services, request, Action.SUBMITTED, alert_id, issuer=issuer, once=f"submitted:{alert_id}",
               detail={"status": submission.status, "msgType": alert.msg_type.value, "sender": alert.sender})
    return _answer(submission, services, 202)


def _answer(submission: Submission, services: Services, status_code: int) -> Response:
    body = submission.public_json(services.clock())
    return JSONResponse(body, status_code=status_code, headers={"Location": body["links"]["self"]})


async def readable(services: Services, alert_id: AlertId, issuer: Issuer) -> tuple[Submission, int]:
    """The submission, for an account of its organisation (or an admin).

    Raises:
        Rejected: 404 approval.unknown (also for another organisation's: nothing leaks).
    """
    found = await submissions(services).read(alert_id)
    if found is None or not (issuer.admin or found[0].org == issuer.name):
        raise Rejected(PENDING_UNKNOWN, f"no submitted alert {alert_id}")
    return found


async def approve(request: Request, services: Services, alert_id: AlertId) -> Accepted:
    """Publish a pending alert as its author would have: once, whoever approves at once."""
    issuer = await issuer_for(request, services)
    require(issuer, Role.APPROVER)
    try:
        submission, revision = await readable(services, alert_id, issuer)
    except Rejected:
        if await services.store.holds(alert_id):  # published: the record left the bucket
            raise Rejected(NOT_PENDING, "it is published") from None
        raise
    pending = submissions(services)
    now = services.clock()
    if submission.state_at(now) is State.EXPIRED:
        await expire(services, pending, submission, revision, by=actor_of(issuer))
        raise Rejected(NOT_PENDING, f"it expired at {submission.expires_at.isoformat()} before approval")
    if not pending.may_claim(submission, now):
        raise Rejected(NOT_PENDING, f"it is {submission.state.value}")
    if submission.status == Status.ACTUAL.value and actor_of(issuer) == submission.author:
        raise Rejected(SELF_APPROVAL, f"{submission.author} submitted it")
    claimed = await pending.move(submission, revision, State.PUBLISHING, by=actor_of(issuer), now=now)
    accepted = await _publish(services, pending, claimed)
    await note(services, request, Action.APPROVED, alert_id, issuer=issuer, org=submission.org,
               once=f"approved:{alert_id}", detail={"author": submission.author})
    await note_published(services, request, accepted, actor=submission.author, org=submission.org,
                         detail={"approvedBy": actor_of(issuer)})
    await pending.remove(alert_id)
    return accepted


async def _publish(services: Services, pending: Submissions, claimed: Submission) -> Accepted:
    """Accept the claimed submission; on a refusal it is settled as refused, on a store
    failure released to pending (the approver may retry)."""
    alert = services.accept.parse(claimed.payload)
    try:
        return await services.accept(alert, claimed.author_rights(), claimed.original)
    except Rejected as refusal:
        await _settle(services, pending, claimed.alert_id, State.REFUSED, refusal.problem.code)
        raise
    except (StoreUnavailable, StoreFull):
        await _settle(services, pending, claimed.alert_id, State.PENDING, "")
        raise


async def _settle(services: Services, pending: Submissions, alert_id: AlertId, state: State, reason: str) -> None:
    found = await pending.read(alert_id)
    if found is not None and found[0].state is State.PUBLISHING:
        try:
            await pending.move(found[0], found[1], state, by=found[0].decided_by, now=services.clock(), reason=reason)
        except Rejected:
            pass  # another approval took the stale claim over; it decides


async def expire(services: Services, pending: Submissions, submission: Submission, revision: int, *, by: str) -> None:
    """Mark a submission that expired while pending; audited once (whoever wins the move)."""
    try:
        await pending.move(submission, revision, State.EXPIRED, by=by, now=services.clock())
    except Rejected:
        return
    await note(services, None, Action.EXPIRED, submission.alert_id, actor=by, org=submission.org,
               once=f"expired:{submission.alert_id}", detail={"state": "pending"})


async def reject(request: Request, services: Services, alert_id: AlertId, body: bytes) -> Response:
    """Refuse a pending alert, with a reason; it is never published."""
    issuer = await issuer_for(request, services)
    require(issuer, Role.APPROVER)
    reason = _reason(body)
    submission, revision = await readable(services, alert_id, issuer)
    now = services.clock()
    if submission.state_at(now) is not State.PENDING:
        raise Rejected(NOT_PENDING, f"it is {submission.state_at(now).value}")
    rejected = await submissions(services).move(submission, revision, State.REJECTED, by=actor_of(issuer),
                                                now=now, reason=reason)
    await note(services, request, Action.REJECTED, alert_id, issuer=issuer, org=submission.org,
               once=f"rejected:{alert_id}", detail={"author": submission.author, "reason": reason})
    return _answer(rejected, services, 200)


def _reason(body: bytes) -> str:
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise Rejected(BAD_REQUEST, "the body is not JSON") from None
    reason = data.get("reason") if isinstance(data, dict) else None
    if not isinstance(reason, str) or not reason.strip():
        raise Rejected(REASON_REQUIRED)
    return reason.strip()[:REASON_MAX_CHARS]


async def list_alerts(request: Request, services: Services) -> Response:
    """`GET /api/v1/alerts?state=pending`: the caller's organisation's, oldest first, paged."""
    issuer = await issuer_for(request, services)
    params = request.query_params
    try:
        state = State(params.get("state", ""))
        limit = int(params.get("limit", "50"))
    except ValueError:
        raise Rejected(BAD_REQUEST, f"state is one of {', '.join(s.value for s in State)}; limit a number") from None
    if not 1 <= limit <= PAGE_MAX:
        raise Rejected(BAD_REQUEST, f"limit is 1 to {PAGE_MAX}")
    org = (params.get("org") or None) if issuer.admin else issuer.name
    now = services.clock()
    chosen = submissions(services).listing(org, state, now)
    after = params.get("after", "")
    if after:
        chosen = chosen[next((i + 1 for i, s in enumerate(chosen) if s.alert_id == after), 0):]
    page = chosen[:limit]
    body: dict[str, Any] = {"alerts": [s.public_json(now) for s in page], "links": {}}
    if len(chosen) > limit:
        kept = [(k, v) for k, v in params.multi_items() if k != "after"]
        body["links"]["next"] = f"/api/v1/alerts?{urlencode([*kept, ('after', page[-1].alert_id)])}"
    return JSONResponse(body)


async def pending_view(request: Request, services: Services, alert_id: AlertId) -> Response | None:
    """A submission's state and alert for an account of its organisation; None otherwise."""
    if not request.headers.get("authorization"):
        return None
    issuer = await issuer_for(request, services)
    try:
        submission, _ = await readable(services, alert_id, issuer)
    except Rejected:
        return None
    body = submission.public_json(services.clock())
    body["alert"] = to_json(parse_stored(submission.payload))
    return JSONResponse(body)


def published_action(alert: Alert) -> Action:
    """What publishing this alert is, for the audit log."""
    if is_correction(alert):
        return Action.CORRECTED
    return {"Update": Action.UPDATED, "Cancel": Action.CANCELLED}.get(alert.msg_type.value, Action.PUBLISHED)


async def note_published(services: Services, request: Request, accepted: Accepted, *, actor: str, org: str,
                         detail: dict[str, Any] | None = None) -> None:
    """Audit a publication (once per alert, also when the issuer retries)."""
    alert_id = accepted.stored.envelope.alert_id
    action = published_action(accepted.alert)
    references = [f"{r.sender},{r.identifier}" for r in accepted.alert.references]
    await note(services, request, action, alert_id, actor=actor, org=org, once=f"{action.value}:{alert_id}",
               detail={"status": accepted.alert.status.value, "seq": accepted.stored.seq,
                       **({"references": references} if references else {}), **(detail or {})})


async def sweep_forever(services: Services) -> None:
    """On every node: mark submissions that expired while pending, and audit once per
    cluster each published alert that expires (the move, or the `once` key, makes it one
    entry whichever nodes see it). Reads the node's mirror and index, never the history."""
    interval_s = services.settings.pending_sweep_s
    node = f"node:{services.settings.node_name}"
    live: dict[str, tuple[Any, str]] = {}  # alert id -> (expires_at, issuer organisation)
    failing = ""  # the kind of the last failure, logged once until it changes
    while True:
        await asyncio.sleep(interval_s)
        try:
            await _sweep_once(services, node, live)
            failing = ""
        except TocsinError as exc:  # the store's refusals and failures: the next pass retries
            if type(exc).__name__ != failing:
                log.warning("lifecycle sweep failed", extra={"error": repr(exc)[:200]})
            failing = type(exc).__name__


async def _sweep_once(services: Services, node: str, live: dict[str, tuple[Any, str]]) -> None:
    now = services.clock()
    pending = submissions(services)
    for submission in pending.mirrored():
        if submission.state is State.PENDING and submission.expires_at <= now:
            found = await pending.read(submission.alert_id)
            if found is not None and found[0].state is State.PENDING:
                await expire(services, pending, found[0], found[1], by=node)
    for active in list(services.pipeline.index.by_id.values()):
        env = active.stored.envelope
        if not env.issuer.startswith("prober:"):
            live[env.alert_id] = (active.expires_at, env.issuer)
    for alert_id, (expires_at, org) in list(live.items()):
        if expires_at <= now:
            await note(services, None, Action.EXPIRED, alert_id, actor=node, org=org, once=f"expired:{alert_id}",
                       detail={"state": "published", "expiresAt": expires_at.isoformat()})
            del live[alert_id]

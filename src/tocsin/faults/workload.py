"""The issuer workload: CAP alerts at a steady rate through the public API, spread over the
nodes, each retried on another node with the same CAP identity until acknowledged.

A 503 (with Retry-After), a 5xx, a timeout or a dropped connection means "not stored, or
unknown": a real issuer sends the same document again, to another node. A 201 or a 200
(already stored) is an acknowledgement; the checker holds tocsin to every one of them.

With `people` (a duty room's author and approver tokens), every APPROVAL_EVERY-th alert goes
through the two-person rule while the fault is on: the author submits it (202, kept pending,
replicated), the approver approves it on the next node, and the approval's 201 is its
acknowledgement; a submission or an approval is retried on another node like any alert.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx

from tocsin.cap.compose import simple_alert
from tocsin.faults.history import History
from tocsin.store.base import alert_id_for

SENDER = "faults@tocsin.test"
# One alert in this many goes through submission and approval (when the issuer has people).
APPROVAL_EVERY = 10
# The workload's area: central Paris; the fleet's inside devices all sit within it.
PARIS_BOX = "48.80,2.25 48.80,2.42 48.90,2.42 48.90,2.25 48.80,2.25"


def alert_xml(identifier: str, *, sent: datetime | None = None, expires_in_s: float = 3600.0,
              status: str = "Actual", polygon: str = PARIS_BOX) -> bytes:
    """A Public CAP 1.2 alert over `polygon`, identity (SENDER, identifier)."""
    return simple_alert(
        identifier=identifier, sender=SENDER, sent=sent, expires_in_s=expires_in_s, status=status,
        polygon=polygon, headline=f"Exercice de panne {identifier}", description="Alerte du banc de pannes.",
    )


@dataclass(slots=True, kw_only=True)
class Outcome:
    alert_id: str
    identifier: str
    acked: bool = False
    seq: int | None = None
    node: str | None = None
    attempts: int = 0
    statuses: list[str] = field(default_factory=list)


class Issuer:
    """Issues alerts; every attempt and outcome goes to the history."""

    def __init__(
        self,
        urls: dict[str, str],
        token: str,
        history: History,
        *,
        run_id: str,
        attempt_timeout_s: float = 15.0,
        give_up_s: float = 120.0,
        max_in_flight: int = 64,
        people: tuple[str, str] | None = None,
    ) -> None:
        self.urls = urls
        self.names = list(urls)
        self.token = token
        self.people = people  # (author token, approver token)
        self.history = history
        self.run_id = run_id
        self.attempt_timeout_s = attempt_timeout_s
        self.give_up_s = give_up_s
        self._slots = asyncio.Semaphore(max_in_flight)
        self._numbers = itertools.count(1)
        self._next_node = itertools.cycle(range(len(self.names)))
        self.outcomes: dict[str, Outcome] = {}
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(attempt_timeout_s, connect=2.0),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        )
        self.stopping = False

    async def close(self) -> None:
        await self._http.aclose()

    def new_identifier(self, prefix: str = "") -> str:
        return f"{self.run_id}-{prefix}{next(self._numbers):06d}"

    async def run(self, rate: float, stop: asyncio.Event) -> None:
        """Issue `rate` alerts a second until `stop`; then wait for those in flight (bounded)."""
        async with asyncio.TaskGroup() as tasks:
            start = time.monotonic()
            for n in itertools.count():
                wait = start + n / rate - time.monotonic()
                if wait > 0:
                    try:
                        await asyncio.wait_for(stop.wait(), wait)
                    except TimeoutError:
                        pass
                if stop.is_set():
                    break
                await self._slots.acquire()
                approved = self.people is not None and n % APPROVAL_EVERY == APPROVAL_EVERY - 1
                tasks.create_task(self._issue_slot(self.new_identifier("p" if approved else ""), approved))

    async def _issue_slot(self, identifier: str, approved: bool = False) -> None:
        try:
            await (self.issue_with_approval(identifier) if approved else self.issue(identifier))
        finally:
            self._slots.release()

    async def burst(self, count: int, *, first_node: str | None = None) -> list[Outcome]:
        """`count` alerts at once (all in flight together)."""
        async with asyncio.TaskGroup() as tasks:
            running = [tasks.create_task(self.issue(self.new_identifier("b"), first_node=first_node))
                       for _ in range(count)]
        return [task.result() for task in running]

    async def issue(self, identifier: str, *, xml: bytes | None = None, first_node: str | None = None) -> Outcome:
        """One alert, retried on the next node until acknowledged, refused, or `give_up_s`."""
        body = xml or alert_xml(identifier)
        outcome = Outcome(alert_id=alert_id_for(SENDER, identifier), identifier=identifier)
        self.outcomes[outcome.alert_id] = outcome
        first_t = time.time()
        deadline = time.monotonic() + self.give_up_s
        index = self.names.index(first_node) if first_node else next(self._next_node)
        self.history.record("issue_start", id=outcome.alert_id, ident=identifier)
        while time.monotonic() < deadline:
            node = self.names[index % len(self.names)]
            outcome.attempts += 1
            retry_after, final = await self._attempt(outcome, node, body, first_t)
            if final:
                return outcome
            index += 1  # another node, as a real issuer would
            await asyncio.sleep(min(retry_after, 2.0) * random.uniform(0.5, 1.0))
        self.history.record("gave_up", id=outcome.alert_id, attempts=outcome.attempts, statuses=outcome.statuses)
        return outcome

    async def issue_with_approval(self, identifier: str) -> Outcome:
        """One alert through the two-person rule: submitted by the author until a node keeps it
        (202), then approved by the approver, each step retried on the next node."""
        assert self.people is not None
        author, approver = self.people
        body = alert_xml(identifier)
        outcome = Outcome(alert_id=alert_id_for(SENDER, identifier), identifier=identifier)
        self.outcomes[outcome.alert_id] = outcome
        first_t = time.time()
        deadline = time.monotonic() + self.give_up_s
        index = next(self._next_node)
        self.history.record("issue_start", id=outcome.alert_id, ident=identifier, approval=True)
        submitted = False
        while time.monotonic() < deadline:
            node = self.names[index % len(self.names)]
            outcome.attempts += 1
            if not submitted:
                retry_after, submitted, final = await self._submit(outcome, node, body, author)
            else:
                retry_after, final = await self._attempt(outcome, node, b"", first_t, token=approver,
                                                         path=f"/api/v1/alerts/{outcome.alert_id}/approve")
            if final:
                return outcome
            index += 1
            if retry_after:
                await asyncio.sleep(min(retry_after, 2.0) * random.uniform(0.5, 1.0))
        self.history.record("gave_up", id=outcome.alert_id, attempts=outcome.attempts, statuses=outcome.statuses)
        return outcome

    async def _submit(self, outcome: Outcome, node: str, body: bytes, token: str) -> tuple[float, bool, bool]:
        """One submission; returns (pause, whether it is kept pending, whether it is refused)."""
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/cap+xml"}
        try:
            response = await self._http.post(f"{self.urls[node]}/api/v1/alerts", content=body, headers=headers)
        except httpx.HTTPError as exc:
            outcome.statuses.append(type(exc).__name__)
            self.history.record("submit", id=outcome.alert_id, node=node, status=type(exc).__name__)
            return (0.5, False, False)
        outcome.statuses.append(f"submit:{response.status_code}")
        self.history.record("submit", id=outcome.alert_id, node=node, status=response.status_code)
        if response.status_code in (200, 202):  # 200: a retry of a submission kept before
            return (0.0, True, False)
        if response.status_code >= 500:
            return (_retry_after(response), False, False)
        self.history.record("refused", id=outcome.alert_id, node=node, status=response.status_code,
                            body=response.text[:300])
        return (0.0, False, True)

    async def _attempt(self, outcome: Outcome, node: str, body: bytes, first_t: float, *, token: str = "",
                       path: str = "/api/v1/alerts") -> tuple[float, bool]:
        """One POST (an alert, or an approval at `path`); returns (pause before the next try,
        whether the outcome is final)."""
        sent = time.time()
        headers = {"Authorization": f"Bearer {token or self.token}", "Content-Type": "application/cap+xml"}
        approving = path != "/api/v1/alerts"
        try:
            response = await self._http.post(f"{self.urls[node]}{path}", content=body, headers=headers)
            if approving and response.status_code == 409:
                # Not pending: an earlier approval whose answer was lost published it; the
                # alert itself then says so, with its seq.
                published = await self._http.get(f"{self.urls[node]}/api/v1/alerts/{outcome.alert_id}")
                if published.status_code == 200 and "seq" in published.json():
                    response = published
        except httpx.HTTPError as exc:
            kind = type(exc).__name__
            outcome.statuses.append(kind)
            self.history.record("issue", id=outcome.alert_id, node=node, n=outcome.attempts, status=kind,
                                dt=round(time.time() - sent, 3))
            return (0.5, False)
        status = response.status_code
        outcome.statuses.append(str(status))
        record = {"id": outcome.alert_id, "node": node, "n": outcome.attempts, "status": status,
                  "dt": round(time.time() - sent, 3)}
        if status in (200, 201):
            seq = int(response.json()["seq"])
            outcome.acked, outcome.seq, outcome.node = True, seq, node
            self.history.record("issue", **record, seq=seq)
            self.history.record("acked", id=outcome.alert_id, ident=outcome.identifier, seq=seq, node=node,
                                status=status, first_t=first_t, attempts=outcome.attempts)
            return (0.0, True)
        self.history.record("issue", **record, body=response.text[:200])
        if status in (502, 503, 504) or status >= 500:
            return (_retry_after(response), False)
        if approving and status in (404, 409):
            # This node's copy of the pending bucket has not the submission yet: ask again.
            return (0.5, False)
        # A refusal (4xx): final. A 409 for the same bytes would be a bug; the checker says so.
        self.history.record("refused", id=outcome.alert_id, node=node, status=status, body=response.text[:300])
        return (0.0, True)


def _retry_after(response: httpx.Response) -> float:
    try:
        return float(response.headers.get("retry-after", "1"))
    except ValueError:
        return 1.0

"""`Push` values as the dispatcher hands them to a sender, and what the FCM and APNs tests
share: a sender with its fake, and the hang every gateway may do."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Generic, TypeVar

from tests.fakes.gateway_faults import FakeClock, FakeGateway
from tocsin.delivery.model import Delivery, Outcome, Push, Sender, pointer_payload, push_payload, topic_for
from tocsin.settings import Settings
from tocsin.store.base import AlertId, Envelope

F = TypeVar("F", bound=FakeGateway)
S = TypeVar("S", bound=Sender)


@dataclasses.dataclass
class Rig(Generic[F, S]):
    fake: F
    sender: S
    clock: FakeClock
    settings: Settings


async def check_a_hang_is_a_timely_retry(fake: FakeGateway, sender: Sender, sent: Push, timeout_s: float) -> None:
    """A gateway that never answers costs a send `timeout_s` (and a little), is a retry
    with reason `timeout`, and leaves the sender's client able to send at once after."""
    fake.fail("hang")
    started = time.monotonic()
    result = await sender.send(sent)
    elapsed = time.monotonic() - started
    fake.heal()
    assert (result.outcome, result.reason) == (Outcome.RETRY, "timeout")
    assert elapsed < timeout_s + 1.0
    assert (await sender.send(sent)).outcome is Outcome.SENT

POINTER_URL = "https://alerts.example.org/api/v1/events/"


def envelope(cap_bytes: int = 1200, *, alert_id: str = "a1" * 16) -> Envelope:
    cap = ("<alert xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\">" + "x" * cap_bytes + "</alert>").encode()
    return Envelope(alert_id=AlertId(alert_id), payload=cap, sig="c2ln" * 22, kid="k1", issuer="issuer", node="n1",
                    accepted_at=dt.datetime.now(dt.UTC))


def push(channel: str, token: str, *, cap_bytes: int = 1200, severity: str = "Severe", status: str = "Actual",
         ttl_s: int = 3600, root: str = "b2" * 16, headline: str = "Flood warning",
         body: str = "Leave the river banks now.", alert_id: str = "a1" * 16) -> Push:
    found = envelope(cap_bytes, alert_id=alert_id)
    delivery = Delivery(alert_id=alert_id, seq=7, channel=channel, destination="device-1",
                        expires_at=time.time() + ttl_s, urgent=severity == "Extreme" and status == "Actual")
    url = POINTER_URL + alert_id
    return Push(delivery=delivery, target={"token": token}, payload=push_payload(found, 7, pointer_url=url),
                pointer=pointer_payload(found, 7, pointer_url=url), topic=topic_for(root), severity=severity,
                status=status, ttl_s=ttl_s, headline=headline, body=body)

"""The active-alert index: what becomes active, what a Cancel without area reaches, what expiry forgets."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from tests.samples import alert_xml
from tocsin.cap.model import Alert
from tocsin.cap.parse import parse_xml
from tocsin.cap.render import to_xml
from tocsin.pipeline.handoff import Handoff
from tocsin.pipeline.index import ActiveIndex
from tocsin.store.base import AlertId, Envelope, Stored, alert_id_for

SENT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def stored(seq: int, payload: bytes | Alert) -> Stored:
    alert = parse_xml(payload) if isinstance(payload, bytes) else payload
    envelope = Envelope(
        alert_id=alert_id_for(alert.sender, alert.identifier), payload=to_xml(alert), sig="s", kid="k",
        issuer="admin", node="n1", accepted_at=SENT,
    )
    return Stored(seq=seq, envelope=envelope)


def index_at(now: datetime) -> tuple[ActiveIndex, FakeClock, list[str]]:
    clock, rewinds = FakeClock(now), []
    index = ActiveIndex(Handoff(), default_lifetime_s=600, clock=clock, on_rewind=lambda: rewinds.append("rewind"))
    return index, clock, rewinds


def test_an_alert_is_active_until_it_expires_then_pruned() -> None:
    index, clock, _ = index_at(SENT + timedelta(seconds=1))
    first = stored(1, alert_xml(identifier="A-1", sent=SENT, expires_in_s=60))
    active = index.add(first)
    assert active is not None and index.active[1] is active and index.by_id[first.envelope.alert_id] is active
    assert active.event.sse.startswith(f"id: 1.{first.envelope.alert_id[:8]}\n".encode())
    assert index.prune_if_due() == []  # not expired
    clock.now = SENT + timedelta(seconds=61)
    assert index.prune_if_due() == [active]
    assert index.active == {} and index.by_id == {}
    assert index.last_seq == 1


def test_an_expired_alert_is_seen_but_never_active() -> None:
    index, _, _ = index_at(SENT + timedelta(hours=2))
    assert index.add(stored(5, alert_xml(identifier="A-old", sent=SENT, expires_in_s=60))) is None
    # Without <expires>: the default lifetime (600 s here) from sent.
    assert index.add(stored(6, alert_xml(identifier="A-none", sent=SENT, expires_in_s=None))) is None
    assert index.last_seq == 6 and index.active == {}


def test_a_redelivery_is_ignored_and_a_reused_seq_rewinds() -> None:
    index, _, rewinds = index_at(SENT + timedelta(seconds=1))
    first = stored(1, alert_xml(identifier="A-1", sent=SENT))
    assert index.add(first) is not None
    assert index.add(first) is None and rewinds == []
    other = stored(1, alert_xml(identifier="A-2", sent=SENT))
    assert index.add(other) is not None
    assert rewinds == ["rewind"] and list(index.by_id) == [other.envelope.alert_id]


def test_a_cancel_without_area_goes_where_its_reference_went() -> None:
    index, _, _ = index_at(SENT + timedelta(seconds=1))
    original = stored(1, alert_xml(identifier="A-1", sent=SENT))
    index.add(original)
    refs = f"prefecture-75@interieur.gouv.fr,A-1,{SENT.isoformat()}"
    # A CAP alert has zero or more info blocks: a Cancel may carry none, so no area.
    without_info = replace(parse_xml(alert_xml(identifier="A-1-cancel", sent=SENT, msg_type="Cancel", references=refs)), infos=())
    cancel = stored(2, without_info)
    active = index.add(cancel)
    assert active is not None
    assert active.areas == index.by_id[AlertId(original.envelope.alert_id)].areas

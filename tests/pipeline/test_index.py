"""The active-alert index: what becomes active, what a Cancel without area reaches, what expiry forgets."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from tests.samples import alert_xml
from tocsin.cap.model import Alert, ValuePair
from tocsin.cap.parse import parse_xml
from tocsin.cap.render import to_xml
from tocsin.correction import CORRECTION_PARAMETER, CORRECTION_VALUE
from tocsin.geo.cells import cell_for_point
from tocsin.pipeline.handoff import Handoff
from tocsin.pipeline.index import ActiveIndex
from tocsin.pipeline.replay import UNVOUCHED
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


LYON_BOX = "45.70,4.75 45.70,4.90 45.80,4.90 45.80,4.75 45.70,4.75"
REFS = "prefecture-75@interieur.gouv.fr,{},2026-03-01T12:00:00+00:00"


def test_a_chain_replays_only_what_each_cursor_needs() -> None:
    index, _, _ = index_at(SENT + timedelta(seconds=1))
    original = index.add(stored(1, alert_xml(identifier="A-1", sent=SENT)))
    update = index.add(stored(2, alert_xml(identifier="A-2", sent=SENT, msg_type="Update", references=REFS.format("A-1"))))
    cancel = index.add(stored(3, alert_xml(identifier="A-3", sent=SENT, msg_type="Cancel", references=REFS.format("A-2"))))
    other = index.add(stored(4, alert_xml(identifier="B-1", sent=SENT)))
    assert original and update and cancel and other
    assert (update.root_seq, cancel.root_seq, cancel.retracts) == (1, 1, True)

    def replayed(after: int) -> list[int]:
        return [a.stored.seq for a in index.active.values() if index.replays_to(a, after)]

    assert replayed(0) == [4]  # a new device: nothing of a cancelled chain
    assert replayed(UNVOUCHED) == [2, 3, 4]  # a cursor into a lost tail: all but the original
    assert replayed(1) == [2, 3, 4]  # it showed the original: each step, to follow it
    assert replayed(2) == [3, 4]
    assert replayed(3) == [4]


def test_an_update_with_its_own_area_also_reaches_the_cover_of_what_it_replaces() -> None:
    index, _, _ = index_at(SENT + timedelta(seconds=1))
    original = index.add(stored(1, alert_xml(identifier="A-1", sent=SENT)))
    moved = index.add(stored(2, alert_xml(identifier="A-2", sent=SENT, msg_type="Update", polygon=LYON_BOX,
                                          references=REFS.format("A-1"))))
    assert original and moved
    assert original.cover.cells <= moved.cover.cells and moved.cover.cells - original.cover.cells
    assert index.replays_to(moved, 0) and not index.replays_to(original, 0)


def test_a_correction_reaches_every_cell() -> None:
    index, _, _ = index_at(SENT + timedelta(seconds=1))
    index.add(stored(1, alert_xml(identifier="A-1", sent=SENT)))
    false_alert = parse_xml(alert_xml(identifier="A-2", sent=SENT, msg_type="Cancel", references=REFS.format("A-1")))
    marker = ValuePair(value_name=CORRECTION_PARAMETER, value=CORRECTION_VALUE)
    info = replace(false_alert.infos[0], areas=(), parameters=(marker,))
    correction = index.add(stored(2, replace(false_alert, infos=(info,))))
    assert correction is not None and correction.everywhere
    assert correction.reaches(cell_for_point(45.76, 4.83))  # Lyon, far from the Paris box


def test_expiry_forgets_a_supersession_with_its_alert() -> None:
    index, clock, _ = index_at(SENT + timedelta(seconds=1))
    index.add(stored(1, alert_xml(identifier="A-1", sent=SENT, expires_in_s=60)))
    index.add(stored(2, alert_xml(identifier="A-2", sent=SENT, msg_type="Cancel", references=REFS.format("A-1"))))
    assert list(index.superseded.values()) == [2]
    clock.now = SENT + timedelta(seconds=61)
    index.prune_if_due()
    assert index.superseded == {}

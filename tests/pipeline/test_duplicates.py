"""Duplicates across issuers: remembered within a window, at most so many, fed by the stream too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.samples import alert_xml
from tocsin.cap.parse import parse_xml
from tocsin.pipeline.duplicates import Duplicates

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_a_repeat_is_flagged_within_the_window_only() -> None:
    table = Duplicates(window_s=600, max_entries=10)
    alert = parse_xml(alert_xml(headline="Crue"))
    assert table.check(alert, "a" * 32, "org-a", T0) is None
    flagged = table.check(alert, "b" * 32, "org-b", T0 + timedelta(minutes=9))
    assert flagged is not None and flagged.as_json() == {"id": "a" * 32, "issuer": "org-a"}
    assert table.check(alert, "c" * 32, "org-c", T0 + timedelta(minutes=11)) is None  # window over
    assert table.flagged == 1


def test_what_another_node_stored_is_known_from_the_stream_and_memory_is_capped() -> None:
    table = Duplicates(window_s=600, max_entries=3)
    alert = parse_xml(alert_xml(headline="Crue"))
    table.note(alert, "a" * 32, "org-a", T0)  # the follower saw it (accepted on another node)
    flagged = table.check(alert, "b" * 32, "org-b", T0 + timedelta(seconds=1))
    assert flagged is not None and flagged.alert_id == "a" * 32
    for n in range(3):
        table.note(parse_xml(alert_xml(headline=f"autre {n}")), f"{n}" * 32, "org-x", T0)
    assert len(table._seen) == 3  # the oldest was forgotten
    assert table.check(alert, "c" * 32, "org-c", T0 + timedelta(seconds=2)) is None

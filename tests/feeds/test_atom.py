"""The Atom renderer and the window, in-process: the byte bound, what is said when entries
are left out, the window's bound in entries, and its file."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import h3

from tests.feeds import atomcheck
from tocsin.feeds.atom import FeedHead, render
from tocsin.feeds.window import FeedEntry, FeedWindow, coarsened

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
HEAD = FeedHead(feed_id="urn:uuid:00000000-0000-0000-0000-000000000001", title="Alerts",
                self_href="/feeds/alerts.atom", base_url="https://alerts.example.org")
OMITTED = "{urn:x-tocsin:feed:1}omitted"
COMPLETE = "{http://purl.org/syndication/history/1.0}complete"


def entry(n: int, **changes: object) -> FeedEntry:
    values: dict[str, object] = dict(
        alert_id=f"{n:032x}", seq=n, identifier=f"ID-{n}", sender="prefecture-06@interieur.gouv.fr",
        sent=NOW + timedelta(seconds=n), expires_at=NOW + timedelta(hours=1), msg_type="Alert",
        title=f"Alerte {n}", summary="Crue de la Vésubie. " * 40, event="Inondation", severity="Severe",
        area_desc="Nice", cells=("861f8d8a7ffffff",),
    )
    values.update(changes)
    return FeedEntry(**values)  # type: ignore[arg-type]


def newest_first(n: int) -> list[FeedEntry]:
    return [entry(i) for i in reversed(range(n))]


def test_a_feed_over_its_bound_leaves_out_the_oldest_and_says_how_many() -> None:
    entries = newest_first(400)
    whole = render(HEAD, entries, max_bytes=16 * 1024**2, quiet_since=NOW)
    assert whole.omitted == 0 and atomcheck.feed_child(whole.body, COMPLETE) is not None
    assert len(whole.body) > 200_000
    bounded = render(HEAD, entries, max_bytes=100_000, quiet_since=NOW)
    assert len(bounded.body) <= 100_000
    read = atomcheck.entries(bounded.body)
    assert len(read) == bounded.entries and bounded.omitted == 400 - bounded.entries > 0
    assert [e.cap["identifier"] for e in read] == [f"ID-{i}" for i in reversed(range(400 - bounded.entries, 400))]
    omitted = atomcheck.feed_child(bounded.body, OMITTED)
    assert omitted is not None and omitted.text == str(bounded.omitted)
    assert atomcheck.feed_child(bounded.body, COMPLETE) is None
    assert bounded.etag != whole.etag
    # Near the bound, every entry that fits is kept: at most one entry's size is wasted.
    assert len(bounded.body) > 100_000 - 2 * len(whole.body) // 400


def test_links_are_absolute_with_a_public_url_and_ids_are_the_same_everywhere() -> None:
    rendered = render(HEAD, [entry(7)], max_bytes=900_000, quiet_since=NOW)
    read = atomcheck.entries(rendered.body)[0]
    assert read.cap_href == f"https://alerts.example.org/api/v1/alerts/{7:032x}.xml"
    assert read.id == "urn:uuid:00000000-0000-0000-0000-000000000007"
    assert render(HEAD, [entry(7)], max_bytes=900_000, quiet_since=NOW).body == rendered.body


def test_text_that_xml_cannot_hold_is_left_out() -> None:
    rendered = render(HEAD, [entry(1, title="bad\x00\x1b title\ufffe")], max_bytes=900_000, quiet_since=NOW)
    assert atomcheck.entries(rendered.body)[0].title == "bad title"


def test_an_empty_feed_is_valid_and_dated_by_its_last_change() -> None:
    rendered = render(HEAD, [], max_bytes=900_000, quiet_since=NOW)
    assert atomcheck.entries(rendered.body) == []
    assert atomcheck.parse(rendered.body).findtext(f"{atomcheck.ATOM}updated") == "2026-06-01T12:00:00+00:00"


def window(now: list[datetime], **options: float) -> FeedWindow:
    return FeedWindow(window_s=options.get("window_s", 3600.0), max_entries=int(options.get("max_entries", 100)),
                      clock=lambda: now[0])


def test_the_window_holds_at_most_its_entries_dropping_the_first_due_out() -> None:
    now = [NOW]
    feed = window(now, max_entries=3)
    for n, hours in enumerate((5, 1, 9, 7, 3)):  # expiring in that many hours
        feed.add(entry(n, expires_at=NOW + timedelta(hours=hours)), [])
    assert sorted(feed.entries) == [f"{n:032x}" for n in (0, 2, 3)] and feed.dropped == 2


def test_an_update_without_area_takes_the_cells_of_what_it_references() -> None:
    now = [NOW]
    feed = window(now)
    feed.add(entry(1, geocodes=(("INSEE-DEP", "06"),)), [])
    feed.add(entry(2, msg_type="Cancel", cells=()), [f"{1:032x}"])
    cancel = feed.entries[f"{2:032x}"]
    assert cancel.cells == ("861f8d8a7ffffff",) and cancel.geocodes == (("INSEE-DEP", "06"),)
    assert feed.entries[f"{1:032x}"].superseded_at == cancel.sent


def test_the_window_file_round_trips_and_a_foreign_or_broken_one_is_ignored(tmp_path: Path) -> None:
    now = [NOW]
    feed = window(now)
    feed.add(entry(1), [])
    feed.add(entry(2, msg_type="Update", references=("a,ID-1,2026-06-01T12:00:01+00:00",)), [f"{1:032x}"])
    path = tmp_path / "feed-window.json"
    feed.save(path, "STREAM")
    again = window(now)
    assert again.load(path, "STREAM") == 2 and again.entries == feed.entries
    assert window(now).load(path, "OTHER") == 0
    path.write_text(json.dumps({"version": 1, "stream": "STREAM", "entries": [{"seq": "x"}], "changed_at": "z"}))
    assert window(now).load(path, "STREAM") == 0
    now[0] = NOW + timedelta(hours=3)  # everything expired more than the window ago
    feed.save(path, "STREAM")
    assert window(now).load(path, "STREAM") == 0


def test_a_rewound_stream_drops_what_was_at_and_after_the_reused_seq() -> None:
    now = [NOW]
    feed = window(now)
    for n in (1, 2, 3):
        feed.add(entry(n), [])
    feed.add(entry(9, seq=2), [])
    assert sorted(e.seq for e in feed.entries.values()) == [1, 2]


def test_a_wide_cover_is_kept_as_coarser_cells_that_still_hold_it() -> None:
    fine = frozenset(h3.grid_disk("861f8d8a7ffffff", 20))  # 1,261 cells at resolution 6
    kept = coarsened(fine, most=100)
    assert len(kept) <= 100
    assert all(any(h3.cell_to_parent(cell, h3.get_resolution(k)) == k for k in kept) for cell in fine)


def test_an_alert_read_back_again_leaves_the_later_entries_alone() -> None:
    now = [NOW]
    feed = window(now)
    for n in (3, 5, 7):
        feed.add(entry(n), [])
    feed.add(entry(3, title="read back after a restart, a little different"), [])
    assert sorted(e.seq for e in feed.entries.values()) == [3, 5, 7]

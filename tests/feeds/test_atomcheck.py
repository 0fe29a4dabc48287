"""The tests' Atom referee (atomcheck.py) against real issuers' feeds (tests/data/cap/feeds):
it passes those that keep RFC 4287, and fails one that does not and feeds broken on purpose,
so that its verdict on tocsin's feeds means something."""

from __future__ import annotations

import pytest

from tests.datafiles import CAP_DATA
from tests.feeds import atomcheck
from tests.feeds.test_atom import HEAD, NOW, entry
from tocsin.feeds.atom import render

FEEDS = CAP_DATA / "feeds"


@pytest.mark.parametrize("name", [
    "us-nws-atom-index-2018.xml", "us-nws-weather-index.atom", "us-nws-weather-index-2014.atom",
    "us-nws-empty-index.atom", "us-usgs-alerthub.atom", "us-usgs-earthquake-index.atom",
    "ca-naad-atom-embedded-eccc-signed.atom",
])
def test_real_issuers_feeds_pass(name: str) -> None:
    atomcheck.entries((FEEDS / name).read_bytes(), cap_links=False)


def test_a_real_feed_whose_entry_has_no_author_fails() -> None:
    with pytest.raises(AssertionError, match="no author"):
        atomcheck.entries((FEEDS / "us-dc-amber-atom-embedded-cap11.atom").read_bytes(), cap_links=False)


def test_the_usgs_feed_links_its_cap_as_tocsin_does() -> None:
    read = atomcheck.entries((FEEDS / "us-usgs-alerthub.atom").read_bytes())
    assert read[0].cap_href.endswith(".cap")


@pytest.mark.parametrize(("old", "new", "message"), [
    (b"<id>urn:uuid:00000000-0000-0000-0000-000000000001</id>", b"<id>alerts</id>", "absolute IRI"),
    (b"<updated>2026-06-01T12:00:01+00:00</updated>", b"<updated>1 June 2026</updated>", "RFC 3339"),
    (b"<title>Alerte 1</title>", b"", "exactly one atom:title"),
    (b'type="application/cap+xml"', b'type="text/html"', "links to a CAP"),
])
def test_a_broken_feed_fails(old: bytes, new: bytes, message: str) -> None:
    body = render(HEAD, [entry(1)], max_bytes=900_000, quiet_since=NOW).body
    atomcheck.entries(body)
    assert old in body
    with pytest.raises(AssertionError, match=message):
        atomcheck.entries(body.replace(old, new, 1))

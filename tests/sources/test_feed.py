"""The feed reader on the shared fixtures, served as their authorities publish them, and on
what a hostile or broken feed sends."""

from __future__ import annotations

import pytest

from tests.datafiles import CAP_DATA
from tocsin.cap.xmltree import local_name, namespace
from tocsin.sources.feed import FeedInvalid, read_feed

FEEDS = CAP_DATA / "feeds"
LIMITS = {"max_bytes": 2 * 2**20, "max_entries": 500}


def read(name: str, feed_url: str, **limits: int) -> list:  # type: ignore[type-arg]
    return read_feed((FEEDS / name).read_bytes(), feed_url=feed_url, **{**LIMITS, **limits})


def test_the_nws_national_index_links_each_cap_on_its_own_host() -> None:
    entries = read("us-nws-atom-index-2018.xml", "https://alerts.weather.gov/cap/us.php?x=0")
    assert len(entries) == 163
    assert all(e.link and e.link.startswith("https://alerts.weather.gov/cap/wwacapget.php?x=") for e in entries)
    assert len({e.key for e in entries}) == 163  # each entry its own key


def test_a_link_to_another_host_is_not_followed() -> None:
    # The same index served from elsewhere (a mirror, or a feed pointing at an internal host).
    entries = read("us-nws-atom-index-2018.xml", "http://127.0.0.1:8000/us.atom")
    assert len(entries) == 163 and all(e.link is None and e.embedded is None for e in entries)


def test_the_naad_feed_embeds_a_signed_cap_1_2_alert() -> None:
    (entry,) = read("ca-naad-atom-embedded-eccc-signed.atom", "http://rss1.naad-adna.pelmorex.com/feed.atom")
    assert entry.embedded is not None and entry.link is None
    assert local_name(entry.embedded) == "alert" and namespace(entry.embedded) == "urn:oasis:names:tc:emergency:cap:1.2"
    assert entry.id.endswith("2.49.0.1.124.8bc841b8.2013")


def test_an_embedded_cap_1_1_alert_is_found_as_it_is() -> None:
    (entry,) = read("us-dc-amber-atom-embedded-cap11.atom", "http://example.org/amber.atom")
    assert entry.embedded is not None and namespace(entry.embedded) == "urn:oasis:names:tc:emergency:cap:1.1"


def test_the_usgs_feed_prefers_its_cap_typed_link_over_the_web_page() -> None:
    (entry,) = read("us-usgs-earthquake-index.atom", "http://earthquake.usgs.gov/earthquakes/catalogs/7day-M5.xml")
    assert entry.link == "http://earthquake.usgs.gov/earthquakes/catalogs/cap/us2010apcd"


def test_the_ny_rss_index_links_its_items() -> None:
    entries = read("us-ny-state-cap-index.rss", "http://www.nyalert.gov/Public/News/index.rss")
    assert [e.id for e in entries] == ["NYAlert-ALLHAZALERT-3167113", "NYAlert-ALLHAZALERT-3162202"]
    assert entries[0].link == "http://www.nyalert.gov/Public/News/GetCapAlert.aspx?capID=NYAlert-ALLHAZALERT-3167113"


def test_an_empty_index_has_no_entries() -> None:
    assert read("us-nws-empty-index.atom", "http://www.weather.gov/alerts.atom") == []


def test_a_feed_with_more_entries_than_the_bound_is_refused_whole() -> None:
    with pytest.raises(FeedInvalid) as refused:
        read("us-nws-atom-index-2018.xml", "https://alerts.weather.gov/cap/us.php", max_entries=100)
    assert refused.value.reason == "too-many-entries"


def test_a_feed_larger_than_the_bound_is_not_parsed() -> None:
    with pytest.raises(FeedInvalid) as refused:
        read("us-nws-atom-index-2018.xml", "https://alerts.weather.gov/cap/us.php", max_bytes=100_000)
    assert refused.value.reason == "too-large"


@pytest.mark.parametrize(("body", "reason"), [
    (b"\x00\x13<html>parked domain", "not-xml"),
    (b"<html><body>Maintenance</body></html>", "not-a-feed"),
    (b'<?xml version="1.0"?><!DOCTYPE feed [<!ENTITY x "y">]><feed xmlns="http://www.w3.org/2005/Atom"/>', "not-xml"),
    ((FEEDS / "au-nsw-rfs-bushfire.edxlde").read_bytes(), "not-a-feed"),
])
def test_what_is_not_a_feed_is_refused_with_its_reason(body: bytes, reason: str) -> None:
    with pytest.raises(FeedInvalid) as refused:
        read_feed(body, feed_url="http://127.0.0.1/feed", **LIMITS)
    assert refused.value.reason == reason

"""The CAP Atom feeds, black-box over HTTP against a real node on a real nats-server.

Each feed is read with lxml and checked against RFC 4287 (atomcheck.py); each CAP it links
is fetched and validated against the OASIS CAP 1.2 XSD; an Update and a Cancel carry their
references; Test and Exercise alerts stay out; ETag and If-None-Match answer 304; an area's
feed shows the alerts that reach into it; an unknown area is a 404 problem.
"""

from __future__ import annotations

import asyncio
import re
from urllib.parse import urljoin

import httpx
from lxml import etree

from tests.cap.capdata import official_schema
from tests.feeds import atomcheck
from tests.feeds.conftest import NICE_BOX, issue
from tests.waiting import until, until_async
from tocsin.api.feeds import BUILDS_WAITING
from tocsin.app import Node

FEED = "/feeds/alerts.atom"


async def feed_with(http: httpx.AsyncClient, path: str, *identifiers: str) -> httpx.Response:
    """The feed once it shows every identifier (the follower takes an alert after its 201)."""
    got: list[httpx.Response] = []

    async def shows_all() -> bool:
        got[:] = [await http.get(path)]
        shown = {e.cap.get("identifier") for e in atomcheck.entries(got[0].content)}
        return got[0].status_code == 200 and set(identifiers) <= shown

    await until_async(shows_all, timeout_s=10)
    return got[0]


def by_identifier(body: bytes) -> dict[str, atomcheck.Entry]:
    return {e.cap["identifier"]: e for e in atomcheck.entries(body)}


async def test_feed_is_atom_with_update_and_cancel_references_and_no_tests(http: httpx.AsyncClient) -> None:
    first = await issue(http, "FEED-1")
    update = await issue(http, "FEED-1-U", msg_type="Update", references=[first])
    cancel = await issue(http, "FEED-1-C", msg_type="Cancel", references=[update])
    await issue(http, "FEED-EXERCISE", status="Exercise")
    await issue(http, "FEED-TEST", status="Test")
    response = await feed_with(http, FEED, "FEED-1", "FEED-1-U", "FEED-1-C")
    assert response.headers["content-type"] == "application/atom+xml; charset=utf-8"
    entries = by_identifier(response.content)
    assert set(entries) == {"FEED-1", "FEED-1-U", "FEED-1-C"}  # no Exercise, no Test, no probe
    assert entries["FEED-1-U"].cap["references"] == first.reference
    assert entries["FEED-1-C"].cap["references"] == update.reference
    assert "references" not in entries["FEED-1"].cap
    for identifier, entry in entries.items():
        assert entry.cap["sender"] == "prefecture-75@interieur.gouv.fr"
        assert entry.cap["status"] == "Actual" and entry.cap["scope"] == "Public"
        assert atomcheck.RFC3339.match(entry.cap["sent"]) and atomcheck.RFC3339.match(entry.cap["expires"])
        assert entry.cap["msgType"] == {"FEED-1": "Alert", "FEED-1-U": "Update", "FEED-1-C": "Cancel"}[identifier]
    assert entries["FEED-1-C"].cap_href.endswith(f"/api/v1/alerts/{cancel.alert_id}.xml")
    # Newest first; and nothing was left out, so the feed says it is complete (RFC 5005).
    assert [e.cap["identifier"] for e in atomcheck.entries(response.content)][-1] == "FEED-1"
    assert atomcheck.feed_child(response.content, "{http://purl.org/syndication/history/1.0}complete") is not None


async def test_every_linked_cap_validates_against_the_oasis_schema(http: httpx.AsyncClient) -> None:
    schema = official_schema()  # skips, saying why, without the XSD
    first = await issue(http, "FEED-XSD-1")
    update = await issue(http, "FEED-XSD-U", msg_type="Update", references=[first])
    await issue(http, "FEED-XSD-C", msg_type="Cancel", references=[update])
    response = await feed_with(http, FEED, "FEED-XSD-1", "FEED-XSD-U", "FEED-XSD-C")
    entries = atomcheck.entries(response.content)
    assert len(entries) == 3
    for entry in entries:
        cap = await http.get(urljoin(str(response.url), entry.cap_href))
        assert cap.status_code == 200 and cap.headers["content-type"] == "application/cap+xml"
        document = atomcheck.parse(cap.content)
        assert schema.validate(etree.ElementTree(document)), (entry.cap["identifier"], schema.error_log)
        assert document.findtext("{urn:oasis:names:tc:emergency:cap:1.2}identifier") == entry.cap["identifier"]


async def test_etag_and_if_none_match(http: httpx.AsyncClient) -> None:
    await issue(http, "FEED-ETAG-1")
    first = await feed_with(http, FEED, "FEED-ETAG-1")
    etag = first.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    assert first.headers["cache-control"].startswith("public, max-age=")
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = await http.get(FEED, headers={"If-None-Match": header})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag, header
    assert (await http.get(FEED, headers={"If-None-Match": '"other"'})).status_code == 200
    await issue(http, "FEED-ETAG-2")
    changed = await feed_with(http, FEED, "FEED-ETAG-2")
    assert changed.headers["etag"] != etag
    assert (await http.get(FEED, headers={"If-None-Match": etag})).status_code == 200


async def test_a_flood_of_reads_renders_the_feed_once(http: httpx.AsyncClient) -> None:
    await issue(http, "FEED-FLOOD")
    first = await feed_with(http, FEED, "FEED-FLOOD")
    builds = await _builds(http)
    for n in range(100):
        response = await http.get(f"{FEED}?nocache={n}")
        assert response.status_code == 200 and response.content == first.content
    assert await _builds(http) == builds


async def _builds(http: httpx.AsyncClient) -> float:
    text = (await http.get("/metrics")).text
    match = re.search(r'^tocsin_feed_builds_total\{feed="all"\} (\S+)$', text, re.MULTILINE)
    assert match, "no tocsin_feed_builds_total for the whole feed"
    return float(match.group(1))


async def test_an_area_feed_shows_the_alerts_that_reach_into_it(http: httpx.AsyncClient) -> None:
    nice = await issue(http, "FEED-NICE", polygon=NICE_BOX)
    await issue(http, "FEED-PARIS")
    # A Cancel without an area goes where what it cancels went: into 06's feed too.
    await issue(http, "FEED-NICE-C", msg_type="Cancel", references=[nice], drawn=False)
    await feed_with(http, FEED, "FEED-NICE", "FEED-PARIS", "FEED-NICE-C")
    for path, expected in (
        ("/feeds/areas/INSEE-DEP/06.atom", {"FEED-NICE", "FEED-NICE-C"}),
        ("/feeds/areas/INSEE-REG/93.atom", {"FEED-NICE", "FEED-NICE-C"}),
        ("/feeds/areas/INSEE-DEP/75.atom", {"FEED-PARIS"}),
        ("/feeds/areas/INSEE-DEP/29.atom", set()),
    ):
        response = await http.get(path)
        assert response.status_code == 200, response.text
        assert set(by_identifier(response.content)) == expected, path
        assert response.headers["etag"] != (await http.get(FEED)).headers["etag"]
        assert (await http.get(path, headers={"If-None-Match": response.headers["etag"]})).status_code == 304


async def test_an_unknown_area_is_a_404_problem(http: httpx.AsyncClient) -> None:
    for path in ("/feeds/areas/INSEE-DEP/00.atom", "/feeds/areas/NOPE/06.atom",
                 "/feeds/areas/INSEE-DEP/%3Cx%3E.atom", f"/feeds/areas/INSEE-DEP/{'9' * 300}.atom"):
        response = await http.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "area.not-found"
    assert (await http.get("/feeds/alerts.rss")).status_code == 404


async def test_feeds_are_readable_from_any_origin(node: Node, http: httpx.AsyncClient) -> None:
    response = await http.get(FEED, headers={"Origin": "https://example.org"})
    assert response.headers["access-control-allow-origin"] == "*"


async def test_head_answers_the_headers_without_the_body(http: httpx.AsyncClient) -> None:
    await issue(http, "FEED-HEAD")
    full = await feed_with(http, FEED, "FEED-HEAD")
    head = await http.head(FEED)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["etag"] == full.headers["etag"]


async def test_area_feeds_waiting_to_be_built_are_bounded(node: Node, http: httpx.AsyncClient) -> None:
    feeds = node.services.feeds
    assert feeds is not None
    codes = [f"{n:02}" for n in range(1, 20)]  # 19 départements, none of them 29
    async with feeds._building:  # a build in progress: the requests for the others wait
        waiting = [asyncio.create_task(http.get(f"/feeds/areas/INSEE-DEP/{code}.atom")) for code in codes]
        await until(lambda: feeds._waiting >= BUILDS_WAITING, timeout_s=10)
        refused = await http.get("/feeds/areas/INSEE-DEP/29.atom")
        assert refused.status_code == 503 and refused.json()["code"] == "feed.busy"
        assert refused.headers["retry-after"] == "5"
    answers = await asyncio.gather(*waiting)
    assert sum(a.status_code == 200 for a in answers) == BUILDS_WAITING
    assert {a.json()["code"] for a in answers if a.status_code != 200} <= {"feed.busy"}
    assert (await http.get("/feeds/areas/INSEE-DEP/29.atom")).status_code == 200

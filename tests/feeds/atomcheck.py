"""An independent reading of an Atom feed: RFC 4287's rules checked on an lxml tree.

Written from the RFC, not from tocsin's renderer, so that a feed the renderer gets wrong
fails here: the elements each feed and entry must have exactly once, absolute ids, RFC 3339
dates, an author for every entry, and what a CAP index entry must carry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from lxml import etree

ATOM = "{http://www.w3.org/2005/Atom}"
CAP = "{urn:oasis:names:tc:emergency:cap:1.2}"
# RFC 3339 §5.6 date-time.
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})\Z")


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    id: str
    title: str
    cap_href: str
    cap: dict[str, str]


def parse(body: bytes) -> etree._Element:
    """The feed's root, read by a parser that loads nothing from outside."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    return etree.fromstring(body, parser)


def _one(parent: etree._Element, name: str, where: str) -> etree._Element:
    found = parent.findall(f"{ATOM}{name}")
    assert len(found) == 1, f"{where} must have exactly one atom:{name}, has {len(found)}"
    return found[0]


def _iri(text: str | None, where: str) -> str:
    assert text and urlsplit(text).scheme, f"{where}: atom:id must be an absolute IRI, got {text!r}"
    return text


def _date(element: etree._Element, where: str) -> datetime:
    text = (element.text or "").strip()
    assert RFC3339.match(text), f"{where}: {text!r} is not an RFC 3339 date-time"
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def entries(body: bytes, *, cap_links: bool = True) -> list[Entry]:
    """The feed's entries, after checking the feed and each entry against RFC 4287 §4.1 and,
    with `cap_links`, that each links exactly one CAP (`type="application/cap+xml"`)."""
    feed = parse(body)
    assert feed.tag == f"{ATOM}feed", f"the root is {feed.tag}, not atom:feed"
    _iri(_one(feed, "id", "feed").text, "feed")
    _one(feed, "title", "feed")
    _date(_one(feed, "updated", "feed"), "feed updated")
    assert len(feed.findall(f"{ATOM}generator")) <= 1
    feed_author = bool(feed.findall(f"{ATOM}author"))
    found = []
    ids = set()
    for n, entry in enumerate(feed.findall(f"{ATOM}entry")):
        where = f"entry {n}"
        entry_id = _iri(_one(entry, "id", where).text, where)
        assert entry_id not in ids, f"{where}: id {entry_id} repeated"
        ids.add(entry_id)
        title = _one(entry, "title", where).text or ""
        _date(_one(entry, "updated", where), f"{where} updated")
        for optional in ("published", "summary"):
            assert len(entry.findall(f"{ATOM}{optional}")) <= 1, f"{where}: more than one atom:{optional}"
        assert feed_author or entry.findall(f"{ATOM}author"), f"{where}: no author, and the feed has none"
        for author in entry.findall(f"{ATOM}author"):
            _one(author, "name", f"{where} author")
        links = entry.findall(f"{ATOM}link")
        assert all(link.get("href") for link in links), f"{where}: a link without href"
        alternates = [(link.get("type"), link.get("hreflang")) for link in links if link.get("rel", "alternate") == "alternate"]
        assert len(alternates) == len(set(alternates)), f"{where}: two alternate links of one type"
        assert alternates or entry.find(f"{ATOM}content") is not None, f"{where}: neither content nor alternate link"
        caps = [link.get("href") for link in links if link.get("type") == "application/cap+xml"]
        assert len(caps) == 1 or not cap_links, f"{where}: {len(caps)} links to a CAP"
        cap = {child.tag.removeprefix(CAP): child.text or "" for child in entry if str(child.tag).startswith(CAP)}
        found.append(Entry(id=entry_id, title=title, cap_href=str(caps[0]) if caps else "", cap=cap))
    return found


def feed_child(body: bytes, tag: str) -> etree._Element | None:
    """The feed-level element with this Clark name, if any."""
    return parse(body).find(tag)

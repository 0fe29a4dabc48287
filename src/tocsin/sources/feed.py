"""An Atom or RSS feed of CAP alerts -> its entries: each a CAP it embeds or a link to one.

A feed is outside input: it is read by the hardened XML reader (no DTD, no entities, no
network, its size bounded before parsing), and a feed with more entries than the bound is
refused whole. Atom (RFC 4287): each `<entry>` embeds an `<alert>` in `<content>` (Canada's
NAAD) or links its CAP (`<link type="application/cap+xml">`, else its alternate link, as
the US NWS index does). RSS 2.0: each `<item>` links its CAP (`<link>`, or an enclosure of
type application/cap+xml). A linked CAP must be on the feed's own host over http(s): a
feed cannot make the node fetch from elsewhere (its own network, for one).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from tocsin.cap.xmltree import CAP_NS, Element, local_name, namespace, read_xml
from tocsin.errors import CapInvalid

ATOM_NS = "http://www.w3.org/2005/Atom"
CAP_TYPE = "application/cap+xml"


class FeedInvalid(ValueError):
    """A feed that cannot be read; `reason` is a stable word for the source's status."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One entry: its key (id and updated, digested: a changed entry is a new one), and the
    CAP it embeds (the `<alert>` element) or the URL it links."""

    key: str
    id: str
    embedded: Element | None = None
    link: str | None = None


def _key(entry_id: str, updated: str) -> str:
    return hashlib.sha256(f"{entry_id}\n{updated}".encode()).hexdigest()[:16]


def _text(parent: Element, name: str, ns: str | None) -> str:
    child = parent.find(f"{{{ns}}}{name}" if ns else name)
    return (child.text or "").strip() if child is not None else ""


def _same_host(link: str, feed_url: str) -> str | None:
    """The link made absolute, when it is http(s) on the feed's host; None otherwise."""
    absolute = urljoin(feed_url, link.strip())
    parts, feed = urlsplit(absolute), urlsplit(feed_url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.hostname != feed.hostname:
        return None
    return absolute.split("#", 1)[0]


def _atom_entry(entry: Element, feed_url: str) -> Entry:
    entry_id = _text(entry, "id", ATOM_NS)
    key = _key(entry_id, _text(entry, "updated", ATOM_NS))
    content = entry.find(f"{{{ATOM_NS}}}content")
    if content is not None:
        for child in content:
            if isinstance(child.tag, str) and local_name(child) == "alert":
                return Entry(key=key, id=entry_id, embedded=child)
    links = entry.findall(f"{{{ATOM_NS}}}link")
    typed = [x for x in links if (x.get("type") or "").split(";")[0].strip() == CAP_TYPE]
    alternate = [x for x in links if x.get("rel", "alternate") == "alternate"]
    for link in typed or alternate:
        href = _same_host(link.get("href") or "", feed_url)
        if href:
            return Entry(key=key, id=entry_id, link=href)
    return Entry(key=key, id=entry_id)


def _rss_item(item: Element, feed_url: str) -> Entry:
    entry_id = _text(item, "guid", None) or _text(item, "link", None)
    key = _key(entry_id, _text(item, "pubDate", None))
    enclosures = [e.get("url") or "" for e in item.findall("enclosure")
                  if (e.get("type") or "").split(";")[0].strip() == CAP_TYPE]
    for candidate in [*enclosures, _text(item, "link", None)]:
        href = _same_host(candidate, feed_url) if candidate else None
        if href:
            return Entry(key=key, id=entry_id, link=href)
    return Entry(key=key, id=entry_id)


def read_feed(data: bytes, *, feed_url: str, max_bytes: int, max_entries: int) -> list[Entry]:
    """The feed's entries in its order (Atom or RSS 2.0).

    Raises:
        FeedInvalid: too large, not XML (or a DOCTYPE), not a feed, or too many entries.
    """
    try:
        root = read_xml(data, max_bytes=max_bytes, path="feed")
    except CapInvalid as exc:
        first = exc.violations[0]
        reason = "too-large" if first.problem.status == 413 else "not-xml"
        raise FeedInvalid(reason, first.detail[:200]) from None
    read: Callable[[Element, str], Entry]
    if namespace(root) == ATOM_NS and local_name(root) == "feed":
        items, read = root.findall(f"{{{ATOM_NS}}}entry"), _atom_entry
    elif root.tag == "rss" and root.find("channel") is not None:
        items, read = root.findall("channel/item"), _rss_item
    elif namespace(root) == CAP_NS and local_name(root) == "alert":
        raise FeedInvalid("not-a-feed", "a CAP alert, not an Atom or RSS feed of them")
    else:
        raise FeedInvalid("not-a-feed", f"the root element is {local_name(root)[:60]!r}, not an Atom feed or RSS")
    if len(items) > max_entries:
        raise FeedInvalid("too-many-entries", f"{len(items)} entries; the limit is {max_entries}")
    return [read(item, feed_url) for item in items]

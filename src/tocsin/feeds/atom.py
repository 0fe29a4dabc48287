"""Feed entries -> one Atom document (RFC 4287) of CAP alerts, under a byte bound.

Each entry links its alert's CAP (`rel="alternate"`, `type="application/cap+xml"`, the signed
bytes of `GET /api/v1/alerts/{id}.xml`) and carries the CAP fields an index reader needs
without fetching it, in the CAP 1.2 namespace (as CAP index feeds do): identifier, sender,
sent, status, msgType, scope, references (Update and Cancel), expires, and the first info's
event, urgency, severity, certainty and areaDesc. Ids are `urn:uuid:` forms of the alert id
(a digest of sender and identifier), so the same alert has the same entry id on every node.

Bound: aggregators refuse feeds of a megabyte or so; past `max_bytes` the oldest entries are
left out and the feed says how many (`tocsin:omitted`). A feed that left nothing out says so
too (`fh:complete`, RFC 5005): an entry absent from it has left the window.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from lxml import etree

from tocsin.cap.compose import cap_time
from tocsin.feeds.window import FeedEntry

ATOM = "http://www.w3.org/2005/Atom"
CAP = "urn:oasis:names:tc:emergency:cap:1.2"
HISTORY = "http://purl.org/syndication/history/1.0"  # RFC 5005
TOCSIN = "urn:x-tocsin:feed:1"
NSMAP = {None: ATOM, "cap": CAP, "fh": HISTORY, "tocsin": TOCSIN}
MEDIA_TYPE = "application/atom+xml; charset=utf-8"


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedHead:
    """What a feed says of itself."""

    feed_id: str  # an absolute IRI, the same for this feed on every node
    title: str
    self_href: str
    base_url: str  # "" : links are relative to the feed's own URL


@dataclass(frozen=True, slots=True, kw_only=True)
class Rendered:
    """A feed's bytes and its strong ETag."""

    body: bytes
    etag: str
    entries: int
    omitted: int


def feed_uuid(text: str) -> str:
    """A stable `urn:uuid:` for a text (an alert id, or a feed's name)."""
    return uuid.UUID(hashlib.sha256(text.encode()).hexdigest()[:32]).urn


def entry_id(alert_id: str) -> str:
    return uuid.UUID(alert_id).urn if len(alert_id) == 32 else feed_uuid(alert_id)


def cap_href(base_url: str, alert_id: str) -> str:
    return f"{base_url}/api/v1/alerts/{alert_id}.xml"


def render(head: FeedHead, entries: Sequence[FeedEntry], *, max_bytes: int, quiet_since: datetime) -> Rendered:
    """The feed of `entries` (newest first), the oldest left out until it fits `max_bytes`.

    `quiet_since`: the feed's <updated> when no entry is shown (the window's last change).
    """
    holder = etree.Element(f"{{{ATOM}}}feed", nsmap=NSMAP)
    elements = [_entry(holder, head, e) for e in entries]
    sizes = [len(etree.tostring(e, encoding="utf-8")) for e in elements]
    kept = len(elements)
    while True:
        body = _document(head, entries[:kept], elements[:kept], omitted=len(elements) - kept, quiet_since=quiet_since)
        if len(body) <= max_bytes or kept == 0:
            break
        over, dropped = len(body) - max_bytes, 0
        while kept > 0 and dropped < over:
            kept -= 1
            dropped += sizes[kept]
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return Rendered(body=body, etag=etag, entries=kept, omitted=len(elements) - kept)


def _document(head: FeedHead, entries: Sequence[FeedEntry], elements: list[etree._Element], *,
              omitted: int, quiet_since: datetime) -> bytes:
    feed = etree.Element(f"{{{ATOM}}}feed", nsmap=NSMAP)
    _text(feed, ATOM, "id", head.feed_id)
    _text(feed, ATOM, "title", head.title)
    updated = max((e.sent for e in entries), default=quiet_since)
    _text(feed, ATOM, "updated", cap_time(updated))
    author = etree.SubElement(feed, f"{{{ATOM}}}author")
    _text(author, ATOM, "name", head.title)
    etree.SubElement(feed, f"{{{ATOM}}}link", rel="self", type="application/atom+xml", href=head.self_href)
    _text(feed, ATOM, "generator", "tocsin")
    if omitted:
        _text(feed, TOCSIN, "omitted", str(omitted))
    else:
        etree.SubElement(feed, f"{{{HISTORY}}}complete")
    feed.extend(elements)
    return bytes(etree.tostring(feed, xml_declaration=True, encoding="UTF-8"))


def _entry(holder: etree._Element, head: FeedHead, e: FeedEntry) -> etree._Element:
    entry = etree.SubElement(holder, f"{{{ATOM}}}entry")
    _text(entry, ATOM, "id", entry_id(e.alert_id))
    _text(entry, ATOM, "title", e.title)
    _text(entry, ATOM, "updated", cap_time(e.sent))
    _text(entry, ATOM, "published", cap_time(e.sent))
    author = etree.SubElement(entry, f"{{{ATOM}}}author")
    _text(author, ATOM, "name", e.author or e.sender)
    etree.SubElement(entry, f"{{{ATOM}}}link", rel="alternate", type="application/cap+xml",
                     href=cap_href(head.base_url, e.alert_id))
    if e.summary:
        _text(entry, ATOM, "summary", e.summary)
    for name, value in (("identifier", e.identifier), ("sender", e.sender), ("sent", cap_time(e.sent)),
                        ("status", "Actual"), ("msgType", e.msg_type), ("scope", "Public")):
        _text(entry, CAP, name, value)
    if e.references:
        _text(entry, CAP, "references", " ".join(e.references))
    for name, value in (("event", e.event), ("urgency", e.urgency), ("severity", e.severity),
                        ("certainty", e.certainty), ("expires", cap_time(e.expires_at)), ("areaDesc", e.area_desc)):
        if value:
            _text(entry, CAP, name, value)
    return entry


def _text(parent: etree._Element, ns: str, name: str, value: str) -> None:
    etree.SubElement(parent, f"{{{ns}}}{name}").text = _xml_safe(value)


def _xml_safe(text: str) -> str:
    """`text` without the characters XML 1.0 cannot hold (CAP text was checked; a name or
    description from elsewhere may not have been)."""
    return "".join(c for c in text if c in "\t\n\r" or " " <= c <= "\ud7ff" or "\ue000" <= c <= "\ufffd" or c > "\uffff")

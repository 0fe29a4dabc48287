"""A CAP feed publisher on loopback for the source tests: real HTTP (hypercorn), feeds and
CAP documents at paths, each path told how to behave as a real server might: answer, 304
on a matching ETag or Last-Modified, 500, 404, garbage, hang, or a body too large.

It counts every request by path and keeps the conditional headers it was sent, so a test
can tell what the poller asked for and how often.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from xml.sax.saxutils import escape

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tests.fakes.h2 import h2_server

ATOM = "application/atom+xml"
CAP = "application/cap+xml"
LAST_MODIFIED = "Wed, 02 Dec 2026 01:00:00 GMT"
# An entry keeps its updated time while the feed around it changes (as a real feed's do).
ENTRY_UPDATED = "2026-12-02T01:00:00+00:00"


@dataclass
class Publisher:
    """What each path serves (bytes and media type) or how it fails (`modes`)."""

    docs: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    modes: dict[str, str] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    conditional: list[tuple[str, str, str]] = field(default_factory=list)
    url: str = ""
    released: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, scope: dict[str, object], receive: object, send: object) -> None:
        request = Request(scope, receive)  # type: ignore[arg-type]
        response = await self.answer(request)
        await response(scope, receive, send)  # type: ignore[arg-type]

    async def answer(self, request: Request) -> Response:
        path = request.url.path
        self.hits[path] += 1
        mode = self.modes.get(path, "ok")
        if mode == "hang":
            await self.released.wait()  # never answers while the test runs
        if mode == "500":
            return Response("internal error", status_code=500)
        if mode == "garbage":
            return Response(b"\x00\x13<html><body>Service temporarily replaced by a parked domain", media_type="text/html")
        if mode == "huge":
            async def endless() -> AsyncIterator[bytes]:
                chunk = b"<!-- padding -->" * 4096
                for _ in range(10_000):
                    yield chunk
            return StreamingResponse(endless(), media_type=ATOM)
        if path not in self.docs:
            return Response("not found", status_code=404)
        body, media_type = self.docs[path]
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        sent_etag, sent_since = request.headers.get("if-none-match", ""), request.headers.get("if-modified-since", "")
        self.conditional.append((path, sent_etag, sent_since))
        if sent_etag == etag or (not sent_etag and sent_since == LAST_MODIFIED):
            return Response(status_code=304, headers={"ETag": etag})
        return Response(body, media_type=media_type, headers={"ETag": etag, "Last-Modified": LAST_MODIFIED})

    def release(self) -> None:
        self.released.set()


@asynccontextmanager
async def publisher() -> AsyncIterator[Publisher]:
    found = Publisher()
    async with h2_server(found, tls=False) as url:
        found.url = url
        try:
            yield found
        finally:
            found.release()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def linked_atom(entries: list[tuple[str, str]], *, title: str = "Test authority alerts") -> bytes:
    """An Atom index in the US NWS fixture's shape: each entry (id, CAP path) links its CAP."""
    items = "".join(
        f"<entry><id>{escape(entry_id)}</id><updated>{ENTRY_UPDATED}</updated><title>{escape(entry_id)}</title>"
        f"<link href='{escape(path)}'/><summary>see the CAP</summary></entry>\n"
        for entry_id, path in entries)
    return (f"<?xml version='1.0' encoding='UTF-8'?>\n<feed xmlns='http://www.w3.org/2005/Atom'>"
            f"<id>urn:test:feed</id><title>{escape(title)}</title><updated>{_now()}</updated>\n{items}</feed>").encode()


def embedded_atom(entries: list[tuple[str, bytes]]) -> bytes:
    """An Atom feed in the NAAD fixture's shape: each entry (id, CAP bytes) embeds its CAP."""
    parts = []
    for entry_id, cap in entries:
        body = cap.decode().split("?>", 1)[1] if cap.startswith(b"<?xml") else cap.decode()
        parts.append(f"<entry><id>{escape(entry_id)}</id><updated>{ENTRY_UPDATED}</updated><title>{escape(entry_id)}</title>"
                     f"<content type='text/xml'>{body}</content></entry>\n")
    return (f"<?xml version='1.0' encoding='UTF-8'?>\n<feed xmlns='http://www.w3.org/2005/Atom'>"
            f"<id>urn:test:embedded</id><title>Embedded</title><updated>{_now()}</updated>\n{''.join(parts)}</feed>").encode()


def rss(items: list[tuple[str, str]]) -> bytes:
    """An RSS 2.0 index in the NY State fixture's shape: each item (guid, CAP path)."""
    body = "".join(f"<item><title>{escape(guid)}</title><link>{escape(path)}</link><guid>{escape(guid)}</guid>"
                   f"<pubDate>Wed, 02 Dec 2026 01:00:00 GMT</pubDate></item>" for guid, path in items)
    return (f"<?xml version='1.0' encoding='utf-8'?>\n<rss version='2.0'><channel><title>Index</title>"
            f"<link>http://127.0.0.1/</link><description>x</description>{body}</channel></rss>").encode()

"""The public CAP Atom feeds over HTTP (docs/feeds.md): `/feeds/alerts.atom`, and one feed
per named area, `/feeds/areas/{scheme}/{code}.atom`.

What one anonymous client can make a node do: a feed is rendered once per change of the
feed window (an alert in, an entry out) and kept with its ETag, so every other request is
a dict read and a bytes answer (or `304` when `If-None-Match` names the ETag). The query
string is ignored: it cannot make a new version. An area's feed needs the area's cover once
(computed in a thread, kept per area); builds run one at a time, and past `BUILDS_WAITING`
waiting the answer is `503 feed.busy` with `Retry-After`. The kept feeds are bounded in
bytes, least recently used first out. An unknown scheme or code is `404 area.not-found`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter
from starlette.requests import Request
from starlette.responses import Response

from tocsin.api.admin import path_param
from tocsin.api.services import Services
from tocsin.errors import FEED_BUSY, NAMED_AREA_NOT_FOUND, NOT_FOUND, Rejected
from tocsin.feeds.areas import AreaCover, area_cover, in_area
from tocsin.feeds.atom import MEDIA_TYPE, FeedHead, Rendered, feed_uuid, render
from tocsin.feeds.window import FeedEntry, FeedWindow
from tocsin.geo.gazetteer import CODE_TEXT, SCHEME_TEXT, Gazetteer, NamedArea

log = logging.getLogger(__name__)

ALL_PATH = "/feeds/alerts.atom"
# Area feeds waiting for a build at most; past it, 503 feed.busy.
BUILDS_WAITING = 16
BUSY_RETRY_S = 5
# Rendered feeds kept, in bytes (an area feed is at most max_bytes), and area covers, in cells.
KEPT_FEEDS_BYTES = 32 * 1024 * 1024
KEPT_COVER_CELLS = 2_000_000


def area_path(scheme: str, code: str) -> str:
    return f"/feeds/areas/{scheme}/{code}.atom"


@dataclass(slots=True, kw_only=True)
class FeedMetrics:
    builds: Counter
    omitted: Counter
    not_modified: Counter

    @classmethod
    def on(cls, registry: CollectorRegistry) -> FeedMetrics:
        return cls(
            builds=Counter("tocsin_feed_builds_total", "Atom feeds rendered (once per change of the window).",
                           ["feed"], registry=registry),
            omitted=Counter("tocsin_feed_entries_omitted_total", "Entries left out of a rendered feed to keep "
                            "it under TOCSIN_FEED_MAX_BYTES (oldest first).", ["feed"], registry=registry),
            not_modified=Counter("tocsin_feed_not_modified_total", "Feed requests answered 304 (If-None-Match).",
                                 registry=registry),
        )


@dataclass(slots=True, kw_only=True)
class Feeds:
    """The node's feeds: the window, how they are named, and what was rendered."""

    window: FeedWindow
    gazetteer: Gazetteer
    title: str
    public_url: str  # "": links relative to the feed's URL
    identity: str  # what makes this deployment's feed ids its own (public URL, else stream)
    max_bytes: int
    max_age_s: int
    metrics: FeedMetrics | None = None
    # Where the window is recorded across restarts, and for which stream (feeds/window.py).
    file: Path | None = None
    stream: str = ""
    # path -> (generation, area shown, rendered)
    _kept: OrderedDict[str, tuple[int, NamedArea | None, Rendered]] = field(default_factory=OrderedDict)
    _covers: OrderedDict[tuple[str, str], AreaCover] = field(default_factory=OrderedDict)
    _building: asyncio.Lock = field(default_factory=asyncio.Lock)
    _waiting: int = 0

    async def run(self) -> None:
        """Record the window as it changes, forever (app.py runs it beside the follower)."""
        if self.file is not None:
            await self.window.run(self.file, self.stream)

    def stop(self) -> None:
        """A clean stop: record the window once more."""
        if self.file is not None:
            try:
                self.window.save(self.file, self.stream)
            except OSError as exc:
                log.warning("feed window not recorded", extra={"path": str(self.file), "error": repr(exc)})

    def kept(self, path: str, area: NamedArea | None) -> Rendered | None:
        """The rendered feed at `path` if it is still current."""
        self.window.prune()
        found = self._kept.get(path)
        if found is None or found[0] != self.window.generation or found[1] is not area:
            return None
        self._kept.move_to_end(path)
        return found[2]

    def all_alerts(self) -> Rendered:
        """`/feeds/alerts.atom`: every entry of the window."""
        kept = self.kept(ALL_PATH, None)
        if kept is not None:
            return kept
        return self._keep(ALL_PATH, None, self._render(ALL_PATH, f"{self.title}", self.window.shown(), "all"))

    async def of_area(self, area: NamedArea) -> Rendered:
        """An area's feed: the entries that name it or reach into it."""
        path = area_path(area.scheme, area.code)
        kept = self.kept(path, area)
        if kept is not None:
            return kept
        if self._waiting >= BUILDS_WAITING:
            raise Rejected(FEED_BUSY, f"{self._waiting} area feeds are being built", headers={"Retry-After": str(BUSY_RETRY_S)})
        self._waiting += 1
        try:
            async with self._building:
                kept = self.kept(path, area)
                if kept is not None:
                    return kept
                cover = await self._cover(area)
                shown = [e for e in self.window.shown() if in_area(e, cover)]
                title = f"{self.title}: {area.name} ({area.scheme} {area.code})"
                return self._keep(path, area, self._render(path, title, shown, "area"))
        finally:
            self._waiting -= 1

    async def _cover(self, area: NamedArea) -> AreaCover:
        key = (area.scheme, area.code)
        found = self._covers.get(key)
        if found is not None and found.area is area:
            self._covers.move_to_end(key)
            return found
        cover = await asyncio.to_thread(area_cover, area)
        self._covers[key] = cover
        while sum(c.size for c in self._covers.values()) > KEPT_COVER_CELLS and len(self._covers) > 1:
            self._covers.popitem(last=False)
        return cover

    def _render(self, path: str, title: str, shown: list[FeedEntry], label: str) -> Rendered:
        head = FeedHead(feed_id=feed_uuid(f"{self.identity}\n{path}"), title=title,
                        self_href=f"{self.public_url}{path}", base_url=self.public_url)
        rendered = render(head, shown, max_bytes=self.max_bytes, quiet_since=self.window.changed_at)
        if self.metrics is not None:
            self.metrics.builds.labels(label).inc()
            if rendered.omitted:
                self.metrics.omitted.labels(label).inc(rendered.omitted)
        if rendered.omitted:
            log.warning("feed over its byte bound; oldest entries left out",
                        extra={"feed": path, "omitted": rendered.omitted, "entries": rendered.entries})
        return rendered

    def _keep(self, path: str, area: NamedArea | None, rendered: Rendered) -> Rendered:
        self._kept[path] = (self.window.generation, area, rendered)
        self._kept.move_to_end(path)
        while sum(len(r.body) for _, _, r in self._kept.values()) > KEPT_FEEDS_BYTES and len(self._kept) > 1:
            self._kept.popitem(last=False)
        return rendered


def open_feeds(services: Services) -> Feeds:
    """The node's feeds: the window read back from the data directory, told of every alert
    the follower registers from now on (call before the follower runs)."""
    s = services.settings
    window = FeedWindow(window_s=s.feed_window_s, max_entries=s.feed_max_entries, clock=services.clock)
    file = s.data_dir / f"feed-window{s.worker_suffix}.json"
    loaded = window.load(file, s.stream)
    if loaded:
        log.info("feed window read back", extra={"entries": loaded})
    services.pipeline.index.observers.append(window.observe)
    return Feeds(window=window, gazetteer=services.accept.gazetteer, title=s.feed_title,
                 public_url=s.public_url.rstrip("/"), identity=s.public_url or s.stream,
                 max_bytes=s.feed_max_bytes, max_age_s=s.feed_max_age_s,
                 metrics=FeedMetrics.on(services.metrics.registry), file=file, stream=s.stream)


def _feeds(request: Request) -> Feeds:
    services: Services = request.app.state.services
    if services.feeds is None:  # an app built without a follower (ASGI-only tests)
        raise Rejected(NOT_FOUND, "this node serves no feeds")
    return services.feeds


def _answer(request: Request, feeds: Feeds, rendered: Rendered) -> Response:
    headers = {"ETag": rendered.etag, "Cache-Control": f"public, max-age={feeds.max_age_s}"}
    if _matches(request.headers.get("if-none-match", ""), rendered.etag):
        if feeds.metrics is not None:
            feeds.metrics.not_modified.inc()
        return Response(status_code=304, headers=headers)
    return Response(rendered.body, media_type=MEDIA_TYPE, headers=headers)


def _matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 §13.1.2: `*`, or any listed tag equal to ours by the weak comparison."""
    if not if_none_match:
        return False
    tags = [t.strip() for t in if_none_match[:4096].split(",")]
    return any(t == "*" or t.removeprefix("W/") == etag for t in tags)


async def alerts_feed(request: Request) -> Response:
    """GET /feeds/alerts.atom: the public Actual alerts of the window."""
    feeds = _feeds(request)
    return _answer(request, feeds, feeds.all_alerts())


async def area_feed(request: Request) -> Response:
    """GET /feeds/areas/{scheme}/{code}.atom: the same, for one named area."""
    feeds = _feeds(request)
    scheme, code = path_param(request, "scheme"), path_param(request, "code")
    area = feeds.gazetteer.lookup(scheme, code) if SCHEME_TEXT.fullmatch(scheme) and CODE_TEXT.fullmatch(code) else None
    if area is None:
        raise Rejected(NAMED_AREA_NOT_FOUND, f"no area {scheme!r:.80} {code!r:.80} (GET /api/v1/areas lists them)")
    return _answer(request, feeds, await feeds.of_area(area))

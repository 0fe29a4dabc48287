"""The feed window: the public Actual alerts a CAP Atom feed shows, fed by the follower.

Aggregators (Google Public Alerts, the WMO Alert Hub) ask that an alert stay in the feed while
it is in force and, once it expired or an Update or Cancel superseded it, for a while longer
(24-48 h), so that a poller that was away still sees how it ended. The node's index
(pipeline/index.py) forgets an alert once it expires, so the window keeps its own small
entry for each alert: what the feed shows, never the CAP itself (the entry links to
`GET /api/v1/alerts/{id}.xml`, which the stream serves for `retention_after_expiry_s`).

Bounded: an entry leaves `window_s` after it expired or was superseded, and past
`max_entries` the entry that would leave first goes (counted in `dropped`). Only public
Actual alerts enter: Test, Exercise and System alerts reach opted-in devices and canaries,
never a public feed. The entries are written to a file now and then (`run`), so that a
restarted node still shows the alerts that expired within the window: its follower starts
from a recorded position and never reads them again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h3

from tocsin.cap.compose import cap_time
from tocsin.cap.model import Alert, MsgType, Scope, Status
from tocsin.secret_file import write_secret
from tocsin.store.base import alert_id_for

if TYPE_CHECKING:
    from tocsin.pipeline.index import Active

log = logging.getLogger(__name__)

# The window's file is written this often while it changes.
SAVE_S = 2.0
# Text an entry keeps of its alert (the CAP behind the link has it all).
TITLE_MAX = 300
SUMMARY_MAX = 1000
AREA_DESC_MAX = 500
# An entry keeps at most this many cells (the membership of an area's feed, feeds/areas.py):
# a wider cover is kept as coarser parents, which only errs towards showing it in more feeds.
MAX_ENTRY_CELLS = 500
FEED_MSG_TYPES = (MsgType.ALERT, MsgType.UPDATE, MsgType.CANCEL)
FILE_VERSION = 1

Clock = Callable[[], datetime]


def is_public(alert: Alert) -> bool:
    """Whether a public feed shows this alert: Actual, Public scope, Alert/Update/Cancel."""
    return alert.status is Status.ACTUAL and alert.scope is Scope.PUBLIC and alert.msg_type in FEED_MSG_TYPES


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedEntry:
    """What a feed shows of one alert, and when it leaves the window."""

    alert_id: str
    seq: int
    identifier: str
    sender: str
    sent: datetime
    # When tocsin stops showing it: its latest `expires`, else sent + the default lifetime.
    expires_at: datetime
    msg_type: str
    # Each reference as CAP writes it: "sender,identifier,sent".
    references: tuple[str, ...] = ()
    title: str = ""
    summary: str = ""
    author: str = ""
    event: str = ""
    urgency: str = ""
    severity: str = ""
    certainty: str = ""
    area_desc: str = ""
    geocodes: tuple[tuple[str, str], ...] = ()
    cells: tuple[str, ...] = ()
    # When an Update or Cancel that references it was sent (None: not superseded).
    superseded_at: datetime | None = None

    def retires_at(self, window: timedelta) -> datetime:
        """When it leaves the feed: `window` after it expired or was superseded."""
        ended = self.expires_at if self.superseded_at is None else min(self.expires_at, self.superseded_at)
        return ended + window

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["sent"], data["expires_at"] = cap_time(self.sent), cap_time(self.expires_at)
        data["superseded_at"] = None if self.superseded_at is None else cap_time(self.superseded_at)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeedEntry:
        """Raises: KeyError, TypeError, ValueError: not an entry as `as_json` writes it."""
        superseded = data.get("superseded_at")
        return cls(
            alert_id=str(data["alert_id"]), seq=int(data["seq"]), identifier=str(data["identifier"]),
            sender=str(data["sender"]), sent=_time(data["sent"]), expires_at=_time(data["expires_at"]),
            msg_type=str(data["msg_type"]), references=tuple(str(r) for r in data["references"]),
            title=str(data["title"]), summary=str(data["summary"]), author=str(data["author"]),
            event=str(data["event"]), urgency=str(data["urgency"]), severity=str(data["severity"]),
            certainty=str(data["certainty"]), area_desc=str(data["area_desc"]),
            geocodes=tuple((str(s), str(c)) for s, c in data["geocodes"]),
            cells=tuple(str(c) for c in data["cells"]),
            superseded_at=None if superseded is None else _time(superseded),
        )


def _time(text: object) -> datetime:
    moment = datetime.fromisoformat(str(text))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no offset")
    return moment.astimezone(UTC)


def entry_for(active: Active) -> FeedEntry:
    """The feed entry of an active alert (its first info speaks for it, as in CAP indexes)."""
    alert = active.alert
    info = alert.infos[0] if alert.infos else None
    areas = [area for i in alert.infos for area in i.areas]
    title = (info.headline or info.event) if info is not None else ""
    return FeedEntry(
        alert_id=active.stored.envelope.alert_id, seq=active.stored.seq,
        identifier=alert.identifier, sender=alert.sender, sent=alert.sent.astimezone(UTC),
        expires_at=active.expires_at.astimezone(UTC), msg_type=alert.msg_type.value,
        references=tuple(f"{r.sender},{r.identifier},{cap_time(r.sent)}" for r in alert.references),
        title=(title or f"{alert.msg_type.value} {alert.identifier}")[:TITLE_MAX],
        summary=((info.description or "") if info is not None else "")[:SUMMARY_MAX],
        author=((info.sender_name or "") if info is not None else "")[:TITLE_MAX] or alert.sender,
        event=info.event if info is not None else "",
        urgency=info.urgency.value if info is not None else "",
        severity=info.severity.value if info is not None else "",
        certainty=info.certainty.value if info is not None else "",
        area_desc="; ".join(dict.fromkeys(a.area_desc for a in areas))[:AREA_DESC_MAX],
        geocodes=tuple(dict.fromkeys((g.value_name, g.value) for a in areas for g in a.geocodes)),
        cells=coarsened(active.cover.cells),
    )


def coarsened(cells: frozenset[str], most: int = MAX_ENTRY_CELLS) -> tuple[str, ...]:
    """`cells`, each replaced by its parent one resolution coarser at a time until at most
    `most` remain (a superset of the ground they cover)."""
    kept = set(cells)
    res = max((h3.get_resolution(c) for c in kept), default=0)
    while len(kept) > most and res > 0:
        res -= 1
        kept = {c if h3.get_resolution(c) <= res else str(h3.cell_to_parent(c, res)) for c in kept}
    return tuple(sorted(kept))


class FeedWindow:
    """The feed's entries by alert id, with a generation that moves whenever they change."""

    def __init__(self, *, window_s: float, max_entries: int, clock: Clock) -> None:
        self.window = timedelta(seconds=window_s)
        self._max_entries = max_entries
        self._clock = clock
        self.entries: dict[str, FeedEntry] = {}
        # Moves on every change: a rendered feed is good while its generation is current.
        self.generation = 0
        # The latest moment the window changed by its own data (an entry's sent, or when one
        # left): a feed's <updated> when it shows nothing, the same on every node.
        self.changed_at = datetime(1970, 1, 1, tzinfo=UTC)
        self.dropped = 0  # entries let go early because the window held max_entries
        self._next_retire: datetime | None = None
        self._dirty = False

    def observe(self, active: Active) -> None:
        """The index registered an alert (pipeline/index.py observers): keep it if public.

        Never raises: an entry that cannot be made is logged and left out, and the follower
        goes on.
        """
        try:
            if is_public(active.alert):
                alert = active.alert
                self.add(entry_for(active), [alert_id_for(r.sender, r.identifier) for r in alert.references])
        except Exception:  # a bug here must not stop the follower
            log.exception("feed entry not made", extra={"seq": active.stored.seq})

    def add(self, entry: FeedEntry, referenced: list[str]) -> None:
        """Keep the entry; the entries of the alert ids it references are superseded as of
        its sent. An entry without cells or geocodes takes those of what it references."""
        known = self.entries.get(entry.alert_id)
        if known is not None and replace(known, superseded_at=None) == entry:
            return  # a redelivery, or an alert read back after a restart
        self._forget_rewound(entry)
        if not entry.cells and not entry.geocodes:  # goes where what it references went
            earlier = [self.entries[r] for r in referenced if r in self.entries]
            entry = replace(entry, cells=tuple(sorted({c for e in earlier for c in e.cells})),
                            geocodes=tuple(dict.fromkeys(g for e in earlier for g in e.geocodes)))
        if known is not None:
            entry = replace(entry, superseded_at=known.superseded_at)
        self.entries[entry.alert_id] = entry
        for ref in referenced:
            earlier_entry = self.entries.get(ref)
            if earlier_entry is not None and (earlier_entry.superseded_at is None or entry.sent < earlier_entry.superseded_at):
                self.entries[ref] = replace(earlier_entry, superseded_at=entry.sent)
        self.changed_at = max(self.changed_at, entry.sent)
        while len(self.entries) > self._max_entries:
            first = min(self.entries.values(), key=lambda e: (e.retires_at(self.window), e.seq))
            del self.entries[first.alert_id]
            self.dropped += 1
            log.warning("feed window full; entry dropped early", extra={"alert_id": first.alert_id})
        self._changed()

    def _forget_rewound(self, entry: FeedEntry) -> None:
        """The stream reused a seq (index.py `_went_back`): another alert is at this entry's
        seq, so what was at or after it is gone. (An alert read back again, after a restart,
        finds itself at its seq and changes nothing.)"""
        if not any(e.seq == entry.seq and e.alert_id != entry.alert_id for e in self.entries.values()):
            return
        rewound = [e.alert_id for e in self.entries.values() if e.seq >= entry.seq and e.alert_id != entry.alert_id]
        for alert_id in rewound:
            del self.entries[alert_id]

    def _changed(self) -> None:
        self.generation += 1
        self._dirty = True
        self._next_retire = min((e.retires_at(self.window) for e in self.entries.values()), default=None)

    def prune(self) -> None:
        """Let go of the entries whose time in the window is over: O(1) until one is due."""
        now = self._clock()
        if self._next_retire is None or now < self._next_retire:
            return
        gone = [e for e in self.entries.values() if e.retires_at(self.window) <= now]
        for entry in gone:
            del self.entries[entry.alert_id]
            self.changed_at = max(self.changed_at, entry.retires_at(self.window))
        self._changed()

    def shown(self) -> list[FeedEntry]:
        """The entries in the window now, newest first (by sent, then seq)."""
        self.prune()
        return sorted(self.entries.values(), key=lambda e: (e.sent, e.seq), reverse=True)

    # The file that keeps the window across restarts

    def dump(self, stream: str) -> bytes:
        return json.dumps({"version": FILE_VERSION, "stream": stream, "changed_at": cap_time(self.changed_at),
                           "entries": [e.as_json() for e in self.entries.values()]},
                          separators=(",", ":"), ensure_ascii=False).encode()

    def load(self, path: Path, stream: str) -> int:
        """Take back the entries recorded for this stream; returns how many. A missing,
        unreadable or foreign file is ignored (logged): the window then starts empty."""
        try:
            data = json.loads(path.read_bytes())
            if data.get("version") != FILE_VERSION or data.get("stream") != stream:
                return 0
            entries = [FeedEntry.from_json(e) for e in data["entries"]]
            changed_at = _time(data["changed_at"])
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("feed window file unreadable; starting empty", extra={"path": str(path), "error": repr(exc)})
            return 0
        self.entries = {e.alert_id: e for e in sorted(entries, key=lambda e: e.seq)[-self._max_entries:]}
        self.changed_at = changed_at
        self._changed()
        self._dirty = False
        self.prune()
        return len(self.entries)

    def save(self, path: Path, stream: str) -> None:
        """Record the window now (raises OSError)."""
        self._dirty = False
        write_secret(path, self.dump(stream))

    async def run(self, path: Path, stream: str, interval_s: float = SAVE_S) -> None:
        """Write the window to `path` every `interval_s` while it changes, forever."""
        while True:
            await asyncio.sleep(interval_s)
            self.prune()
            if self._dirty:
                body = self.dump(stream)
                self._dirty = False
                try:
                    await asyncio.to_thread(write_secret, path, body)
                except OSError as exc:
                    self._dirty = True
                    log.warning("feed window not recorded", extra={"path": str(path), "error": repr(exc)})


"""Duplicates across issuers: the same message from another organisation within a window.

Germany's Warntag 2020 sent apps 52 copies of one message from many issuers. An alert is
still stored and delivered when it repeats another (devices coalesce them by the same
`priority.fingerprint`); the issuer's answer names the alert it repeats.

Per node, in memory, bounded (a window and a cap on entries, oldest dropped first), and fed
from two sides: this node's accepts (at once) and its follower (every alert stored by any
node, as it is fanned out here), so an alert accepted on another node is known here a
moment after it was stored. Two copies accepted on two nodes within that moment are not
flagged (docs/architecture.md).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from tocsin.cap.model import Alert
from tocsin.pipeline.priority import fingerprint


@dataclass(frozen=True, slots=True, kw_only=True)
class Original:
    """The first alert seen with a fingerprint: its id, its issuer organisation, when."""

    alert_id: str
    issuer: str
    at: datetime

    def as_json(self) -> dict[str, str]:
        return {"id": self.alert_id, "issuer": self.issuer}


class Duplicates:
    """Fingerprint -> the first alert seen with it, within `window_s`, at most `max_entries`."""

    def __init__(self, *, window_s: float, max_entries: int) -> None:
        self._window = timedelta(seconds=window_s)
        self._max = max_entries
        self._seen: OrderedDict[str, Original] = OrderedDict()
        self.flagged = 0  # duplicates found by `check` (for /metrics and the bench)

    def check(self, alert: Alert, alert_id: str, issuer: str, now: datetime) -> Original | None:
        """The alert this one repeats, when another organisation sent it within the window;
        else None, and this one is noted as the first of its content."""
        key = fingerprint(alert)
        first = self._current(key, now)
        if first is None:
            self._note(key, Original(alert_id=alert_id, issuer=issuer, at=now))
            return None
        if first.alert_id == alert_id or first.issuer == issuer:
            return None
        self.flagged += 1
        return first

    def note(self, alert: Alert, alert_id: str, issuer: str, at: datetime) -> None:
        """Noted from the stream (the follower): kept unless an earlier one is known."""
        key = fingerprint(alert)
        if self._current(key, at) is None:
            self._note(key, Original(alert_id=alert_id, issuer=issuer, at=at))

    def _current(self, key: str, now: datetime) -> Original | None:
        first = self._seen.get(key)
        if first is not None and now - first.at > self._window:
            del self._seen[key]
            return None
        return first

    def _note(self, key: str, original: Original) -> None:
        self._seen[key] = original
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)

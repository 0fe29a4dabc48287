"""Whether a verified alert is shown on this device, and in which language: pure functions.

An Update or Cancel is judged by what this device showed (state.py `Shown`): an Update of a
shown alert replaces it, a Cancel of one is shown once as a cancellation, a correction is
shown wherever the device is now; of an alert it never showed, only an Update whose own area
holds the device is shown (as a new alert). Identical messages from different senders within
COALESCE_WINDOW are shown once (docs/api.md, "What a client must do with each alert event").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from tocsin.audience import Audience, expires_at
from tocsin.cap.model import Alert, Area, Info, MsgType
from tocsin.client.state import Identity, Shown, Standing
from tocsin.correction import is_correction
from tocsin.geo.cells import covers_point

# Identical messages (same status, event, headline, description, severity and areas) from
# different senders, sent at most this far apart, are shown once, naming both senders:
# many issuers relaying one warning at once (Warntag 2020: 52 copies of one message).
COALESCE_WINDOW = timedelta(minutes=10)

LatLon = tuple[float, float]

class Verdict(StrEnum):
    """The outcome of the checks, in the order they run; also a counter label."""

    SHOW = "show"
    STATUS = "status"
    EXPIRED = "expired"
    DUPLICATE = "duplicate"
    # An Update or Cancel of nothing this device showed (and no own area that holds it).
    UNRELATED = "unrelated"
    OUT_OF_AREA = "out_of_area"


class Kind(StrEnum):
    """How a shown alert is shown."""

    ALERT = "alert"  # a new alert (also an Update of one never shown, in its own area)
    UPDATE = "update"  # replaces what `Decision.replaces` names
    CANCEL = "cancel"  # retracts it: shown once, as a cancellation
    CORRECTION = "correction"  # it was a false alert: disregard it
    ALSO = "also"  # the same message as one shown, from another sender: named, not repeated


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscription:
    """What this device asked for: its places, its languages, and which statuses it wants."""

    places: tuple[LatLon, ...]
    # Each place's name, in the order of `places` (shown with an alert; never sent).
    names: tuple[str, ...] = ()
    languages: tuple[str, ...] = ("en",)
    # The same status rule the node fans out by (a canary also shows System alerts).
    audience: Audience = Audience()


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """A verdict, with the info to show when the verdict is SHOW (None: the alert has none)."""

    verdict: Verdict
    info: Info | None = None
    kind: Kind = Kind.ALERT
    # UPDATE, CANCEL, CORRECTION: the shown alerts it replaces; ALSO: the one it repeats.
    replaces: tuple[Identity, ...] = ()
    fingerprint: str = ""
    # The names of the device's places inside the shown info's areas (one display however
    # many there are; empty for a follow-up shown because its target was shown).
    places: tuple[str, ...] = ()

    @property
    def is_shown(self) -> bool:
        return self.verdict is Verdict.SHOW


def _primary(tag: str) -> str:
    return tag.lower().split("-", 1)[0]


def pick_info(infos: Sequence[Info], languages: Sequence[str]) -> Info | None:
    """The info in the first preferred language (exact, else `fr` ~ `fr-FR`), else the first."""
    for wanted in languages:
        for info in infos:
            if info.language.lower() == wanted.lower():
                return info
        for info in infos:
            if _primary(info.language) == _primary(wanted):
                return info
    return infos[0] if infos else None


def infos_in_area(infos: Sequence[Info], places: Sequence[LatLon]) -> list[Info]:
    """The infos whose areas hold one of the places (precise check)."""
    return [
        info
        for info in infos
        if any(covers_point(info.areas, lat, lon) for lat, lon in places)
    ]


def places_in(info: Info, subscription: Subscription) -> tuple[str, ...]:
    """The names of the subscription's places that lie in `info`'s areas (precise check)."""
    names = subscription.names or tuple(f"{lat},{lon}" for lat, lon in subscription.places)
    return tuple(name for name, (lat, lon) in zip(names, subscription.places) if covers_point(info.areas, lat, lon))


def decide(
    alert: Alert,
    subscription: Subscription,
    shown: Mapping[Identity, Shown],
    now: datetime,
) -> Decision:
    """Whether to show a verified alert now, which info, and as what."""
    if not subscription.audience.receives(alert.status):
        return Decision(verdict=Verdict.STATUS)
    if expires_at(alert) <= now:
        return Decision(verdict=Verdict.EXPIRED)
    if alert.identity in shown:
        return Decision(verdict=Verdict.DUPLICATE)
    local = infos_in_area(alert.infos, subscription.places)
    if alert.msg_type in (MsgType.UPDATE, MsgType.CANCEL):
        follow_up = _follow_up(alert, local, subscription, shown)
        if follow_up is not None:
            return follow_up
    if not local:
        return Decision(verdict=Verdict.OUT_OF_AREA)
    info = pick_info(local, subscription.languages)
    assert info is not None
    mark, where = fingerprint(alert, info), places_in(info, subscription)
    for identity, record in shown.items():
        if (record.fingerprint == mark and record.is_current and identity[0] != alert.sender
                and record.sent is not None and abs(record.sent - alert.sent) <= COALESCE_WINDOW):
            return Decision(verdict=Verdict.SHOW, info=info, kind=Kind.ALSO, replaces=(identity,), fingerprint=mark,
                            places=where)
    return Decision(verdict=Verdict.SHOW, info=info, fingerprint=mark, places=where)


def _follow_up(alert: Alert, local: list[Info], subscription: Subscription,
               shown: Mapping[Identity, Shown]) -> Decision | None:
    """An Update or Cancel judged by its references; None: an Update of nothing shown
    whose own area holds the device (shown as a new alert)."""
    follows = tuple(
        identity for ref in alert.references
        if (record := shown.get(identity := (ref.sender, ref.identifier))) is not None
        and record.displayed and record.standing is not Standing.CANCELLED
    )
    if follows:
        # Shown wherever the device is now: it showed what this replaces or retracts.
        kind = (Kind.CORRECTION if is_correction(alert)
                else Kind.CANCEL if alert.msg_type is MsgType.CANCEL else Kind.UPDATE)
        info = pick_info(local or alert.infos, subscription.languages)
        where = places_in(info, subscription) if info is not None and local else ()
        return Decision(verdict=Verdict.SHOW, info=info, kind=kind, replaces=follows, places=where)
    if alert.msg_type is MsgType.UPDATE and local:
        return None
    # Never out of area for lack of an area: an Update or Cancel without one is unrelated.
    drawn = any(area.polygons or area.circles for info in alert.infos for area in info.areas)
    return Decision(verdict=Verdict.OUT_OF_AREA if drawn and alert.msg_type is MsgType.UPDATE else Verdict.UNRELATED)


def fingerprint(alert: Alert, info: Info) -> str:
    """What makes two messages the same to the person shown them, from the signed CAP
    content only: status, event, headline, description, severity and the info's areas."""
    content = [alert.status.value, info.event, info.headline or "", info.description or "",
               info.severity.value, sorted(_shapes(area) for area in info.areas)]
    return hashlib.sha256(json.dumps(content, separators=(",", ":")).encode()).hexdigest()[:32]


def _shapes(area: Area) -> str:
    polygons = sorted([list(point) for point in polygon] for polygon in area.polygons)
    circles = sorted([c.lat, c.lon, c.radius_km] for c in area.circles)
    return json.dumps([polygons, circles], separators=(",", ":"))

"""Whether a verified alert is shown on this device, and in which language: pure functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from tocsin.audience import Audience, expires_at
from tocsin.cap.model import Alert, Info
from tocsin.client.state import Identity
from tocsin.geo.cells import covers_point

LatLon = tuple[float, float]

class Verdict(StrEnum):
    """The outcome of the checks, in the order they run; also a counter label."""

    SHOW = "show"
    STATUS = "status"
    EXPIRED = "expired"
    DUPLICATE = "duplicate"
    OUT_OF_AREA = "out_of_area"


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscription:
    """What this device asked for: its places, its languages, and which statuses it wants."""

    places: tuple[LatLon, ...]
    languages: tuple[str, ...] = ("en",)
    # The same status rule the node fans out by (a canary also shows System alerts).
    audience: Audience = Audience()


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """A verdict, with the info to show when the verdict is SHOW (None: the alert has none)."""

    verdict: Verdict
    info: Info | None = None

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


def decide(
    alert: Alert,
    subscription: Subscription,
    seen: Mapping[Identity, datetime],
    now: datetime,
) -> Decision:
    """Whether to show a verified alert now, and which info."""
    if not subscription.audience.receives(alert.status):
        return Decision(verdict=Verdict.STATUS)
    if expires_at(alert) <= now:
        return Decision(verdict=Verdict.EXPIRED)
    if alert.identity in seen:
        return Decision(verdict=Verdict.DUPLICATE)
    if not alert.infos:
        # An Update or Cancel without info has no area: it concerns whoever saw its target.
        follows = any((ref.sender, ref.identifier) in seen for ref in alert.references)
        return Decision(verdict=Verdict.SHOW if follows else Verdict.OUT_OF_AREA)
    local = infos_in_area(alert.infos, subscription.places)
    if not local:
        return Decision(verdict=Verdict.OUT_OF_AREA)
    return Decision(verdict=Verdict.SHOW, info=pick_info(local, subscription.languages))

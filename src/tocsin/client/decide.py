"""Whether a verified alert is shown on this device, and in which language: pure functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from tocsin.cap.model import Alert, Info, Status
from tocsin.client.state import Identity
from tocsin.geo.cells import covers_point

LatLon = tuple[float, float]

# An alert without <expires> is shown for this long after it was sent; the server's
# default_lifetime_s (Settings) replays it for as long.
DEFAULT_LIFETIME = timedelta(hours=24)


class Verdict(StrEnum):
    """The outcome of the checks, in the order they run; also a counter label."""

    SHOW = "show"
    STATUS = "status"
    EXPIRED = "expired"
    DUPLICATE = "duplicate"
    OUT_OF_AREA = "out_of_area"


@dataclass(frozen=True, slots=True, kw_only=True)
class Audience:
    """What this device asked for: its places, languages and which statuses it wants."""

    places: tuple[LatLon, ...]
    languages: tuple[str, ...] = ("en",)
    tests: bool = False
    # A canary (the prober's device) also shows System alerts.
    canary: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """A verdict, with the info to show when the verdict is SHOW (None: the alert has none)."""

    verdict: Verdict
    info: Info | None = None

    @property
    def is_shown(self) -> bool:
        return self.verdict is Verdict.SHOW


def status_wanted(status: Status, audience: Audience) -> bool:
    """Actual always; Test and Exercise on opt-in; System for canaries only; Draft never."""
    if status is Status.ACTUAL:
        return True
    if status in (Status.TEST, Status.EXERCISE):
        return audience.tests
    if status is Status.SYSTEM:
        return audience.canary
    return False


def expiry_of(alert: Alert, default_lifetime: timedelta = DEFAULT_LIFETIME) -> datetime:
    """When the alert stops being shown: its expires, else sent + the default lifetime."""
    expires = alert.expires
    return expires if expires is not None else alert.sent + default_lifetime


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
    audience: Audience,
    seen: Mapping[Identity, datetime],
    now: datetime,
) -> Decision:
    """Whether to show a verified alert now, and which info."""
    if not status_wanted(alert.status, audience):
        return Decision(verdict=Verdict.STATUS)
    if expiry_of(alert) <= now:
        return Decision(verdict=Verdict.EXPIRED)
    if alert.identity in seen:
        return Decision(verdict=Verdict.DUPLICATE)
    if not alert.infos:
        # An Update or Cancel without info has no area: it concerns whoever saw its target.
        follows = any((ref.sender, ref.identifier) in seen for ref in alert.references)
        return Decision(verdict=Verdict.SHOW if follows else Verdict.OUT_OF_AREA)
    local = infos_in_area(alert.infos, audience.places)
    if not local:
        return Decision(verdict=Verdict.OUT_OF_AREA)
    return Decision(verdict=Verdict.SHOW, info=pick_info(local, audience.languages))

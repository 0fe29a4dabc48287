"""Who may send what: issuer accounts and the rules an alert must meet to be distributed."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from enum import StrEnum

from tocsin.cap.model import Alert, Area, Circle, Info, MsgType, Polygon, Reference, Scope, Severity, Status
from tocsin.cap.shapes import format_point
from tocsin.geo.cells import TooTangled, self_crossing
from tocsin.geo.extent import circle_km2, polygon_km2
from tocsin.geo.gazetteer import Gazetteer
from tocsin.geo.territory import Territory
from tocsin.errors import (
    AREA_SELF_INTERSECTING,
    AREA_TOO_LARGE,
    CAP_CEILING_BELOW_ALTITUDE,
    CAP_EXPIRES_BEFORE_SENT,
    CAP_EXPIRES_BEFORE_START,
    DRAFT,
    EXPIRED,
    MSGTYPE_NOT_DISTRIBUTED,
    NO_AREA,
    NOT_PUBLIC,
    OUTSIDE_TERRITORY,
    REFERENCE_NOT_ALLOWED,
    REFERENCE_UNKNOWN,
    SENDER_NOT_ALLOWED,
    SEVERITY_NOT_ALLOWED,
    SENT_IN_FUTURE,
    SYSTEM_NOT_ALLOWED,
    TOO_MANY_SHAPES,
    UNLOCATABLE_AREA,
    Problem,
    Rejected,
    Violation,
)

# Statuses an ordinary issuer account may send; System is for the prober's canaries.
DEFAULT_STATUSES = (Status.ACTUAL.value, Status.EXERCISE.value, Status.TEST.value)
DEFAULT_SEVERITIES = tuple(s.value for s in Severity)
# An organisation's alerts per minute when its record names no valid rate (docs/accounts.md).
DEFAULT_ALERTS_PER_MIN = 600
# From the least to the most severe (Unknown counts as the least: it claims nothing).
_SEVERITY_RANK = {Severity.UNKNOWN: 0, Severity.MINOR: 1, Severity.MODERATE: 2, Severity.SEVERE: 3, Severity.EXTREME: 4}


class Role(StrEnum):
    """What a person or API client may do for its issuer organisation (docs/accounts.md)."""

    AUTHOR = "author"  # submit alerts, cancel and correct its organisation's alerts
    APPROVER = "approver"  # approve or reject another author's pending alerts
    ADMIN = "admin"  # accounts, tokens and policies


class ApprovalMode(StrEnum):
    """When an Actual alert waits for a second person."""

    ALWAYS = "always"  # every Actual alert (the default)
    ABOVE = "above"  # Actual alerts at or above `Approval.severity`
    NONE = "none"  # an automated source (earthquake early warning): published at once


@dataclass(frozen=True, slots=True, kw_only=True)
class Approval:
    """An organisation's approval policy. Exercise and Test never need a second person;
    Cancel and correction never wait (speed matters more there)."""

    mode: ApprovalMode = ApprovalMode.ALWAYS
    severity: Severity = Severity.SEVERE

    def required(self, alert: Alert) -> bool:
        """Whether this alert must be approved by someone other than its author."""
        if alert.status is not Status.ACTUAL or alert.msg_type is MsgType.CANCEL:
            return False
        if self.mode is ApprovalMode.NONE:
            return False
        if self.mode is ApprovalMode.ABOVE:
            worst = max((_SEVERITY_RANK[info.severity] for info in alert.infos), default=_SEVERITY_RANK[Severity.EXTREME])
            return worst >= _SEVERITY_RANK[self.severity]
        return True

    def as_json(self) -> dict[str, str]:
        return {"mode": self.mode.value, "severity": self.severity.value}

    @classmethod
    def from_json(cls, data: object) -> Approval:
        """Fail-closed: anything but a well-formed narrower policy is ALWAYS."""
        raw = data if isinstance(data, dict) else {}
        try:
            mode = ApprovalMode(raw.get("mode", ApprovalMode.ALWAYS.value))
            severity = Severity(raw.get("severity", Severity.SEVERE.value))
        except ValueError:
            return cls()
        return cls(mode=mode, severity=severity)


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertLimits:
    """What one alert may hold, checked before its cover is computed.

    The deployment's limits come from settings (max_alert_*); an issuer account's limits
    replace them field by field, and a field it lacks is the deployment's, never unlimited.
    """

    areas: int | None = None
    polygons: int | None = None
    circles: int | None = None
    points: int | None = None
    # Distinct polygons count for their bounding box, circles for their cap (geo/extent.py).
    area_km2: float | None = None

    def over(self, default: AlertLimits) -> AlertLimits:
        """These limits, with `default`'s where these have none."""
        return AlertLimits(**{f.name: _first(getattr(self, f.name), getattr(default, f.name)) for f in fields(self)})  # type: ignore[arg-type]

    def as_json(self) -> dict[str, float]:
        return {f.name: value for f in fields(self) if (value := getattr(self, f.name)) is not None}

    @classmethod
    def from_json(cls, data: object) -> AlertLimits:
        """Fail-closed: a field that is not a positive finite number counts as absent (the
        deployment's limit applies)."""
        raw = data if isinstance(data, dict) else {}
        chosen: dict[str, float] = {}
        for f in fields(cls):
            value = raw.get(f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf:
                chosen[f.name] = value if f.name == "area_km2" else int(value)
        return cls(**chosen)  # type: ignore[arg-type]


def _first(value: float | None, default: float | None) -> float | None:
    return default if value is None else value


@dataclass(frozen=True, slots=True, kw_only=True)
class Issuer:
    """Who is acting: an issuer organisation's rights, and the person or API client
    (`principal`) acting for it with its roles. `name` is the organisation's."""

    name: str
    senders: tuple[str, ...] = ("*",)
    statuses: tuple[str, ...] = DEFAULT_STATUSES
    admin: bool = False
    # The user or API client behind the token ("" for a record that names none: the
    # organisation itself acts, as the prober and automated sources do).
    principal: str = ""
    roles: frozenset[Role] = frozenset({Role.AUTHOR})
    severities: tuple[str, ...] = DEFAULT_SEVERITIES
    approval: Approval = Approval()
    # Organisations whose alerts this one may Update, Cancel or correct.
    delegated: tuple[str, ...] = ()
    # A node's prober: its System alerts leave the stream minutes after they were read, and
    # its ledger rows are not part of the permanent record. Grants no right.
    probe: bool = False
    # Set by an admin to raise (or lower) the deployment's alert limits for this account.
    limits: AlertLimits = AlertLimits()
    # Where its alerts may be drawn (None: anywhere; an empty territory holds no area).
    territory: Territory | None = None
    # The organisation's alerts per minute on one node (0: no limit; api/auth.py).
    alerts_per_min: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def may_send_as(self, sender: str) -> bool:
        return self.admin or "*" in self.senders or sender in self.senders

    def may_send_status(self, status: str) -> bool:
        return self.admin or status in self.statuses

    def may_send_severity(self, severity: str) -> bool:
        return self.admin or severity in self.severities

    def has(self, role: Role) -> bool:
        return self.admin or role in self.roles

    def may_reference(self, organisation: str) -> bool:
        """Whether this issuer may Update, Cancel or correct an alert `organisation` issued."""
        return organisation == self.name or organisation in self.delegated

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "senders": list(self.senders), "statuses": list(self.statuses),
                                "admin": self.admin, "probe": self.probe, "principal": self.principal,
                                "roles": sorted(self.roles), "severities": list(self.severities),
                                "approval": self.approval.as_json(), "delegated": list(self.delegated)}
        if self.limits.as_json():
            data["limits"] = self.limits.as_json()
        data["territory"] = None if self.territory is None else self.territory.as_json()
        data["alerts_per_min"] = self.alerts_per_min
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Issuer:
        """Fail-closed: a missing or malformed field grants nothing (no sender, status,
        severity or role; approval always; a territory holding no area; the default alert
        rate), an unknown one is ignored.

        Raises:
            KeyError, TypeError: the record has no name (the caller refuses the token).
        """
        name = data["name"]
        if not isinstance(name, str) or not name:
            raise TypeError("an account record needs a name")
        return cls(
            name=name,
            senders=_strings(data.get("senders")),
            statuses=_strings(data.get("statuses")),
            admin=data.get("admin") is True,
            probe=data.get("probe") is True,
            principal=str(data.get("principal") or ""),
            roles=frozenset(Role(r) for r in _strings(data.get("roles")) if r in Role._value2member_map_),
            severities=_strings(data.get("severities")),
            approval=Approval.from_json(data.get("approval")),
            delegated=_strings(data.get("delegated")),
            limits=AlertLimits.from_json(data.get("limits")),
            territory=Territory.decode(data.get("territory", {})),
            alerts_per_min=alerts_per_min(data.get("alerts_per_min")),
        )


def alerts_per_min(raw: object) -> int:
    """A stored alert rate: a whole number >= 0 (0: no limit), else DEFAULT_ALERTS_PER_MIN."""
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= 1_000_000:
        return raw
    return DEFAULT_ALERTS_PER_MIN


def _strings(raw: object) -> tuple[str, ...]:
    """A list of strings as a tuple; anything else (absent, a string, mixed) as ()."""
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        return ()
    return tuple(raw)


def check(alert: Alert, issuer: Issuer, *, now: datetime, max_skew_s: float) -> None:
    """Refuse an alert tocsin must not distribute for this issuer now.

    Raises:
        Rejected: with the catalog problem naming the rule.
    """
    if alert.status is Status.DRAFT:  # for no account: named as such, before any right
        raise Rejected(DRAFT, "a Draft is never distributed; keep it as a draft (docs/lifecycle.md)")
    if not issuer.may_send_as(alert.sender):
        raise Rejected(SENDER_NOT_ALLOWED, f"account {issuer.name!r} may not send as {alert.sender!r}")
    if not issuer.may_send_status(alert.status.value):
        raise Rejected(SYSTEM_NOT_ALLOWED, f"account {issuer.name!r} may not send status {alert.status.value}")
    for info in alert.infos:
        if not issuer.may_send_severity(info.severity.value):
            raise Rejected(SEVERITY_NOT_ALLOWED, f"account {issuer.name!r} may not send severity {info.severity.value}")
    found = findings(alert, now=now, max_skew_s=max_skew_s)
    if found:
        raise Rejected(found[0].problem, found[0].detail)


def check_reference(reference: Reference, issuer: Issuer, organisation: str | None) -> None:
    """Refuse an Update or Cancel whose reference names no alert tocsin holds
    (`organisation` None) or one issued by an organisation this issuer may not reference.
    The deployment's admin may reference any alert.

    Raises:
        Rejected: 422 policy.reference-unknown or policy.reference-not-allowed.
    """
    named = f"{reference.sender},{reference.identifier}"
    if organisation is None:
        raise Rejected(REFERENCE_UNKNOWN, f"reference {named}: no such alert")
    if not (issuer.admin or issuer.may_reference(organisation)):
        detail = f"reference {named}: issued by {organisation!r}, not {issuer.name!r} or one it is delegated"
        raise Rejected(REFERENCE_NOT_ALLOWED, detail)


# Records one finding: problem, path, detail.
Refuse = Callable[[Problem, str, str], None]


def findings(alert: Alert, *, now: datetime, max_skew_s: float) -> list[Violation]:
    """Every reason, whoever the issuer, that tocsin would not distribute this valid CAP now.

    None of these is a CAP 1.2 rule: each is valid CAP that tocsin declines (kind "policy").
    The first one found is what the accept path answers.
    """
    sink: list[Violation] = []

    def refuse(problem: Problem, path: str, detail: str = "") -> None:
        sink.append(Violation(problem=problem, path=path, detail=detail or problem.title, kind="policy"))

    if alert.status is Status.DRAFT:
        refuse(DRAFT, "status")
    if alert.scope is not Scope.PUBLIC:
        refuse(NOT_PUBLIC, "scope", f"scope is {alert.scope.value}")
    if alert.msg_type in (MsgType.ACK, MsgType.ERROR):
        refuse(MSGTYPE_NOT_DISTRIBUTED, "msgType", f"msgType is {alert.msg_type.value}")
    if alert.sent > now + timedelta(seconds=max_skew_s):
        refuse(SENT_IN_FUTURE, "sent", f"sent {alert.sent.isoformat()} is after {now.isoformat()} + {max_skew_s:.0f} s")
    expires = alert.expires
    if expires is not None and expires <= now:
        refuse(EXPIRED, "info", f"expired at {expires.isoformat()}")
    for index, info in enumerate(alert.infos):
        _info_findings(alert, info, f"info[{index}]", refuse)
    _area_findings(alert, refuse)
    return sink


def _info_findings(alert: Alert, info: Info, path: str, refuse: Refuse) -> None:
    """Times and altitudes CAP 1.2 allows but that make no sense to show on a device."""
    expires = info.expires
    if expires is not None and expires <= alert.sent:
        refuse(CAP_EXPIRES_BEFORE_SENT, f"{path}.expires", f"expires {expires} is not after sent {alert.sent}")
    for name, start in (("effective", info.effective), ("onset", info.onset)):
        if expires is not None and start is not None and expires < start:
            refuse(CAP_EXPIRES_BEFORE_START, f"{path}.expires", f"expires {expires} is before {name} {start}")
    for number, area in enumerate(info.areas):
        if area.altitude is not None and area.ceiling is not None and area.ceiling < area.altitude:
            detail = f"ceiling {area.ceiling} is below altitude {area.altitude}"
            refuse(CAP_CEILING_BELOW_ALTITUDE, f"{path}.area[{number}].ceiling", detail)


def _area_findings(alert: Alert, refuse: Refuse) -> None:
    """Every area must be locatable; a Cancel or Update may instead reuse its references'."""
    areas = [(i, j, area) for i, info in enumerate(alert.infos) for j, area in enumerate(info.areas)]
    for i, j, area in areas:
        if not area.polygons and not area.circles:
            refuse(UNLOCATABLE_AREA, f"info[{i}].area[{j}]", f"info[{i}].area[{j}] ({area.area_desc!r}) has only geocodes")
    if not areas and alert.msg_type not in (MsgType.CANCEL, MsgType.UPDATE):
        refuse(NO_AREA, "info", "no info has an area")


def check_territory(alert: Alert, territory: Territory | None, *, gazetteer: Gazetteer | None = None,
                    margin_m: float = 0.0, organisation: str = "") -> None:
    """Refuse an alert with a drawn area outside the issuer's territory widened by
    `margin_m` metres, its named areas looked up in `gazetteer` (after check_limits: the
    alert's shapes are bounded by then).

    Raises:
        Rejected: 403 policy.outside-territory naming the area and the territory.
    """
    if territory is None:
        return
    outside = territory.outside(alert, gazetteer, margin_m)
    if outside is not None:
        raise Rejected(
            OUTSIDE_TERRITORY,
            f"{outside} is not within the territory of {organisation or 'the organisation'!r} "
            f"({territory.describe()}) widened by {margin_m:g} m",
        )


def check_limits(alert: Alert, limits: AlertLimits) -> None:
    """Refuse an alert with more shapes, points or extent than `limits` allow, naming the
    area at which a count passes its limit. Costs a pass over the coordinates, no cover.

    Raises:
        Rejected: 422 policy.too-many-shapes or policy.area-too-large.
    """
    counts = {"areas": 0, "polygons": 0, "circles": 0, "points": 0}
    km2 = 0.0
    seen: set[Polygon | Circle] = set()
    for i, info in enumerate(alert.infos):
        for j, area in enumerate(info.areas):
            path = f"info[{i}].area[{j}]"
            counts["areas"] += 1
            counts["polygons"] += len(area.polygons)
            counts["circles"] += len(area.circles)
            counts["points"] += sum(map(len, area.polygons))
            for name, count in counts.items():
                limit = getattr(limits, name) or 0  # fail-closed: no limit known, nothing passes
                if count > limit:
                    raise Rejected(TOO_MANY_SHAPES, f"{path}: the alert has {count} {name} so far; the limit is {limit}")
            km2 += _new_extent_km2(area, seen)
            if km2 > (limits.area_km2 or 0.0):
                raise Rejected(
                    AREA_TOO_LARGE,
                    f"{path}: the areas so far span about {km2:,.0f} km²; the limit is {limits.area_km2 or 0:,.0f} km²",
                )


def _new_extent_km2(area: Area, seen: set[Polygon | Circle]) -> float:
    """The estimated extent of the area's shapes not met before in the alert (the same
    area in another language costs nothing more to cover)."""
    km2 = 0.0
    for polygon in area.polygons:
        if polygon not in seen:
            seen.add(polygon)
            km2 += polygon_km2(polygon)
    for circle in area.circles:
        if circle not in seen:
            seen.add(circle)
            km2 += circle_km2(circle)
    return km2


def check_polygons(alert: Alert) -> None:
    """Refuse an alert with a polygon that crosses itself (a bow tie), naming the area, the
    two edges and where they cross; before any cover, after check_limits (its cost is then
    bounded: O(n log n) over the alert's bounded points, each distinct ring once). A ring
    that only touches itself is accepted (geo/cells.py `self_crossing`, docs/api.md).

    Raises:
        Rejected: 422 area.self-intersecting.
    """
    seen: set[Polygon] = set()
    for i, info in enumerate(alert.infos):
        for j, area in enumerate(info.areas):
            for k, polygon in enumerate(area.polygons):
                if polygon in seen:
                    continue
                seen.add(polygon)
                try:
                    crossing = self_crossing(polygon)
                except TooTangled as exc:
                    raise Rejected(AREA_SELF_INTERSECTING,
                                   f"info[{i}].area[{j}] ({area.area_desc!r}) polygon[{k}]: {exc}") from None
                if crossing is not None:
                    a, b = crossing.first, crossing.second
                    raise Rejected(
                        AREA_SELF_INTERSECTING,
                        f"info[{i}].area[{j}] ({area.area_desc!r}) polygon[{k}] crosses itself: the edge from "
                        f"point {a} to {a + 1} crosses the edge from point {b} to {b + 1} at {format_point(*crossing.at)}",
                    )

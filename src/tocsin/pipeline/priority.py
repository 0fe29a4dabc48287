"""Which alert goes first when many wait, and when two alerts say the same thing.

One ranking for the accept gate (accept.py) and the follower's fan-out (follow.py,
fanout.py): Actual before System probes before Exercise and Test, then Extreme > Severe >
Moderate > Minor > Unknown, then Immediate urgency first; a correction ("false alert,
disregard") ranks as an Actual Extreme Immediate alert, because speed matters most there.
One content fingerprint for duplicates across issuers (Warntag 2020: 52 copies of one
message): the issuer's answer names the alert it repeats, and devices coalesce them.
"""

from __future__ import annotations

import hashlib
import json
from typing import NamedTuple

from tocsin.cap.model import Alert, Area, Info, Severity, Status, Urgency
from tocsin.correction import is_correction

_STATUS_RANK = {Status.ACTUAL: 0, Status.SYSTEM: 1, Status.EXERCISE: 2, Status.TEST: 2, Status.DRAFT: 3}
_SEVERITY_RANK = {Severity.EXTREME: 0, Severity.SEVERE: 1, Severity.MODERATE: 2, Severity.MINOR: 3, Severity.UNKNOWN: 4}
_URGENCY_RANK = {Urgency.IMMEDIATE: 0, Urgency.EXPECTED: 1, Urgency.FUTURE: 2, Urgency.PAST: 3, Urgency.UNKNOWN: 4}


class Rank(NamedTuple):
    """Lower goes first; compare ranks as tuples (ties: the caller's arrival order)."""

    status: int
    severity: int
    urgency: int


# What an alert without infos (a bare Cancel) gets: after every graded alert of its status.
_UNGRADED = (len(_SEVERITY_RANK), len(_URGENCY_RANK))


def rank(alert: Alert) -> Rank:
    """The alert's place in line: its status, then its gravest info's severity and urgency."""
    status = _STATUS_RANK[alert.status]
    if alert.status is Status.ACTUAL and is_correction(alert):
        return Rank(status, 0, 0)
    graded = [(_SEVERITY_RANK[i.severity], _URGENCY_RANK[i.urgency]) for i in alert.infos]
    severity, urgency = min(graded, default=_UNGRADED)
    return Rank(status, severity, urgency)


def is_first_class(alert: Alert) -> bool:
    """An Actual Extreme alert (or a correction): what a burst must let through first."""
    return rank(alert)[:2] == (0, 0)


def fingerprint(alert: Alert) -> str:
    """The alert's content, whoever sent it: equal for two issuers' copies of one message.

    Covers status, message type and, per language, event, headline, description,
    instruction, severity, urgency and the areas' polygons, circles and geocodes; not the
    sender, identifier, sent time or free-text area descriptions. A hex SHA-256 digest.
    """
    content = {
        "status": alert.status.value,
        "msgType": alert.msg_type.value,
        "infos": sorted((_info_content(info) for info in alert.infos), key=lambda c: json.dumps(c, sort_keys=True)),
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _info_content(info: Info) -> dict[str, object]:
    return {
        "language": info.language.lower(),
        "event": info.event,
        "headline": info.headline,
        "description": info.description,
        "instruction": info.instruction,
        "severity": info.severity.value,
        "urgency": info.urgency.value,
        "areas": sorted(json.dumps(_area_content(area), sort_keys=True) for area in info.areas),
    }


def _area_content(area: Area) -> dict[str, object]:
    return {
        "polygons": sorted([list(point) for point in polygon] for polygon in area.polygons),
        "circles": sorted([c.lat, c.lon, c.radius_km] for c in area.circles),
        "geocodes": sorted([g.value_name, g.value] for g in area.geocodes),
    }

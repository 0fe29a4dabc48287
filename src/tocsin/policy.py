"""Who may send what: issuer accounts and the rules an alert must meet to be distributed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tocsin.cap.model import Alert, Info, MsgType, Scope, Status
from tocsin.errors import (
    CAP_CEILING_BELOW_ALTITUDE,
    CAP_EXPIRES_BEFORE_SENT,
    CAP_EXPIRES_BEFORE_START,
    DRAFT,
    EXPIRED,
    MSGTYPE_NOT_DISTRIBUTED,
    NO_AREA,
    NOT_PUBLIC,
    SENDER_NOT_ALLOWED,
    SENT_IN_FUTURE,
    SYSTEM_NOT_ALLOWED,
    UNLOCATABLE_AREA,
    Problem,
    Rejected,
    Violation,
)

# Statuses an ordinary issuer account may send; System is for the prober's canaries.
DEFAULT_STATUSES = (Status.ACTUAL.value, Status.EXERCISE.value, Status.TEST.value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Issuer:
    """An issuer account: who it is, which CAP senders and statuses it may use."""

    name: str
    senders: tuple[str, ...] = ("*",)
    statuses: tuple[str, ...] = DEFAULT_STATUSES
    admin: bool = False
    # A node's prober: its System alerts leave the stream minutes after they were read, and
    # its ledger rows are not part of the permanent record. Grants no right.
    probe: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def may_send_as(self, sender: str) -> bool:
        return self.admin or "*" in self.senders or sender in self.senders

    def may_send_status(self, status: str) -> bool:
        return self.admin or status in self.statuses

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "senders": list(self.senders), "statuses": list(self.statuses), "admin": self.admin,
                "probe": self.probe}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Issuer:
        return cls(
            name=str(data["name"]),
            senders=tuple(data.get("senders", ("*",))),
            statuses=tuple(data.get("statuses", DEFAULT_STATUSES)),
            admin=data.get("admin") is True,
            probe=data.get("probe") is True,
        )


def check(alert: Alert, issuer: Issuer, *, now: datetime, max_skew_s: float) -> None:
    """Refuse an alert tocsin must not distribute for this issuer now.

    Raises:
        Rejected: with the catalog problem naming the rule.
    """
    if not issuer.may_send_as(alert.sender):
        raise Rejected(SENDER_NOT_ALLOWED, f"account {issuer.name!r} may not send as {alert.sender!r}")
    if not issuer.may_send_status(alert.status.value):
        raise Rejected(SYSTEM_NOT_ALLOWED, f"account {issuer.name!r} may not send status {alert.status.value}")
    found = findings(alert, now=now, max_skew_s=max_skew_s)
    if found:
        raise Rejected(found[0].problem, found[0].detail)


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

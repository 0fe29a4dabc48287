"""Who may send what: issuer accounts and the rules an alert must meet to be distributed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tocsin.cap.model import Alert, MsgType, Scope, Status
from tocsin.errors import (
    DRAFT,
    EXPIRED,
    MSGTYPE_NOT_DISTRIBUTED,
    NO_AREA,
    NOT_PUBLIC,
    SENDER_NOT_ALLOWED,
    SENT_IN_FUTURE,
    SYSTEM_NOT_ALLOWED,
    UNLOCATABLE_AREA,
    Rejected,
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
    if alert.status is Status.DRAFT:
        raise Rejected(DRAFT)
    if alert.scope is not Scope.PUBLIC:
        raise Rejected(NOT_PUBLIC, f"scope is {alert.scope.value}")
    if alert.msg_type in (MsgType.ACK, MsgType.ERROR):
        raise Rejected(MSGTYPE_NOT_DISTRIBUTED, f"msgType is {alert.msg_type.value}")
    if alert.sent > now + timedelta(seconds=max_skew_s):
        raise Rejected(SENT_IN_FUTURE, f"sent {alert.sent.isoformat()} is after {now.isoformat()} + {max_skew_s:.0f} s")
    expires = alert.expires
    if expires is not None and expires <= now:
        raise Rejected(EXPIRED, f"expired at {expires.isoformat()}")
    _check_areas(alert)


def _check_areas(alert: Alert) -> None:
    """Every area must be locatable; a Cancel or Update may instead reuse its references'."""
    areas = [(i, j, area) for i, info in enumerate(alert.infos) for j, area in enumerate(info.areas)]
    for i, j, area in areas:
        if not area.polygons and not area.circles:
            raise Rejected(UNLOCATABLE_AREA, f"info[{i}].area[{j}] ({area.area_desc!r}) has only geocodes")
    if not areas and alert.msg_type not in (MsgType.CANCEL, MsgType.UPDATE):
        raise Rejected(NO_AREA, "no info has an area")

"""What a device shows for an alert: the Display value and how it is made."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tocsin.audience import expires_at
from tocsin.cap.model import Alert, Info


@dataclass(frozen=True, slots=True, kw_only=True)
class Display:
    """An alert shown to the user: what was shown, and when, from where."""

    identifier: str
    sender: str
    sent: datetime
    status: str
    msg_type: str
    event: str
    headline: str
    language: str
    alert_id: str
    seq: int
    node: str
    displayed_at: datetime
    delay_s: float
    expires: datetime
    alert: Alert = field(repr=False, compare=False)
    # None for an Update or Cancel without info, shown because its target was shown.
    info: Info | None = field(repr=False, compare=False)

    def as_json(self) -> dict[str, Any]:
        """The display as a JSON object (CAP element names where CAP has one)."""
        return {
            "identifier": self.identifier,
            "sender": self.sender,
            "sent": self.sent.isoformat(),
            "status": self.status,
            "msgType": self.msg_type,
            "event": self.event,
            "headline": self.headline,
            "language": self.language,
            "expires": self.expires.isoformat(),
            "delay_s": round(self.delay_s, 3),
            "displayed_at": self.displayed_at.isoformat(),
            "id": self.alert_id,
            "seq": self.seq,
            "node": self.node,
        }


def make_display(
    alert: Alert, info: Info | None, *, alert_id: str, seq: int, node: str, now: datetime
) -> Display:
    """What the user is shown for `alert`, in `info`'s language, at `now`."""
    return Display(
        identifier=alert.identifier,
        sender=alert.sender,
        sent=alert.sent,
        status=str(alert.status),
        msg_type=str(alert.msg_type),
        event=info.event if info else str(alert.msg_type),
        headline=(info.headline or info.event) if info else _follow_up_headline(alert),
        language=info.language if info else "",
        alert_id=alert_id,
        seq=seq,
        node=node,
        displayed_at=now,
        delay_s=(now - alert.sent).total_seconds(),
        expires=expires_at(alert),
        alert=alert,
        info=info,
    )


def _follow_up_headline(alert: Alert) -> str:
    """A headline for an Update or Cancel that has no info of its own."""
    targets = ", ".join(ref.identifier for ref in alert.references)
    return f"{alert.msg_type} of {targets}" if targets else str(alert.msg_type)

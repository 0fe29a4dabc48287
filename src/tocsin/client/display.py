"""What a device shows for an alert: the Display value, how it is made, and its terminal line."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tocsin.audience import expires_at, relayed_from
from tocsin.cap.model import Alert, Info
from tocsin.client.decide import Kind
from tocsin.client.state import Identity


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
    # None: shown from its early copy, before it was stored (pipeline/early.py).
    seq: int | None
    node: str
    displayed_at: datetime
    delay_s: float
    expires: datetime
    alert: Alert = field(repr=False, compare=False)
    # None for an Update or Cancel without info, shown because its target was shown.
    info: Info | None = field(repr=False, compare=False)
    # How it is shown (decide.py Kind): a new alert, an update or cancellation of the shown
    # alerts `replaces` names, a correction of them, or the same message as one shown
    # (`replaces`) from another sender.
    kind: Kind = Kind.ALERT
    replaces: tuple[Identity, ...] = ()
    # Who issued it: its sender, and for ALSO the sender of the message it repeats first.
    senders: tuple[str, ...] = ()
    # The device's places (their names) inside the shown info's areas; shown once for all.
    places: tuple[str, ...] = ()
    # SOURCES: the source it was relayed from (another authority's feed), "" when this
    # deployment's own authorities issued it (docs/sources.md).
    relayed_from: str = ""

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
            "kind": self.kind.value,
            "replaces": [{"sender": sender, "identifier": identifier} for sender, identifier in self.replaces],
            "senders": list(self.senders or (self.sender,)),
            "places": list(self.places),
            "relayed_from": self.relayed_from or None,
        }


def make_display(
    alert: Alert, info: Info | None, *, alert_id: str, seq: int | None, node: str, now: datetime,
    kind: Kind = Kind.ALERT, replaces: tuple[Identity, ...] = (), places: tuple[str, ...] = (),
) -> Display:
    """What the user is shown for `alert`, in `info`'s language, at `now`, as `kind`."""
    first = [sender for sender, _ in replaces] if kind is Kind.ALSO else []
    senders = tuple(dict.fromkeys([*first, alert.sender]))
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
        kind=kind,
        replaces=replaces,
        senders=senders,
        places=places,
        relayed_from=relayed_from(alert) or "",
    )


def _follow_up_headline(alert: Alert) -> str:
    """A headline for an Update or Cancel that has no info of its own."""
    targets = ", ".join(ref.identifier for ref in alert.references)
    return f"{alert.msg_type} of {targets}" if targets else str(alert.msg_type)


# Terminal control in alert text (any issuer's, or a relay's). XML 1.0 keeps ESC and most
# C0 controls out of CAP, but not CR or the C1 range, where U+009B is an 8-bit CSI.
_SEQUENCE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"  # CSI (ECMA-48 §5.4): parameters, intermediates, final
    r"|\x9b[0-?]*[ -/]*[@-~]?"  # the same, 8-bit
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC, to BEL or ST
    r"|\x1b[@-_]?"  # any other escape
)
# Line breaks and tabs become one space; every other C0 or C1 control, DEL, and the
# bidirectional overrides and isolates (which reorder what follows) are shown escaped.
_SPACE = re.compile(r"[\t\n\v\f\r\x85\u2028\u2029]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_text(text: str) -> str:
    """`text` safe to print on a terminal: no control sequence, no control character."""
    return _CONTROL.sub(_escaped, _SPACE.sub(" ", _SEQUENCE.sub("", text)))


def terminal_line(display: Display) -> str:
    """One readable line; anything but a real alert says so loudly first (from the CAP
    status, whatever the alert's texts hold: they cannot move the cursor or erase it)."""
    tag = "" if display.status == "Actual" else f"[{terminal_text(display.status).upper()}] "
    kind = _kind_label(display)
    event, headline, sender, identifier, language, node = map(
        terminal_text, (display.event, display.headline, display.sender, display.identifier,
                        display.language, display.node),
    )
    where = f" (for {', '.join(map(terminal_text, display.places))})" if display.places else ""
    relayed = f"relayed from {terminal_text(display.relayed_from)}: " if display.relayed_from else ""
    return (
        f"{tag}{kind}{event}: {headline}{where} "
        f"[{relayed}{sender} {identifier}, {language or '-'}, after {display.delay_s:.1f} s via {node}]"
    )


_KIND_LABELS = {
    Kind.UPDATE: "UPDATE, replaces",
    Kind.CANCEL: "CANCELLED",
    Kind.CORRECTION: "FALSE ALERT, disregard",
    Kind.ALSO: "ALSO ISSUED BY {senders}, as",
}


def _kind_label(display: Display) -> str:
    """What the line is, before its text: an update, a cancellation, a correction of the
    alerts it names, or the same message from another sender."""
    label = _KIND_LABELS.get(display.kind)
    if label is None:
        return "" if display.msg_type == "Alert" else f"({terminal_text(display.msg_type)}) "
    named = ", ".join(terminal_text(identifier) for _, identifier in display.replaces)
    senders = ", ".join(terminal_text(sender) for sender in display.senders[1:])
    return f"({label.format(senders=senders)} {named}) "

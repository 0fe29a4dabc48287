"""The CAP 1.2 rules the XSD cannot express, checked on the element tree (kind "semantic").

Each rule reads what it needs and skips what it cannot read: values the schema check already
refuses (a malformed date, say) are not reported twice.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime

from tocsin.cap.datatypes import BadValue, read_datetime, read_decimal, read_list
from tocsin.cap.model import MsgType, Reference, Scope
from tocsin.cap.shapes import Issue, read_circle, read_polygon
from tocsin.cap.xmltree import Element, cap_children, cap_text, join_path, text_of
from tocsin.errors import (
    CAP_ADDRESSES_REQUIRED,
    CAP_CEILING_BELOW_ALTITUDE,
    CAP_CEILING_WITHOUT_ALTITUDE,
    CAP_DEREF_URI_NOT_BASE64,
    CAP_EXPIRES_BEFORE_SENT,
    CAP_EXPIRES_BEFORE_START,
    CAP_FORBIDDEN_CHARACTERS,
    CAP_LIST_MALFORMED,
    CAP_REFERENCES_MALFORMED,
    CAP_REFERENCES_REQUIRED,
    CAP_RESTRICTION_REQUIRED,
    Problem,
    Violation,
)

# CAP 1.2 §3.2.1: identifier and sender "MUST NOT include spaces, commas or restricted
# characters (< and &)".
_FORBIDDEN = re.compile(r"[\s,<&]")
# Update, Cancel, Ack and Error act on earlier messages, which <references> must name.
_REFERRING = {MsgType.UPDATE.value, MsgType.CANCEL.value, MsgType.ACK.value, MsgType.ERROR.value}


def _violation(problem: Problem, path: str, detail: str) -> Violation:
    return Violation(problem=problem, path=path, detail=detail, kind="semantic")


def _moment(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return read_datetime(text)
    except BadValue:
        return None


def _decimal(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return read_decimal(text)
    except BadValue:
        return None


def read_reference(entry: str) -> Reference:
    """One `sender,identifier,sent` entry of <references>.

    Raises:
        BadValue: cap.references-malformed.
    """
    parts = entry.split(",")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise BadValue(CAP_REFERENCES_MALFORMED, f"{entry!r} is not sender,identifier,sent")
    try:
        sent = read_datetime(parts[2])
    except BadValue as bad:
        raise BadValue(CAP_REFERENCES_MALFORMED, f"{entry!r}: {bad.detail}") from None
    return Reference(sender=parts[0], identifier=parts[1], sent=sent)


def check_rules(root: Element) -> list[Violation]:
    """Every violation of CAP 1.2's semantic rules in a tree rooted at <alert>."""
    sink: list[Violation] = []
    _check_names(root, sink)
    _check_scope(root, sink)
    _check_references(root, sink)
    sent = _moment(cap_text(root, "sent"))
    for index, info in enumerate(cap_children(root, "info")):
        path = join_path("", "info", index)
        _check_times(info, sent, path, sink)
        for number, resource in enumerate(cap_children(info, "resource")):
            _check_resource(resource, join_path(path, "resource", number), sink)
        for number, area in enumerate(cap_children(info, "area")):
            _check_area(area, join_path(path, "area", number), sink)
    return sink


def _check_names(root: Element, sink: list[Violation]) -> None:
    for name in ("identifier", "sender"):
        text = cap_text(root, name)
        found = _FORBIDDEN.search(text or "")
        if found:
            detail = f"{text!r} contains {found.group()!r}; spaces, commas, '<' and '&' are not allowed"
            sink.append(_violation(CAP_FORBIDDEN_CHARACTERS, name, detail))


def _check_scope(root: Element, sink: list[Violation]) -> None:
    scope = cap_text(root, "scope")
    lists: dict[str, tuple[str, ...]] = {}
    for name in ("addresses", "incidents"):
        try:
            lists[name] = read_list(cap_text(root, name) or "")
        except BadValue as bad:
            sink.append(_violation(CAP_LIST_MALFORMED, name, bad.detail))
    if scope == Scope.RESTRICTED and not (cap_text(root, "restriction") or "").strip():
        sink.append(_violation(CAP_RESTRICTION_REQUIRED, "restriction", "scope is Restricted"))
    if scope == Scope.PRIVATE and lists.get("addresses") == ():
        sink.append(_violation(CAP_ADDRESSES_REQUIRED, "addresses", "scope is Private"))


def _check_references(root: Element, sink: list[Violation]) -> None:
    msg_type = cap_text(root, "msgType")
    entries = (cap_text(root, "references") or "").split()
    if msg_type in _REFERRING and not entries:
        detail = f"msgType {msg_type} needs <references> naming the earlier message(s)"
        sink.append(_violation(CAP_REFERENCES_REQUIRED, "references", detail))
    for index, entry in enumerate(entries):
        try:
            read_reference(entry)
        except BadValue as bad:
            sink.append(_violation(bad.problem, "references", f"entry {index}: {bad.detail}"))


def _check_times(info: Element, sent: datetime | None, path: str, sink: list[Violation]) -> None:
    expires = _moment(cap_text(info, "expires"))
    if expires is None:
        return
    where = join_path(path, "expires")
    if sent is not None and expires <= sent:
        sink.append(_violation(CAP_EXPIRES_BEFORE_SENT, where, f"expires {expires} is not after sent {sent}"))
    for name in ("effective", "onset"):
        start = _moment(cap_text(info, name))
        if start is not None and expires < start:
            sink.append(_violation(CAP_EXPIRES_BEFORE_START, where, f"expires {expires} is before {name} {start}"))


def _check_resource(resource: Element, path: str, sink: list[Violation]) -> None:
    data = cap_text(resource, "derefUri")
    if data is None:
        return
    try:
        base64.b64decode(re.sub(r"\s+", "", data), validate=True)
    except (binascii.Error, ValueError):
        sink.append(_violation(CAP_DEREF_URI_NOT_BASE64, join_path(path, "derefUri"), "not valid base64"))


def _shape_issues(area: Element, path: str, sink: list[Violation]) -> None:
    for name in ("polygon", "circle"):
        for index, element in enumerate(cap_children(area, name)):
            issues: list[Issue] = (
                read_polygon(text_of(element))[1] if name == "polygon" else read_circle(text_of(element))[1]
            )
            where = join_path(path, name, index)
            sink.extend(_violation(problem, where, detail) for problem, detail in issues)


def _check_area(area: Element, path: str, sink: list[Violation]) -> None:
    _shape_issues(area, path, sink)
    ceiling_text = cap_text(area, "ceiling")
    if ceiling_text is None:
        return
    where = join_path(path, "ceiling")
    altitude, ceiling = _decimal(cap_text(area, "altitude")), _decimal(ceiling_text)
    if cap_text(area, "altitude") is None:
        sink.append(_violation(CAP_CEILING_WITHOUT_ALTITUDE, where, "<ceiling> needs <altitude>"))
    elif altitude is not None and ceiling is not None and ceiling < altitude:
        detail = f"ceiling {ceiling} is below altitude {altitude}"
        sink.append(_violation(CAP_CEILING_BELOW_ALTITUDE, where, detail))

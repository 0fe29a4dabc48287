"""The CAP 1.2 rules the XSD cannot express, checked on the element tree (kind "semantic").

Only what the text of CAP 1.2 (OASIS Standard, 1 July 2010) requires is here, and each rule
cites its clause: valid CAP is judged as the standard does, no stricter. What tocsin declines
to distribute although CAP allows it (an info that expires when it is sent, say) is policy,
in `tocsin.policy`, not here.

Each rule reads what it needs and skips what it cannot read: values the schema check already
refuses (a malformed date, say) are not reported twice.
"""

from __future__ import annotations

import base64
import binascii
import re

from tocsin.cap.datatypes import BadValue, read_datetime, read_list
from tocsin.cap.model import MsgType, Reference, Scope
from tocsin.cap.shapes import Issue, read_circle, read_polygon
from tocsin.cap.xmltree import Element, cap_children, cap_text, join_path, text_of
from tocsin.errors import (
    CAP_ADDRESSES_REQUIRED,
    CAP_CEILING_WITHOUT_ALTITUDE,
    CAP_DEREF_URI_NOT_BASE64,
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
# CAP 1.2 §3.2.1 msgType: Update, Cancel, Ack and Error act on "the earlier message(s)
# identified in <references>"; without them there is nothing the message acts on.
_REFERRING = {MsgType.UPDATE.value, MsgType.CANCEL.value, MsgType.ACK.value, MsgType.ERROR.value}


def _violation(problem: Problem, path: str, detail: str) -> Violation:
    return Violation(problem=problem, path=path, detail=detail, kind="semantic")


def read_reference(entry: str) -> Reference:
    """One `sender,identifier,sent` entry of <references>.

    CAP 1.2 §3.2.1 references: "the extended message identifier(s) (in the form
    sender,identifier,sent)", several "SHALL be separated by whitespace".

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
    for index, info in enumerate(cap_children(root, "info")):
        path = join_path("", "info", index)
        for number, resource in enumerate(cap_children(info, "resource")):
            _check_resource(resource, join_path(path, "resource", number), sink)
        for number, area in enumerate(cap_children(info, "area")):
            _check_area(area, join_path(path, "area", number), sink)
    return sink


def _check_names(root: Element, sink: list[Violation]) -> None:
    # CAP 1.2 §3.2.1 identifier and sender, cited at _FORBIDDEN.
    for name in ("identifier", "sender"):
        text = cap_text(root, name)
        found = _FORBIDDEN.search(text or "")
        if found:
            detail = f"{text!r} contains {found.group()!r}; spaces, commas, '<' and '&' are not allowed"
            sink.append(_violation(CAP_FORBIDDEN_CHARACTERS, name, detail))


def _check_scope(root: Element, sink: list[Violation]) -> None:
    # CAP 1.2 §3.2.1 addresses and incidents: space-delimited; an item with whitespace "MUST be
    # enclosed in double-quotes" (addresses), "SHALL be surrounded by double-quotes" (incidents).
    # restriction is "(conditional)", "used when <scope> value is 'Restricted'"; addresses is
    # "Required when <scope> is 'Private'".
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


def _check_resource(resource: Element, path: str, sink: list[Violation]) -> None:
    # CAP 1.2 §3.2.3 derefUri: "The base-64 encoded data content of the resource file".
    data = cap_text(resource, "derefUri")
    if data is None:
        return
    try:
        base64.b64decode(re.sub(r"\s+", "", data), validate=True)
    except (binascii.Error, ValueError):
        sink.append(_violation(CAP_DEREF_URI_NOT_BASE64, join_path(path, "derefUri"), "not valid base64"))


def _shape_issues(area: Element, path: str, sink: list[Violation]) -> None:
    # CAP 1.2 §3.2.4 polygon and circle; the clauses are cited in cap/shapes.py.
    for name in ("polygon", "circle"):
        for index, element in enumerate(cap_children(area, name)):
            issues: list[Issue] = (
                read_polygon(text_of(element))[1] if name == "polygon" else read_circle(text_of(element))[1]
            )
            where = join_path(path, name, index)
            sink.extend(_violation(problem, where, detail) for problem, detail in issues)


def _check_area(area: Element, path: str, sink: list[Violation]) -> None:
    _shape_issues(area, path, sink)
    # CAP 1.2 §3.2.4 ceiling: "MUST NOT be used except in combination with the <altitude>
    # element". A ceiling below the altitude is not forbidden by the text: policy.py.
    if cap_text(area, "ceiling") is not None and cap_text(area, "altitude") is None:
        sink.append(_violation(CAP_CEILING_WITHOUT_ALTITUDE, join_path(path, "ceiling"), "<ceiling> needs <altitude>"))

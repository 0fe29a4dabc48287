"""A checked CAP element tree -> the typed model; run only once the tree broke no rule."""

from __future__ import annotations

from datetime import datetime

from tocsin.cap.datatypes import read_datetime, read_decimal, read_integer, read_language, read_list
from tocsin.cap.model import (
    Alert,
    Area,
    Category,
    Certainty,
    Circle,
    Info,
    MsgType,
    Polygon,
    Resource,
    ResponseType,
    Scope,
    Severity,
    Status,
    Urgency,
    ValuePair,
)
from tocsin.cap.rules import read_reference
from tocsin.cap.shapes import read_circle, read_polygon
from tocsin.cap.xmltree import DSIG_NS, Element, canonical, cap_children, cap_text, elements, namespace, text_of


def _required(parent: Element, name: str) -> str:
    text = cap_text(parent, name)
    assert text is not None, f"<{name}> was checked present"
    return text


def _texts(parent: Element, name: str) -> tuple[str, ...]:
    return tuple(text_of(child) for child in cap_children(parent, name))


def _moment(parent: Element, name: str) -> datetime | None:
    text = cap_text(parent, name)
    return None if text is None else read_datetime(text)


def _pairs(parent: Element, name: str) -> tuple[ValuePair, ...]:
    return tuple(
        ValuePair(value_name=_required(pair, "valueName"), value=_required(pair, "value"))
        for pair in cap_children(parent, name)
    )


def _polygon(element: Element) -> Polygon:
    return read_polygon(text_of(element))[0]


def _circle(element: Element) -> Circle:
    circle = read_circle(text_of(element))[0]
    assert circle is not None, "the circle was checked"
    return circle


def _decimal(parent: Element, name: str) -> float | None:
    text = cap_text(parent, name)
    return None if text is None else read_decimal(text)


def build_area(area: Element) -> Area:
    """An <area> as an Area."""
    return Area(
        area_desc=_required(area, "areaDesc"),
        polygons=tuple(_polygon(element) for element in cap_children(area, "polygon")),
        circles=tuple(_circle(element) for element in cap_children(area, "circle")),
        geocodes=_pairs(area, "geocode"),
        altitude=_decimal(area, "altitude"),
        ceiling=_decimal(area, "ceiling"),
    )


def build_resource(resource: Element) -> Resource:
    """A <resource> as a Resource."""
    size = cap_text(resource, "size")
    return Resource(
        resource_desc=_required(resource, "resourceDesc"),
        mime_type=_required(resource, "mimeType"),
        size=None if size is None else read_integer(size),
        uri=cap_text(resource, "uri"),
        deref_uri=cap_text(resource, "derefUri"),
        digest=cap_text(resource, "digest"),
    )


def build_info(info: Element) -> Info:
    """An <info> as an Info; an absent or empty <language> is en-US."""
    return Info(
        language=read_language(cap_text(info, "language") or ""),
        categories=tuple(Category(text) for text in _texts(info, "category")),
        event=_required(info, "event"),
        response_types=tuple(ResponseType(text) for text in _texts(info, "responseType")),
        urgency=Urgency(_required(info, "urgency")),
        severity=Severity(_required(info, "severity")),
        certainty=Certainty(_required(info, "certainty")),
        audience=cap_text(info, "audience"),
        event_codes=_pairs(info, "eventCode"),
        effective=_moment(info, "effective"),
        onset=_moment(info, "onset"),
        expires=_moment(info, "expires"),
        sender_name=cap_text(info, "senderName"),
        headline=cap_text(info, "headline"),
        description=cap_text(info, "description"),
        instruction=cap_text(info, "instruction"),
        web=cap_text(info, "web"),
        contact=cap_text(info, "contact"),
        parameters=_pairs(info, "parameter"),
        resources=tuple(build_resource(element) for element in cap_children(info, "resource")),
        areas=tuple(build_area(element) for element in cap_children(info, "area")),
    )


def build_alert(root: Element) -> Alert:
    """An <alert> as an Alert; XML-DSig children are kept as canonical text."""
    sent = _moment(root, "sent")
    assert sent is not None, "<sent> was checked present"
    return Alert(
        identifier=_required(root, "identifier"),
        sender=_required(root, "sender"),
        sent=sent,
        status=Status(_required(root, "status")),
        msg_type=MsgType(_required(root, "msgType")),
        source=cap_text(root, "source"),
        scope=Scope(_required(root, "scope")),
        restriction=cap_text(root, "restriction"),
        addresses=read_list(cap_text(root, "addresses") or ""),
        codes=_texts(root, "code"),
        note=cap_text(root, "note"),
        references=tuple(read_reference(entry) for entry in (cap_text(root, "references") or "").split()),
        incidents=read_list(cap_text(root, "incidents") or ""),
        infos=tuple(build_info(element) for element in cap_children(root, "info")),
        extensions=tuple(canonical(child) for child in elements(root) if namespace(child) == DSIG_NS),
    )

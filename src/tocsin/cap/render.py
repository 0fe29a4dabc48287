"""Alert -> CAP 1.2: deterministic UTF-8 XML, and the JSON form `parse_json` reads."""

from __future__ import annotations

from lxml import etree

from tocsin.cap.datatypes import format_datetime
from tocsin.cap.from_json import EXTENSIONS_KEY, tree_from_json
from tocsin.cap.model import Alert, Area, Info, Resource, ValuePair
from tocsin.cap.schema import check_schema
from tocsin.cap.shapes import format_circle, format_polygon
from tocsin.cap.xmltree import DSIG_NS, elements, namespace
from tocsin.errors import CapInvalid

# A JSON object as to_json builds it.
JsonObject = dict[str, object]


def _compact(obj: dict[str, object]) -> JsonObject:
    """Drop absent values and empty lists: the JSON form omits them, as XML does."""
    return {key: value for key, value in obj.items() if value is not None and value != []}


def _pairs(pairs: tuple[ValuePair, ...]) -> list[object]:
    return [{"valueName": pair.value_name, "value": pair.value} for pair in pairs]


def _area(area: Area) -> JsonObject:
    return _compact({
        "areaDesc": area.area_desc,
        "polygon": [format_polygon(polygon) for polygon in area.polygons],
        "circle": [format_circle(circle) for circle in area.circles],
        "geocode": _pairs(area.geocodes),
        "altitude": area.altitude,
        "ceiling": area.ceiling,
    })


def _resource(resource: Resource) -> JsonObject:
    return _compact({
        "resourceDesc": resource.resource_desc,
        "mimeType": resource.mime_type,
        "size": resource.size,
        "uri": resource.uri,
        "derefUri": resource.deref_uri,
        "digest": resource.digest,
    })


def _info(info: Info) -> JsonObject:
    return _compact({
        "language": info.language,
        "category": [str(category) for category in info.categories],
        "event": info.event,
        "responseType": [str(response) for response in info.response_types],
        "urgency": str(info.urgency),
        "severity": str(info.severity),
        "certainty": str(info.certainty),
        "audience": info.audience,
        "eventCode": _pairs(info.event_codes),
        "effective": None if info.effective is None else format_datetime(info.effective),
        "onset": None if info.onset is None else format_datetime(info.onset),
        "expires": None if info.expires is None else format_datetime(info.expires),
        "senderName": info.sender_name,
        "headline": info.headline,
        "description": info.description,
        "instruction": info.instruction,
        "web": info.web,
        "contact": info.contact,
        "parameter": _pairs(info.parameters),
        "resource": [_resource(resource) for resource in info.resources],
        "area": [_area(area) for area in info.areas],
    })


def to_json(alert: Alert) -> JsonObject:
    """The JSON form of `alert` (JSON-serialisable; date-times as CAP strings)."""
    references = [f"{ref.sender},{ref.identifier},{format_datetime(ref.sent)}" for ref in alert.references]
    return _compact({
        "identifier": alert.identifier,
        "sender": alert.sender,
        "sent": format_datetime(alert.sent),
        "status": str(alert.status),
        "msgType": str(alert.msg_type),
        "source": alert.source,
        "scope": str(alert.scope),
        "restriction": alert.restriction,
        "addresses": list(alert.addresses),
        "code": list(alert.codes),
        "note": alert.note,
        "references": references,
        "incidents": list(alert.incidents),
        "info": [_info(info) for info in alert.infos],
        EXTENSIONS_KEY: list(alert.extensions),
    })


def to_xml(alert: Alert) -> bytes:
    """`alert` as CAP 1.2 XML: UTF-8 with a declaration, indented, the same bytes every time.

    Raises:
        CapInvalid: the alert cannot be written as schema-valid CAP 1.2 (a naive datetime or
        one with microseconds, a NaN altitude, a control character, a foreign extension).
    """
    root, violations = tree_from_json(to_json(alert))
    signatures = [child for child in elements(root) if namespace(child) == DSIG_NS]
    for signature in signatures:
        root.remove(signature)
    # Indent the CAP elements only: whitespace added inside a signature would change it.
    etree.indent(root, space="  ")
    for signature in signatures:
        root[-1].tail = "\n  "
        signature.tail = "\n"
        root.append(signature)
    violations += check_schema(root)
    if violations:
        raise CapInvalid(tuple(violations))
    rendered: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return rendered

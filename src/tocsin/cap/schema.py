"""The structure of CAP 1.2 as the OASIS XSD declares it, and the check of a tree against it.

The check reports what `CAP-v1.2.xsd` refuses, and nothing else, as violations of kind
"schema"; tests compare its verdict with libxml2's on every fixture and many mutations.
Two deliberate differences from libxml2: `xsi:type` and `xsi:nil` are refused everywhere
(the XSD admits a few redundant uses of them; CAP never needs them), and an XML-DSig element
before an <info> is refused, as the XSD's sequence says (libxml2 2.14 lets it through).
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from tocsin.cap import datatypes
from tocsin.cap.model import Category, Certainty, MsgType, ResponseType, Scope, Severity, Status, Urgency
from tocsin.cap.xmltree import (
    CAP_NS,
    DSIG_NS,
    XML_WHITESPACE,
    XSI_NS,
    Element,
    elements,
    join_path,
    local_name,
    namespace,
    text_of,
)
from tocsin.errors import (
    CAP_ATTRIBUTE_NOT_ALLOWED,
    CAP_ELEMENT_IN_TEXT,
    CAP_ENUM,
    CAP_ORDER,
    CAP_REQUIRED,
    CAP_TEXT_NOT_ALLOWED,
    CAP_TOO_MANY,
    CAP_UNKNOWN_ELEMENT,
    CAP_WRONG_NAMESPACE,
    CAP_WRONG_ROOT,
    Violation,
)


class Lexical(StrEnum):
    """The XSD simple type of an element's text."""

    STRING = "string"
    DATETIME = "dateTime"
    LANGUAGE = "language"
    URI = "anyURI"
    INTEGER = "integer"
    DECIMAL = "decimal"
    ENUM = "enumeration"


@dataclass(frozen=True, slots=True, kw_only=True)
class ComplexType:
    """An element-only sequence; `signatures` admits XML-DSig elements at its end."""

    fields: tuple[Field, ...]
    signatures: bool = False
    # "{urn:...cap:1.2}name" -> index in `fields`, for a quick lookup of each child.
    positions: dict[str, int] = dataclasses.field(init=False, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        positions = {f"{{{CAP_NS}}}{declared.name}": index for index, declared in enumerate(self.fields)}
        object.__setattr__(self, "positions", positions)


@dataclass(frozen=True, slots=True, kw_only=True)
class Field:
    """One element declaration of a sequence: name, type and occurrences."""

    name: str
    lexical: Lexical = Lexical.STRING
    choices: tuple[str, ...] = ()
    content: ComplexType | None = None
    min_occurs: int = 1
    max_occurs: int | None = 1  # None: unbounded

    @property
    def is_repeatable(self) -> bool:
        """Whether the element may occur more than once (its paths carry an index)."""
        return self.max_occurs != 1


def _optional(name: str, lexical: Lexical = Lexical.STRING) -> Field:
    return Field(name=name, lexical=lexical, min_occurs=0)


def _enum(name: str, values: type[StrEnum], *, min_occurs: int = 1, max_occurs: int | None = 1) -> Field:
    choices = tuple(member.value for member in values)
    return Field(name=name, lexical=Lexical.ENUM, choices=choices, min_occurs=min_occurs, max_occurs=max_occurs)


def _many(name: str, content: ComplexType | None = None, *, min_occurs: int = 0) -> Field:
    return Field(name=name, content=content, min_occurs=min_occurs, max_occurs=None)


VALUE_PAIR = ComplexType(fields=(Field(name="valueName"), Field(name="value")))
RESOURCE = ComplexType(
    fields=(
        Field(name="resourceDesc"),
        Field(name="mimeType"),
        _optional("size", Lexical.INTEGER),
        _optional("uri", Lexical.URI),
        _optional("derefUri"),
        _optional("digest"),
    )
)
AREA = ComplexType(
    fields=(
        Field(name="areaDesc"),
        _many("polygon"),
        _many("circle"),
        _many("geocode", VALUE_PAIR),
        _optional("altitude", Lexical.DECIMAL),
        _optional("ceiling", Lexical.DECIMAL),
    )
)
INFO = ComplexType(
    fields=(
        _optional("language", Lexical.LANGUAGE),
        _enum("category", Category, max_occurs=None),
        Field(name="event"),
        _enum("responseType", ResponseType, min_occurs=0, max_occurs=None),
        _enum("urgency", Urgency),
        _enum("severity", Severity),
        _enum("certainty", Certainty),
        _optional("audience"),
        _many("eventCode", VALUE_PAIR),
        _optional("effective", Lexical.DATETIME),
        _optional("onset", Lexical.DATETIME),
        _optional("expires", Lexical.DATETIME),
        _optional("senderName"),
        _optional("headline"),
        _optional("description"),
        _optional("instruction"),
        _optional("web", Lexical.URI),
        _optional("contact"),
        _many("parameter", VALUE_PAIR),
        _many("resource", RESOURCE),
        _many("area", AREA),
    )
)
ALERT = ComplexType(
    fields=(
        Field(name="identifier"),
        Field(name="sender"),
        Field(name="sent", lexical=Lexical.DATETIME),
        _enum("status", Status),
        _enum("msgType", MsgType),
        _optional("source"),
        _enum("scope", Scope),
        _optional("restriction"),
        _optional("addresses"),
        _many("code"),
        _optional("note"),
        _optional("references"),
        _optional("incidents"),
        _many("info", INFO),
    ),
    signatures=True,
)

_DSIG_PREFIX = f"{{{DSIG_NS}}}"
_OTHER_CAP_VERSIONS = {
    "urn:oasis:names:tc:emergency:cap:1.1": "CAP 1.1",
    "http://www.incident.com/cap/1.0": "CAP 1.0",
}
# libxml2 lets these through on any element; other attributes are undeclared in CAP 1.2.
_FREE_ATTRIBUTES = {f"{{{XSI_NS}}}schemaLocation", f"{{{XSI_NS}}}noNamespaceSchemaLocation"}


def check_root(root: Element) -> list[Violation]:
    """Whether the root is a CAP 1.2 <alert>; nothing else is checked when it is not."""
    found = namespace(root)
    name = local_name(root)
    if found != CAP_NS:
        version = _OTHER_CAP_VERSIONS.get(found or "", "")
        hint = f" ({version}; tocsin reads CAP 1.2 only)" if version else ""
        detail = f"root <{name}> is in namespace {found!r}{hint}, expected {CAP_NS!r}"
        return [Violation(problem=CAP_WRONG_NAMESPACE, path="alert", detail=detail)]
    if name != "alert":
        return [Violation(problem=CAP_WRONG_ROOT, path="alert", detail=f"root is <{name}>, expected <alert>")]
    return []


def check_schema(root: Element) -> list[Violation]:
    """Every violation of the CAP 1.2 XSD below a CAP 1.2 <alert> root."""
    sink: list[Violation] = []
    _check_attributes(root, "alert", sink)
    _check_sequence(root, ALERT, "", sink)
    return sink


def _check_attributes(element: Element, path: str, sink: list[Violation]) -> None:
    for name in element.attrib:
        if name not in _FREE_ATTRIBUTES:
            detail = f"attribute {name!r} is not allowed on <{local_name(element)}>"
            sink.append(Violation(problem=CAP_ATTRIBUTE_NOT_ALLOWED, path=path, detail=detail))


def _has_text(element: Element) -> bool:
    pieces = [element.text or "", *(child.tail or "" for child in element)]
    return any(piece.strip(XML_WHITESPACE) for piece in pieces)


def _position(ctype: ComplexType, child: Element) -> int | None:
    """The index of the child's declaration in the sequence; len(fields) is the DSig wildcard."""
    position = ctype.positions.get(child.tag)
    if position is None and ctype.signatures and child.tag.startswith(_DSIG_PREFIX):
        return len(ctype.fields)
    return position


def _check_sequence(element: Element, ctype: ComplexType, path: str, sink: list[Violation]) -> None:
    if _has_text(element):
        detail = f"<{local_name(element)}> holds text outside its child elements"
        sink.append(Violation(problem=CAP_TEXT_NOT_ALLOWED, path=path or "alert", detail=detail))
    counts = [0] * (len(ctype.fields) + 1)
    highest = -1
    for child in elements(element):
        position = _position(ctype, child)
        if position is None:
            _report_unknown(child, path, sink)
            continue
        occurrence = counts[position]
        counts[position] += 1
        if position == len(ctype.fields):
            highest = position
            continue
        field = ctype.fields[position]
        index = occurrence if field.is_repeatable or occurrence else None
        child_path = join_path(path, field.name, index)
        if position < highest:
            later = ctype.fields[highest].name if highest < len(ctype.fields) else "Signature"
            detail = f"<{field.name}> comes after <{later}>; CAP 1.2 puts it before"
            sink.append(Violation(problem=CAP_ORDER, path=child_path, detail=detail))
        highest = max(highest, position)
        if field.max_occurs is not None and occurrence >= field.max_occurs:
            detail = f"<{field.name}> may appear at most {field.max_occurs} time(s) here"
            sink.append(Violation(problem=CAP_TOO_MANY, path=child_path, detail=detail))
        _check_element(child, field, child_path, sink)
    for field, count in zip(ctype.fields, counts):
        if count < field.min_occurs:
            detail = f"<{field.name}> is required in <{local_name(element)}>"
            sink.append(Violation(problem=CAP_REQUIRED, path=join_path(path, field.name), detail=detail))


def _report_unknown(child: Element, path: str, sink: list[Violation]) -> None:
    found = namespace(child)
    name = local_name(child)
    if found == CAP_NS:
        detail = f"CAP 1.2 has no <{name}> here"
    else:
        detail = f"<{name}> in namespace {found!r} is not allowed here"
        if found != DSIG_NS:
            detail += "; only XML-DSig elements may extend CAP, at the end of <alert>"
    sink.append(Violation(problem=CAP_UNKNOWN_ELEMENT, path=join_path(path, name), detail=detail))


def _check_element(element: Element, field: Field, path: str, sink: list[Violation]) -> None:
    _check_attributes(element, path, sink)
    if field.content is not None:
        _check_sequence(element, field.content, path, sink)
        return
    inner = next(elements(element), None)
    if inner is not None:
        detail = f"<{field.name}> holds text only, but contains <{local_name(inner)}>"
        sink.append(Violation(problem=CAP_ELEMENT_IN_TEXT, path=path, detail=detail))
        return
    _check_value(text_of(element), field, path, sink)


_READERS: dict[Lexical, Callable[[str], object]] = {
    Lexical.DATETIME: datatypes.read_datetime,
    Lexical.LANGUAGE: datatypes.read_language,
    Lexical.URI: datatypes.read_uri,
    Lexical.INTEGER: datatypes.read_integer,
    Lexical.DECIMAL: datatypes.read_decimal,
}


def _check_value(text: str, field: Field, path: str, sink: list[Violation]) -> None:
    if field.lexical is Lexical.ENUM:
        if text not in field.choices:
            detail = f"{text!r} is not one of {', '.join(field.choices)}"
            sink.append(Violation(problem=CAP_ENUM, path=path, detail=detail))
        return
    reader = _READERS.get(field.lexical)
    if reader is None:
        return
    try:
        reader(text)
    except datatypes.BadValue as bad:
        sink.append(Violation(problem=bad.problem, path=path, detail=bad.detail))

"""The JSON form of CAP -> the same element tree XML gives, so both obey the same rules.

The JSON form is an object per CAP element with the CAP element names as keys (`msgType`,
`areaDesc`, `valueName`). A repeatable element is a list (`code`, `info`, `category`,
`polygon`, ...); every other value is a string, except `size` (a JSON integer) and
`altitude`/`ceiling` (JSON numbers). Polygons and circles are their CAP strings
("lat,lon lat,lon ...", "lat,lon radius"). `references`, `addresses` and `incidents` are
lists of strings (each reference "sender,identifier,sent"); their CAP string is accepted too.
`extensions` lists XML-DSig elements as XML text. null is the same as an absent key.
"""

from __future__ import annotations

from collections.abc import Mapping

from tocsin.cap.datatypes import format_decimal, format_list
from tocsin.cap.schema import ALERT, ComplexType, Field, Lexical
from tocsin.cap.xmltree import Element, add_child, join_path, new_alert_root, read_xml
from tocsin.errors import CAP_JSON_TYPE, CAP_UNKNOWN_ELEMENT, CapInvalid, Violation

EXTENSIONS_KEY = "extensions"
# Alert elements whose CAP text is a space-separated list.
_LISTS = {"references", "addresses", "incidents"}
_EXTENSION_MAX_BYTES = 1_048_576


def _wrong_type(path: str, expected: str, value: object, sink: list[Violation]) -> None:
    detail = f"expected {expected}, got {type(value).__name__}"
    sink.append(Violation(problem=CAP_JSON_TYPE, path=path or "alert", detail=detail))


def tree_from_json(obj: object) -> tuple[Element, list[Violation]]:
    """The <alert> tree a JSON form stands for, and the JSON-level violations met on the way.

    Raises:
        CapInvalid: `obj` is not a JSON object at all.
    """
    sink: list[Violation] = []
    if not isinstance(obj, Mapping):
        _wrong_type("", "a JSON object", obj, sink)
        raise CapInvalid(tuple(sink))
    root = new_alert_root()
    _fill(root, obj, ALERT, "", sink)
    extensions = obj.get(EXTENSIONS_KEY)
    if extensions is not None:
        _add_extensions(root, extensions, sink)
    return root, sink


def _fill(element: Element, obj: Mapping[object, object], ctype: ComplexType, path: str, sink: list[Violation]) -> None:
    names = {field.name for field in ctype.fields}
    for key in obj:
        if key not in names and not (ctype is ALERT and key == EXTENSIONS_KEY):
            detail = f"CAP 1.2 has no element {key!r} here"
            sink.append(Violation(problem=CAP_UNKNOWN_ELEMENT, path=join_path(path, str(key)), detail=detail))
    for field in ctype.fields:
        value = obj.get(field.name)
        if value is None:
            continue
        where = join_path(path, field.name)
        if not field.is_repeatable:
            _add(element, field, value, where, sink)
        elif not isinstance(value, list):
            _wrong_type(where, "a list", value, sink)
        else:
            for index, item in enumerate(value):
                _add(element, field, item, join_path(path, field.name, index), sink)


def _add(parent: Element, field: Field, value: object, path: str, sink: list[Violation]) -> None:
    if field.content is None:
        text = _text(field, value, path, sink)
        if text is not None:
            add_child(parent, field.name, text, path, sink)
    elif isinstance(value, Mapping):
        _fill(add_child(parent, field.name, None, path, sink), value, field.content, path, sink)
    else:
        _wrong_type(path, "a JSON object", value, sink)


def _text(field: Field, value: object, path: str, sink: list[Violation]) -> str | None:
    """The CAP text of a JSON value, None (and a violation) when its JSON type is wrong."""
    if isinstance(value, bool):
        pass
    elif field.lexical is Lexical.INTEGER and isinstance(value, int):
        return str(value)
    elif field.lexical is Lexical.DECIMAL and isinstance(value, (int, float)):
        return str(value) if isinstance(value, int) else format_decimal(value)
    elif field.lexical in (Lexical.INTEGER, Lexical.DECIMAL):
        pass
    elif isinstance(value, str):
        return value
    elif path in _LISTS and isinstance(value, list):
        return _list_text(path, value, sink)
    expected = {Lexical.INTEGER: "an integer", Lexical.DECIMAL: "a number"}.get(field.lexical, "a string")
    _wrong_type(path, expected + (" or a list of strings" if path in _LISTS else ""), value, sink)
    return None


def _list_text(path: str, items: list[object], sink: list[Violation]) -> str | None:
    texts: list[str] = []
    for index, item in enumerate(items):
        if not isinstance(item, str):
            _wrong_type(join_path("", path, index), "a string", item, sink)
            return None
        texts.append(item)
    return " ".join(texts) if path == "references" else format_list(tuple(texts))


def _add_extensions(root: Element, extensions: object, sink: list[Violation]) -> None:
    if not isinstance(extensions, list):
        _wrong_type(EXTENSIONS_KEY, "a list of XML strings", extensions, sink)
        return
    for index, text in enumerate(extensions):
        where = join_path("", EXTENSIONS_KEY, index)
        if not isinstance(text, str):
            _wrong_type(where, "an XML string", text, sink)
            continue
        try:
            root.append(read_xml(text.encode("utf-8"), max_bytes=_EXTENSION_MAX_BYTES, path=where))
        except CapInvalid as invalid:
            sink.extend(invalid.violations)

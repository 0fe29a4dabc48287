"""Untrusted CAP 1.2 (XML bytes or the JSON form) -> a checked Alert, or every broken rule."""

from __future__ import annotations

from tocsin.cap.build import build_alert
from tocsin.cap.from_json import tree_from_json
from tocsin.cap.model import Alert
from tocsin.cap.rules import check_rules
from tocsin.cap.schema import check_root, check_schema
from tocsin.cap.xmltree import Element, read_xml
from tocsin.errors import CapInvalid, Violation

DEFAULT_MAX_BYTES = 1_048_576


def check_tree(root: Element) -> list[Violation]:
    """Every schema and semantic violation in an element tree; empty when it is valid CAP 1.2."""
    wrong_root = check_root(root)
    if wrong_root:
        return wrong_root
    return check_schema(root) + check_rules(root)


def _alert(root: Element, earlier: list[Violation]) -> Alert:
    violations = earlier + check_tree(root)
    if violations:
        raise CapInvalid(tuple(violations))
    return build_alert(root)


def parse_xml(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Alert:
    """A checked Alert from CAP 1.2 XML, read with the encoding its declaration names.

    The size is checked before any parsing; a DOCTYPE, entities and network access are refused.

    Raises:
        CapInvalid: listing every violation found.
    """
    return _alert(read_xml(data, max_bytes=max_bytes), [])


def parse_stored(data: bytes) -> Alert:
    """An Alert from a payload tocsin rendered and stored itself, checked when it was accepted.

    The schema and rule checks cost as much as the rest of the parse, and every node parses
    every stored alert, so they are skipped here; a payload that does not build goes through
    the full checks, so a broken one is still refused with its violations.

    Raises:
        CapInvalid: the payload is not a valid CAP 1.2 alert.
    """
    root = read_xml(data, max_bytes=DEFAULT_MAX_BYTES)
    try:
        return build_alert(root)
    except Exception:  # noqa: BLE001 - anything build_alert trips on is judged by the checks
        return _alert(root, [])


def parse_json(obj: object) -> Alert:
    """A checked Alert from the JSON form (see `tocsin.cap.from_json`), under the XML rules.

    Raises:
        CapInvalid: listing every violation found, JSON type errors included.
    """
    root, violations = tree_from_json(obj)
    return _alert(root, violations)

"""tocsin's schema verdict equals the official XSD's on thousands of mutated real alerts.

Each valid fixture is broken in many deterministic ways (elements dropped, duplicated,
swapped, moved into the wrong parent, unknown elements, attributes, text where only elements
go, and every lexical type given edge-case values); for each document the XSD decides, and
tocsin must report a schema violation exactly when the XSD refuses.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lxml import etree

from tests.cap.capdata import CAP, MAX_BYTES, VALID, schema_violations, violations_of, xsd_accepts
from tocsin.cap.parse import parse_xml
from tocsin.cap.render import to_xml

DSIG = "http://www.w3.org/2000/09/xmldsig#"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
Mutation = Callable[[etree._Element], None]

ENUM_VALUES = ["Bogus", " Actual", "actual", "", "Met ", "Very Likely", "AllClear", "None"]
DATETIMES = [
    "2024-13-01T10:00:00+01:00", "2024-02-30T10:00:00+01:00", "2023-02-29T10:00:00+01:00",
    "2024-02-29T10:00:00+01:00", "2024-01-01T10:00:00Z", "2024-01-01T10:00:00",
    "2024-01-01T10:00:00.5+01:00", "2024-01-01T24:00:00+00:00", "2024-01-01T24:00:01+00:00",
    "2024-01-01T23:59:60+00:00", "2024-01-01T10:00:00+14:00", "2024-01-01T10:00:00+14:01",
    "2024-01-01T10:00:00,01:00", " 2024-01-01T10:00:00+01:00\n", "0000-01-01T00:00:00+00:00",
    "24-01-01T10:00:00+01:00", "2024-01-01 10:00:00+01:00", "", "2024-01-01T10:00:00+0100",
    "1900-02-29T10:00:00+00:00", "2000-02-29T10:00:00-00:00", "2024-01-01T10:60:00+01:00",
]
LANGUAGES = ["en_US", "", "  ", "x-klingon", "en-US-abcdefghi", "abcdefghi", "fr", " de-DE ", "1a", "a--b"]
URIS = [
    "%zz", "http://x:/", "http://[::1", "http://[::1]:80/a", "a b", "#a#b", ":x", "", "http://x:99999999999",
    "http://x:8080/p?q=1#f[2]", "mailto:a@b", "urn:oid:1.2", "//host/p", "a:b:c", "http://é.fr/ü", "x?y#z",
    "http://u:p@h/", "http://h/%4", "\\\\share\\f",
]
INTEGERS = ["1.5", "-3", " 7 ", "", "abc", "+0", "1 000", "٣"]
DECIMALS = ["1e3", ".5", "5.", "", "+-1", " 2 ", ".", "-.5", "NaN", "1,5"]
TEXTS = ["", " spaced ", "a<b&c"]

VALUES_BY_NAME: dict[str, list[str]] = {
    **{name: ENUM_VALUES for name in (
        "status", "msgType", "scope", "category", "responseType", "urgency", "severity", "certainty")},
    **{name: DATETIMES for name in ("sent", "effective", "onset", "expires")},
    "language": LANGUAGES,
    "web": URIS,
    "uri": URIS,
    "size": INTEGERS,
    "altitude": DECIMALS,
    "ceiling": DECIMALS,
}


def _is_cap(element: etree._Element) -> bool:
    return isinstance(element.tag, str) and etree.QName(element).namespace == CAP


def _kind(element: etree._Element) -> str:
    names = [etree.QName(node).localname for node in (element, *element.iterancestors())]
    return "/".join(reversed(names))


def drop(e: etree._Element) -> None:
    e.getparent().remove(e)


def duplicate(e: etree._Element) -> None:
    e.addnext(copy.deepcopy(e))


def swap_next(e: etree._Element) -> None:
    following = e.getnext()
    while following is not None and not isinstance(following.tag, str):
        following = following.getnext()
    if following is not None:
        following.addnext(e)


def move_after_parent(e: etree._Element) -> None:
    parent = e.getparent()
    if parent.getparent() is not None:
        parent.addnext(e)


def move_into_previous(e: etree._Element) -> None:
    previous = e.getprevious()
    if previous is not None and len(previous):
        previous.append(e)


def attribute(e: etree._Element) -> None:
    e.set("lang", "en")


def schema_location(e: etree._Element) -> None:
    e.set(f"{{{XSI}}}schemaLocation", f"{CAP} cap.xsd")


def nil(e: etree._Element) -> None:
    e.set(f"{{{XSI}}}nil", "true")


def inner_junk(e: etree._Element) -> None:
    if len(e):
        e.text = "junk"
    else:
        etree.SubElement(e, f"{{{CAP}}}b")


def unknown_child(e: etree._Element) -> None:
    if len(e):
        e.insert(0, etree.Element(f"{{{CAP}}}bogus"))


def foreign_child(e: etree._Element) -> None:
    if len(e):
        e.append(etree.Element("{urn:example:other}extra"))


def signature_child(e: etree._Element) -> None:
    if len(e):
        e.append(etree.Element(f"{{{DSIG}}}Signature"))


def comment_inside(e: etree._Element) -> None:
    if not len(e) and e.text and len(e.text) > 1:
        comment = etree.Comment("c")
        e.text, comment.tail = e.text[:1], e.text[1:]
        e.append(comment)


STRUCTURAL: tuple[Mutation, ...] = (
    drop, duplicate, swap_next, move_after_parent, move_into_previous, attribute, schema_location, nil,
    inner_junk, unknown_child, foreign_child, signature_child, comment_inside,
)


def _set_text(value: str) -> Mutation:
    def set_text(e: etree._Element) -> None:
        for child in list(e):
            e.remove(child)
        e.text = value

    return set_text


def _root_mutations() -> Iterator[tuple[str, Mutation]]:
    def signature_before_info(root: etree._Element) -> None:
        info = root.find(f"{{{CAP}}}info")
        if info is not None:
            info.addprevious(etree.Element(f"{{{DSIG}}}Signature"))

    def no_namespace_at_end(root: etree._Element) -> None:
        root.append(etree.Element("Signature"))

    def text_in_root(root: etree._Element) -> None:
        root[0].tail = " stray text "

    def signature_at_end(root: etree._Element) -> None:
        etree.SubElement(root, f"{{{DSIG}}}Object").text = "anything"

    for mutation in (signature_before_info, no_namespace_at_end, text_in_root, signature_at_end):
        yield mutation.__name__, mutation


def _trimmed(root: etree._Element, keep: int = 2) -> etree._Element:
    """The fixture with at most `keep` CAP siblings of a kind: same structure, fewer bytes."""
    for parent in [node for node in root.iter() if _is_cap(node)]:
        counts: dict[str, int] = {}
        for child in list(parent):
            if _is_cap(child):
                counts[child.tag] = counts.get(child.tag, 0) + 1
                if counts[child.tag] > keep:
                    parent.remove(child)
        if parent.tag == f"{{{CAP}}}polygon" and len(parent.text or "") > 2000:
            points = (parent.text or "").split()
            parent.text = " ".join([*points[:20], points[0]])
    return root


def mutants(path: Path, value_kinds_seen: set[str]) -> Iterator[tuple[str, bytes]]:
    """(label, document) for every mutation of one fixture."""
    original = _trimmed(etree.fromstring(path.read_bytes()))
    nodes = [node for node in original.iter() if _is_cap(node) and node is not original]
    kinds_seen: set[str] = set()
    plans: list[tuple[str, int | None, Mutation]] = [(name, None, m) for name, m in _root_mutations()]
    for index, node in enumerate(original.iter()):
        if node not in nodes or _kind(node) in kinds_seen:
            continue
        kinds_seen.add(_kind(node))
        plans.extend((f"{_kind(node)}:{m.__name__}", index, m) for m in STRUCTURAL)
        local = etree.QName(node).localname
        if not len(node) and _kind(node) not in value_kinds_seen:
            value_kinds_seen.add(_kind(node))
            for value in VALUES_BY_NAME.get(local, TEXTS):
                plans.append((f"{_kind(node)}={value!r}", index, _set_text(value)))
    for label, position, mutation in plans:
        root = copy.deepcopy(original)
        target = root if position is None else list(root.iter())[position]
        mutation(target)
        yield label, etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _signature_before_info(document: bytes) -> bool:
    """libxml2 (2.14) wrongly lets XML-DSig elements interleave with <info>.

    The XSD's sequence puts `info*` before the DSig wildcard; the `xmlschema` package
    (4.3.2, use_fallback=False) refuses such a document, as tocsin does.
    """
    tags = [child.tag for child in etree.fromstring(document) if isinstance(child.tag, str)]
    first = next((index for index, tag in enumerate(tags) if tag.startswith(f"{{{DSIG}}}")), None)
    return first is not None and f"{{{CAP}}}info" in tags[first:]


def xsd_verdict(document: bytes) -> bool:
    """The XSD's verdict, libxml2's one known mistake corrected."""
    return xsd_accepts(document) and not _signature_before_info(document)


def test_libxml2_quirk_is_real_and_tocsin_follows_the_xsd() -> None:
    signature = f'<Signature xmlns="{DSIG}"/>'
    document = etree.tostring(etree.fromstring(
        (VALID[0]).read_bytes()), encoding="UTF-8").replace(b"<info>", signature.encode() + b"<info>", 1)
    assert _signature_before_info(document)
    assert xsd_accepts(document)
    assert "cap.order" in {v.problem.code for v in schema_violations(document)}


@pytest.fixture(scope="module")
def value_kinds_seen() -> set[str]:
    return set()


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_schema_verdict_equals_the_xsd_on_mutations(path: Path, value_kinds_seen: set[str]) -> None:
    disagreements = []
    refused = 0
    for label, document in mutants(path, value_kinds_seen):
        xsd_ok = xsd_verdict(document)
        refused += not xsd_ok
        found = schema_violations(document)
        if xsd_ok == bool(found):
            disagreements.append((label, xsd_ok, [(v.problem.code, v.path) for v in found]))
    assert not disagreements, disagreements[:10]
    assert refused >= 20, "the mutations must actually break the schema"


@pytest.mark.parametrize("path", VALID[:8], ids=lambda p: p.name)
def test_mutants_tocsin_accepts_round_trip(path: Path) -> None:
    accepted = 0
    for _label, document in mutants(path, set()):
        if not violations_of(document):
            alert = parse_xml(document, max_bytes=MAX_BYTES)
            assert parse_xml(to_xml(alert)) == alert
            accepted += 1
    assert accepted >= 10

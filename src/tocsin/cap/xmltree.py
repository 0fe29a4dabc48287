"""CAP element trees: the hardened XML reader and the small accessors every CAP module uses."""

from __future__ import annotations

import re
from collections.abc import Iterator

from lxml import etree
from lxml.etree import _Element as Element  # re-exported: the type of every CAP tree node

from tocsin.errors import (
    CAP_DOCTYPE_FORBIDDEN,
    CAP_INVALID_CHARACTER,
    CAP_NOT_XML,
    CAP_TOO_LARGE,
    CapInvalid,
    Violation,
)

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
DSIG_NS = "http://www.w3.org/2000/09/xmldsig#"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
XML_WHITESPACE = " \t\r\n"

__all__ = [
    "CAP_NS",
    "DSIG_NS",
    "XSI_NS",
    "XML_WHITESPACE",
    "Element",
    "add_child",
    "canonical",
    "cap_children",
    "cap_text",
    "elements",
    "join_path",
    "local_name",
    "namespace",
    "new_alert_root",
    "read_xml",
    "text_of",
]

# A DOCTYPE can only follow the XML declaration, comments, PIs and whitespace (XML 1.0 §2.8).
_PROLOG_DOCTYPE = re.compile(r"\ufeff?(?:[ \t\r\n]|<\?.*?\?>|<!--.*?-->)*<!DOCTYPE", re.DOTALL)


def _parser() -> etree.XMLParser:
    # No DTD, no entity expansion, no network, libxml2's depth and size limits kept.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=False,
    )


def _refuse(path: str, detail: str, *, doctype: bool) -> CapInvalid:
    # A DOCTYPE is well-formed XML that CAP 1.2 does not forbid: refusing it is tocsin's
    # policy against entity bombs and XXE, not a CAP rule.
    if doctype:
        return CapInvalid((Violation(problem=CAP_DOCTYPE_FORBIDDEN, path=path, detail=detail, kind="policy"),))
    return CapInvalid((Violation(problem=CAP_NOT_XML, path=path, detail=detail),))


def _has_prolog_doctype(data: bytes) -> bool:
    """Whether a DOCTYPE opens the document, whatever its encoding; nothing is parsed."""
    head = data[:65536].removeprefix(b"\xef\xbb\xbf")
    for codec, bom in (("utf-16", b"\xff\xfe"), ("utf-16", b"\xfe\xff"), ("utf-16-le", b"<\x00"), ("utf-16-be", b"\x00<")):
        if head.startswith(bom):
            text = head.decode(codec, errors="replace")
            break
    else:
        text = head.decode("latin-1")
    return _PROLOG_DOCTYPE.match(text) is not None


def read_xml(data: bytes, *, max_bytes: int, path: str = "alert") -> Element:
    """Parse untrusted bytes into a root element, honouring the declared encoding.

    Raises:
        CapInvalid: too large (checked before parsing), not XML, or a DOCTYPE/entities.
    """
    if len(data) > max_bytes:
        detail = f"{len(data)} bytes, the limit is {max_bytes}"
        raise CapInvalid((Violation(problem=CAP_TOO_LARGE, path=path, detail=detail, kind="policy"),))
    if _has_prolog_doctype(data):
        raise _refuse(path, "the document declares a DOCTYPE", doctype=True)
    try:
        root: Element | None = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise _refuse(path, str(exc), doctype=False) from None
    if root is None:
        raise _refuse(path, "the document is empty", doctype=False)
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise _refuse(path, "the document declares a DOCTYPE", doctype=True)
    if any(isinstance(node, etree._Entity) for node in root.iter()):
        raise _refuse(path, "the document uses entity references", doctype=True)
    return root


def local_name(element: Element) -> str:
    """The element's name without its namespace."""
    return str(etree.QName(element).localname)


def namespace(element: Element) -> str | None:
    """The element's namespace URI, None when it has none."""
    found = etree.QName(element).namespace
    return None if found is None else str(found)


def elements(parent: Element) -> Iterator[Element]:
    """The child elements, skipping comments and processing instructions."""
    for child in parent:
        if isinstance(child.tag, str):
            yield child


def text_of(element: Element) -> str:
    """The element's character data, across comments and PIs inside it."""
    parts = [element.text or ""]
    parts.extend(child.tail or "" for child in element)
    return "".join(parts)


def cap_children(parent: Element, name: str) -> list[Element]:
    """The children named `name` in the CAP 1.2 namespace, in document order."""
    return list(parent.findall(f"{{{CAP_NS}}}{name}"))


def cap_text(parent: Element, name: str) -> str | None:
    """The text of the first CAP child named `name`, None when absent."""
    found = parent.find(f"{{{CAP_NS}}}{name}")
    return None if found is None else text_of(found)


def add_child(parent: Element, name: str, text: str | None, path: str, sink: list[Violation]) -> Element:
    """Append a CAP child element holding `text`; a character XML cannot carry goes to `sink`."""
    child: Element = etree.SubElement(parent, f"{{{CAP_NS}}}{name}")
    if text is not None:
        try:
            child.text = text
        except ValueError:
            detail = "the text holds a control character or NUL, which XML 1.0 cannot carry"
            sink.append(Violation(problem=CAP_INVALID_CHARACTER, path=path, detail=detail))
    return child


def new_alert_root() -> Element:
    """An empty <alert> in the CAP 1.2 namespace, as its default namespace."""
    root: Element = etree.Element(f"{{{CAP_NS}}}alert", nsmap={None: CAP_NS})
    return root


def canonical(element: Element) -> str:
    """The element as exclusive C14N text: stable however it was nested or prefixed."""
    text: bytes = etree.tostring(element, method="c14n", exclusive=True, with_comments=True)
    return text.decode("utf-8")


def join_path(parent: str, name: str, index: int | None = None) -> str:
    """`info[0]` + `area`, 1 -> `info[0].area[1]`."""
    step = name if index is None else f"{name}[{index}]"
    return f"{parent}.{step}" if parent else step

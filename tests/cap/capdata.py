"""The CAP fixtures in tests/data, and the official XSD as the tests' referee."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from lxml import etree

from tests.datafiles import CAP_DATA, cap_schema_path
from tocsin.cap.parse import parse_xml
from tocsin.errors import CapInvalid, Violation

VALID = sorted((CAP_DATA / "valid").glob("*.xml"))
INVALID = sorted((CAP_DATA / "invalid").glob("*.xml"))
CAP = "urn:oasis:names:tc:emergency:cap:1.2"
# Mutants of the largest fixture (880 kB) may pass the service's 1 MiB limit.
MAX_BYTES = 16 * 1_048_576


def official_schema() -> etree.XMLSchema:
    """The OASIS CAP 1.2 XSD, loaded only here in the tests; skips the test when it is absent."""
    return _load_schema(cap_schema_path())


@cache
def _load_schema(path: Path) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(path)))


def xsd_accepts(data: bytes) -> bool:
    """The XSD's verdict, with a parser as hardened as tocsin's."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError:
        return False
    return bool(official_schema().validate(root))


def violations_of(data: bytes) -> tuple[Violation, ...]:
    """Every violation tocsin finds; empty when it accepts the document."""
    try:
        parse_xml(data, max_bytes=MAX_BYTES)
    except CapInvalid as invalid:
        return invalid.violations
    return ()


def schema_violations(data: bytes) -> list[Violation]:
    """The violations of kind "schema" only."""
    return [violation for violation in violations_of(data) if violation.kind == "schema"]


def codes(violations: tuple[Violation, ...] | list[Violation]) -> set[str]:
    """The codes of `violations`."""
    return {violation.problem.code for violation in violations}


def minimal(*, alert_extra: str = "", info_extra: str = "", area_extra: str = "", head: str = "",
            sent: str = "2024-05-01T10:00:00+02:00", msg_type: str = "Alert", scope: str = "Public",
            expires: str = "2024-05-01T12:00:00+02:00") -> bytes:
    """A small valid CAP 1.2 document with places to add or change things."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="{CAP}">
  <identifier>T-1</identifier><sender>test@example.org</sender><sent>{sent}</sent>
  <status>Actual</status><msgType>{msg_type}</msgType><scope>{scope}</scope>{head}
  <info>
    <category>Met</category><event>Storm</event><urgency>Immediate</urgency>
    <severity>Severe</severity><certainty>Observed</certainty><expires>{expires}</expires>{info_extra}
    <area><areaDesc>Here</areaDesc>{area_extra}</area>
  </info>{alert_extra}
</alert>""".encode()


# A tsunami warning centre's cancellation, in the shape such centres send: the threat is
# over, so the message is no longer in effect from the moment it is sent (expires == sent).
TSUNAMI_CANCEL = f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="{CAP}">
  <identifier>TSU-2024-0501-CANCEL</identifier><sender>tsunami-centre@example.org</sender>
  <sent>2024-05-01T10:00:00-00:00</sent><status>Actual</status><msgType>Cancel</msgType>
  <scope>Public</scope>
  <references>tsunami-centre@example.org,TSU-2024-0501,2024-05-01T08:40:00-00:00</references>
  <info>
    <category>Geo</category><event>Tsunami</event><responseType>AllClear</responseType>
    <urgency>Past</urgency><severity>Minor</severity><certainty>Observed</certainty>
    <expires>2024-05-01T10:00:00-00:00</expires>
    <headline>Tsunami threat has passed: this cancels the earlier warning</headline>
    <area><areaDesc>Coasts within 300 km of the epicentre</areaDesc><circle>38.1,142.9 300</circle></area>
  </info>
</alert>""".encode()

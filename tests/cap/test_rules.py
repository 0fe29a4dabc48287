"""The semantic rules of CAP 1.2 that the XSD cannot express: each one can fail."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.cap.capdata import TSUNAMI_CANCEL, minimal, violations_of, xsd_accepts
from tocsin.cap.parse import parse_xml
from tocsin.policy import findings

CLOSED = "10,10 10,11 11,11 10,10"


def _semantic(document: bytes) -> set[tuple[str, str]]:
    return {(v.problem.code, v.path) for v in violations_of(document) if v.kind == "semantic"}


def test_the_minimal_document_is_valid() -> None:
    parse_xml(minimal(area_extra=f"<polygon>{CLOSED}</polygon><circle>10,10 5</circle>"))


SEMANTIC_CASES = [
    (minimal(area_extra="<polygon>10,10 10,11 11,11 11,10</polygon>"), "cap.polygon-not-closed", "info[0].area[0].polygon[0]"),
    (minimal(area_extra="<polygon>10,10 10,11 10,10</polygon>"), "cap.polygon-too-few-points", "info[0].area[0].polygon[0]"),
    (minimal(area_extra="<polygon>91,10 10,11 11,11 91,10</polygon>"), "cap.coordinate-out-of-range", "info[0].area[0].polygon[0]"),
    (minimal(area_extra="<polygon>10,181 10,11 11,11 10,181</polygon>"), "cap.coordinate-out-of-range", "info[0].area[0].polygon[0]"),
    (minimal(area_extra=f"<polygon>{CLOSED}</polygon><polygon>a,b c,d e,f a,b</polygon>"), "cap.polygon-malformed", "info[0].area[0].polygon[1]"),
    (minimal(area_extra="<polygon>10;10 10;11 11;11 10;10</polygon>"), "cap.polygon-malformed", "info[0].area[0].polygon[0]"),
    (minimal(area_extra="<circle>10,10</circle>"), "cap.circle-invalid", "info[0].area[0].circle[0]"),
    (minimal(area_extra="<circle>10,10 -1</circle>"), "cap.circle-invalid", "info[0].area[0].circle[0]"),
    (minimal(area_extra="<circle>-95,10 1</circle>"), "cap.coordinate-out-of-range", "info[0].area[0].circle[0]"),
    (minimal(msg_type="Update"), "cap.references-required", "references"),
    (minimal(msg_type="Cancel", head="<references> </references>"), "cap.references-required", "references"),
    (minimal(msg_type="Ack"), "cap.references-required", "references"),
    (minimal(msg_type="Error"), "cap.references-required", "references"),
    (minimal(msg_type="Update", head="<references>a@b,ID-1</references>"), "cap.references-malformed", "references"),
    (minimal(msg_type="Update", head="<references>a@b,ID-1,2024-05-01T10:00:00Z</references>"), "cap.references-malformed", "references"),
    (minimal(scope="Restricted"), "cap.restriction-required", "restriction"),
    (minimal(scope="Private"), "cap.addresses-required", "addresses"),
    (minimal(scope="Private", head="<addresses>  </addresses>"), "cap.addresses-required", "addresses"),
    (minimal(head='<addresses>"unclosed</addresses>'), "cap.list-malformed", "addresses"),
    (minimal(area_extra="<ceiling>100</ceiling>"), "cap.ceiling-without-altitude", "info[0].area[0].ceiling"),
    (minimal(info_extra="<resource><resourceDesc>d</resourceDesc><mimeType>a/b</mimeType><derefUri>***</derefUri></resource>"),
     "cap.deref-uri-not-base64", "info[0].resource[0].derefUri"),
]


@pytest.mark.parametrize(("document", "code", "path"), SEMANTIC_CASES)
def test_semantic_rule_is_enforced(document: bytes, code: str, path: str) -> None:
    assert (code, path) in _semantic(document)


@pytest.mark.parametrize(("document", "code", "path"), SEMANTIC_CASES)
def test_the_xsd_lets_each_semantic_case_through(document: bytes, code: str, path: str) -> None:
    assert xsd_accepts(document), f"only the semantic rule ({code} at {path}) can catch it"


def test_a_cancellation_that_expires_when_sent_is_valid_cap() -> None:
    # CAP 1.2 sets no order between <sent> and <expires>: the validator must not either.
    assert violations_of(TSUNAMI_CANCEL) == ()
    alert = parse_xml(TSUNAMI_CANCEL)
    assert alert.infos[0].expires == alert.sent


def test_the_xsd_accepts_the_cancellation_too() -> None:
    assert xsd_accepts(TSUNAMI_CANCEL)


def test_the_same_cancellation_is_not_distributed_once_expired() -> None:
    alert = parse_xml(TSUNAMI_CANCEL)
    later = findings(alert, now=alert.sent + timedelta(minutes=1), max_skew_s=300)
    assert [f.problem.code for f in later][:1] == ["cap.expired"]
    assert {f.kind for f in later} == {"policy"}


# Valid CAP 1.2 that tocsin declines: policy findings, never CAP violations.
POLICY_CASES = [
    (minimal(expires="2024-05-01T09:00:00+02:00"), "cap.expires-before-sent", "info[0].expires"),
    (minimal().replace(b"<expires>", b"<onset>2024-05-01T13:00:00+02:00</onset><expires>"),
     "cap.expires-before-start", "info[0].expires"),
    (minimal(area_extra="<altitude>100</altitude><ceiling>50</ceiling>"), "cap.ceiling-below-altitude", "info[0].area[0].ceiling"),
]


@pytest.mark.parametrize(("document", "code", "path"), POLICY_CASES)
def test_valid_cap_that_tocsin_does_not_distribute_is_policy_not_a_cap_rule(document: bytes, code: str, path: str) -> None:
    assert violations_of(document) == ()
    alert = parse_xml(document)
    found = {(f.problem.code, f.path, f.kind) for f in findings(alert, now=alert.sent, max_skew_s=300)}
    assert (code, path, "policy") in found


@pytest.mark.parametrize(("document", "code", "path"), POLICY_CASES)
def test_the_xsd_accepts_each_policy_case(document: bytes, code: str, path: str) -> None:
    assert xsd_accepts(document), f"{code} at {path} is valid CAP: the XSD must agree"


@pytest.mark.parametrize("name", ["identifier", "sender"])
@pytest.mark.parametrize("bad", ["a b", "a,b", "a&lt;b", "a&amp;b", "a\tb"])
def test_identifier_and_sender_refuse_forbidden_characters(name: str, bad: str) -> None:
    original = b"T-1" if name == "identifier" else b"test@example.org"
    document = minimal().replace(b"<%s>%s<" % (name.encode(), original), b"<%s>%s<" % (name.encode(), bad.encode()))
    assert ("cap.forbidden-characters", name) in _semantic(document)


def test_naive_datetime_is_refused_with_its_path() -> None:
    found = {(v.problem.code, v.path) for v in violations_of(minimal(expires="2024-05-01T12:00:00"))}
    assert ("cap.datetime", "info[0].expires") in found


def test_month_13_is_refused() -> None:
    found = {(v.problem.code, v.path) for v in violations_of(minimal(sent="2024-13-01T10:00:00+02:00"))}
    assert ("cap.datetime-invalid", "sent") in found


def test_every_violation_is_reported_not_just_the_first() -> None:
    document = minimal(
        msg_type="Update", scope="Restricted", expires="2024-05-01T09:00:00+02:00",
        area_extra="<polygon>10,10 10,11 11,11</polygon><circle>bad</circle>",
    ).replace(b"<urgency>Immediate</urgency>", b"<urgency>Soon</urgency>")
    found = {v.problem.code for v in violations_of(document)}
    assert {
        "cap.enum", "cap.references-required", "cap.restriction-required",
        "cap.polygon-too-few-points", "cap.polygon-not-closed", "cap.circle-invalid",
    } <= found


def test_valid_update_with_references_parses_them() -> None:
    head = "<references>a@b.org,ID-0,2024-05-01T09:00:00+02:00 a@b.org,ID-00,2024-05-01T09:30:00+02:00</references>"
    alert = parse_xml(minimal(msg_type="Update", head=head))
    assert [(r.sender, r.identifier) for r in alert.references] == [("a@b.org", "ID-0"), ("a@b.org", "ID-00")]

"""The require-signed policy's check: an enveloped XML signature verified against the keys
a source was configured with, never against the certificate the CAP itself carries."""

from __future__ import annotations

import re

import pytest

from tests.datafiles import CAP_DATA
from tests.samples import alert_xml
from tests.sources.signer import authority
from tocsin.cap.xmltree import read_xml
from tocsin.sources.feed import read_feed
from tocsin.sources.xmlsig import KeyInvalid, SignatureInvalid, load_key, signed_document, verify

WEATHER = authority()


def check(cap: bytes, *pems: str) -> None:
    verify(read_xml(cap, max_bytes=2**20), [load_key(pem) for pem in pems])


def reason(cap: bytes, *pems: str) -> str:
    with pytest.raises(SignatureInvalid) as refused:
        check(cap, *pems)
    return refused.value.reason


@pytest.mark.parametrize("ec_key", [False, True])
def test_a_cap_signed_by_the_configured_key_verifies(ec_key: bool) -> None:
    by = authority(ec_key=ec_key)
    check(by.sign(alert_xml()), by.cert_pem)


def test_a_cap_changed_after_signing_is_refused() -> None:
    signed = WEATHER.sign(alert_xml(headline="Crue: restez chez vous"))
    assert reason(signed.replace("restez chez vous".encode(), "tout va bien".encode()), WEATHER.cert_pem) == "digest-mismatch"


def test_a_cap_signed_by_another_key_is_refused_whatever_certificate_it_carries() -> None:
    forger = authority("Test Weather Service")  # same name, its own key, its own certificate inside the CAP
    assert reason(forger.sign(alert_xml()), WEATHER.cert_pem) == "untrusted-key"


def test_an_unsigned_cap_is_refused() -> None:
    assert reason(alert_xml(), WEATHER.cert_pem) == "unsigned"


def test_the_naad_fixture_is_refused_with_a_key_it_was_not_signed_by() -> None:
    feed = (CAP_DATA / "feeds" / "ca-naad-atom-embedded-eccc-signed.atom").read_bytes()
    (entry,) = read_feed(feed, feed_url="http://rss1.naad-adna.pelmorex.com/feed.atom", max_bytes=2**20, max_entries=10)
    assert entry.embedded is not None
    with pytest.raises(SignatureInvalid) as refused:
        verify(signed_document(entry.embedded), [load_key(WEATHER.cert_pem)])
    assert refused.value.reason == "untrusted-key"


def test_a_key_that_is_not_pem_is_refused() -> None:
    with pytest.raises(KeyInvalid):
        load_key("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")


# Real signatures made by another implementation: IPAWS-OPEN's, RSA-SHA256 over exclusive
# C14N, each verified with the certificate the alert carries (here the test's only trust).
IPAWS_SIGNED = sorted(p.name for p in (CAP_DATA / "valid").glob("us-ipaws-*-signed.xml"))


def _carried_certificate(cap: bytes) -> str:
    found = re.search(rb"<(?:\w+:)?X509Certificate>\s*([^<]+?)\s*</(?:\w+:)?X509Certificate>", cap)
    assert found is not None
    body = re.sub(rb"\s+", b"", found.group(1)).decode()
    lines = "\n".join(body[i:i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n"


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
@pytest.mark.parametrize("name", IPAWS_SIGNED)
def test_a_real_issuers_signature_verifies_and_a_changed_byte_does_not(name: str) -> None:
    cap = (CAP_DATA / "valid" / name).read_bytes()
    certificate = _carried_certificate(cap)
    check(cap, certificate)
    changed = cap.replace(b"<status>", b"<status> ", 1)  # one byte of the signed alert
    assert changed != cap and reason(changed, certificate) == "digest-mismatch"

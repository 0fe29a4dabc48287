"""An authority's side of CAP 1.2 §3.3.2.1 for the tests: an enveloped XML signature
(exclusive C14N, RSA-SHA256 or ECDSA-SHA256), as NAAD's issuers sign, and keys to sign with."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from lxml import etree

DS = "http://www.w3.org/2000/09/xmldsig#"
EXC = "http://www.w3.org/2001/10/xml-exc-c14n#"


@dataclass(frozen=True)
class Authority:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    cert_pem: str

    def sign(self, cap: bytes) -> bytes:
        return sign(cap, self)


def authority(name: str = "Test Weather Service", *, ec_key: bool = False) -> Authority:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        ec.generate_private_key(ec.SECP256R1()) if ec_key else rsa.generate_private_key(public_exponent=65537, key_size=2048))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30)).sign(key, hashes.SHA256()))
    return Authority(key=key, cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode())


def _sub(parent: etree._Element, name: str, **attrs: str) -> etree._Element:
    return etree.SubElement(parent, f"{{{DS}}}{name}", attrs)


def sign(cap: bytes, by: Authority) -> bytes:
    root = etree.fromstring(cap)
    digest = base64.b64encode(hashlib.sha256(etree.tostring(root, method="c14n", exclusive=True)).digest()).decode()
    ec_key = isinstance(by.key, ec.EllipticCurvePrivateKey)
    signature = etree.SubElement(root, f"{{{DS}}}Signature", nsmap={None: DS})
    info = _sub(signature, "SignedInfo")
    _sub(info, "CanonicalizationMethod", Algorithm=EXC)
    _sub(info, "SignatureMethod", Algorithm="http://www.w3.org/2001/04/xmldsig-more#"
         + ("ecdsa-sha256" if ec_key else "rsa-sha256"))
    reference = _sub(info, "Reference", URI="")
    transforms = _sub(reference, "Transforms")
    _sub(transforms, "Transform", Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature")
    _sub(transforms, "Transform", Algorithm=EXC)
    _sub(reference, "DigestMethod", Algorithm="http://www.w3.org/2001/04/xmlenc#sha256")
    _sub(reference, "DigestValue").text = digest
    signed = etree.tostring(info, method="c14n", exclusive=True)
    if isinstance(by.key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(by.key.sign(signed, ec.ECDSA(hashes.SHA256())))
        value = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        value = by.key.sign(signed, padding.PKCS1v15(), hashes.SHA256())
    _sub(signature, "SignatureValue").text = base64.b64encode(value).decode()
    cert_b64 = "".join(line for line in by.cert_pem.splitlines() if "CERTIFICATE" not in line)
    _sub(_sub(_sub(signature, "KeyInfo"), "X509Data"), "X509Certificate").text = cert_b64
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))

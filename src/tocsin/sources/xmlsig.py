"""The XML signature of a relayed CAP: verified against the keys its source was given.

CAP 1.2 §3.3.2.1 signs an alert with an enveloped XML-DSig `<Signature>` at the end of
`<alert>` (Canada's NAAD, for one, requires it). A source with the `require-signed` policy
relays only alerts that carry one which verifies with a key the admin configured for it: a
certificate inside the CAP (KeyInfo) is never trusted by itself, since anyone can put one
there. Supported: one Reference to the whole document (`URI=""`) with the enveloped-signature
transform, C14N 1.0 or exclusive C14N, SHA-1/256/512 digests, RSA PKCS#1 v1.5 and ECDSA.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from lxml import etree

from tocsin.cap.xmltree import DSIG_NS, Element

_DS = f"{{{DSIG_NS}}}"
C14N = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
_DIGESTS = {
    "http://www.w3.org/2000/09/xmldsig#sha1": "sha1",
    "http://www.w3.org/2001/04/xmlenc#sha256": "sha256",
    "http://www.w3.org/2001/04/xmlenc#sha512": "sha512",
}
_HASHES: dict[str, hashes.HashAlgorithm] = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256(), "sha512": hashes.SHA512()}
_SIGNATURES = {
    "http://www.w3.org/2000/09/xmldsig#rsa-sha1": ("rsa", "sha1"),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256": ("rsa", "sha256"),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512": ("rsa", "sha512"),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256": ("ec", "sha256"),
}


PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class KeyInvalid(ValueError):
    """A configured key that is neither a PEM certificate nor a PEM public key."""


class SignatureInvalid(ValueError):
    """No signature of the CAP verifies; `reason` is a stable word for the status and metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def load_key(pem: str) -> PublicKey:
    """The public key of a PEM certificate or a PEM public key (RSA or EC).

    Raises:
        KeyInvalid: anything else.
    """
    data = pem.encode("ascii", "replace")
    key: object
    try:
        if b"CERTIFICATE" in data:
            key = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyInvalid(f"not a PEM certificate or public key ({exc})") from None
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        raise KeyInvalid("only RSA and EC keys sign CAP")
    return key


def _canonical(node: Element, algorithm: str) -> bytes:
    if algorithm == C14N:
        return bytes(etree.tostring(node, method="c14n"))
    if algorithm == EXC_C14N:
        return bytes(etree.tostring(node, method="c14n", exclusive=True))
    raise SignatureInvalid("unsupported-algorithm", f"canonicalization {algorithm[:100]}")


def _one(parent: Element, name: str) -> Element:
    found = parent.findall(f"{_DS}{name}")
    if len(found) != 1:
        raise SignatureInvalid("malformed", f"{len(found)} {name} elements where one is needed")
    return found[0]


def _without(root: Element, signature: Element) -> Element:
    """A copy of the document with this signature taken out (the enveloped transform),
    the text that followed it kept in place."""
    index = list(root).index(signature)
    document = copy.deepcopy(root)
    removed = document[index]
    previous = removed.getprevious()
    if previous is not None:
        previous.tail = (previous.tail or "") + (removed.tail or "")
    else:
        document.text = (document.text or "") + (removed.tail or "")
    document.remove(removed)
    return document


def _check_digest(root: Element, signature: Element, signed_info: Element) -> None:
    reference = _one(signed_info, "Reference")
    if reference.get("URI") not in ("", None):
        raise SignatureInvalid("unsupported-algorithm", "the reference must be to the whole alert (URI=\"\")")
    transforms = [t.get("Algorithm", "") for t in reference.iterfind(f"{_DS}Transforms/{_DS}Transform")]
    if ENVELOPED not in transforms or set(transforms) - {ENVELOPED, C14N, EXC_C14N}:
        raise SignatureInvalid("unsupported-algorithm", f"transforms {', '.join(transforms)[:200]}")
    digest = _DIGESTS.get(_one(reference, "DigestMethod").get("Algorithm", ""))
    if digest is None:
        raise SignatureInvalid("unsupported-algorithm", "digest method")
    c14n = EXC_C14N if EXC_C14N in transforms else C14N
    actual = hashlib.new(digest, _canonical(_without(root, signature), c14n)).digest()
    try:
        expected = base64.b64decode(_one(reference, "DigestValue").text or "", validate=False)
    except binascii.Error:
        raise SignatureInvalid("malformed", "DigestValue is not base64") from None
    if not hmac.compare_digest(actual, expected):
        raise SignatureInvalid("digest-mismatch", "the alert is not the one that was signed")


def _verify_with(key: PublicKey, kind: str, digest: str, value: bytes, signed: bytes) -> bool:
    algorithm = _HASHES[digest]
    try:
        if kind == "rsa" and isinstance(key, rsa.RSAPublicKey):
            key.verify(value, signed, padding.PKCS1v15(), algorithm)
            return True
        if kind == "ec" and isinstance(key, ec.EllipticCurvePublicKey):
            half = len(value) // 2  # XML-DSig ECDSA: r and s side by side (RFC 4050 §3.3)
            der = encode_dss_signature(int.from_bytes(value[:half], "big"), int.from_bytes(value[half:], "big"))
            key.verify(der, signed, ec.ECDSA(algorithm))
            return True
    except InvalidSignature:
        return False
    return False


def _verify_one(root: Element, signature: Element, keys: list[PublicKey]) -> None:
    signed_info = _one(signature, "SignedInfo")
    c14n = _one(signed_info, "CanonicalizationMethod").get("Algorithm", "")
    method = _SIGNATURES.get(_one(signed_info, "SignatureMethod").get("Algorithm", ""))
    if method is None:
        raise SignatureInvalid("unsupported-algorithm", "signature method")
    try:
        value = base64.b64decode(_one(signature, "SignatureValue").text or "", validate=False)
    except binascii.Error:
        raise SignatureInvalid("malformed", "SignatureValue is not base64") from None
    signed = _canonical(signed_info, c14n)
    if not any(_verify_with(key, *method, value, signed) for key in keys):
        raise SignatureInvalid("untrusted-key", "no key configured for this source verifies the signature")
    _check_digest(root, signature, signed_info)


def verify(root: Element, keys: list[PublicKey]) -> None:
    """Pass when one of the alert's own signatures verifies with one of `keys`.

    Raises:
        SignatureInvalid: unsigned, or the reason the last signature failed.
    """
    signatures = root.findall(f"{_DS}Signature")
    if not signatures:
        raise SignatureInvalid("unsigned", "the alert carries no XML signature")
    failure: SignatureInvalid | None = None
    for signature in signatures[:4]:  # bounded: a document of many signatures costs no more
        try:
            _verify_one(root, signature, keys)
            return
        except SignatureInvalid as exc:
            failure = exc
    assert failure is not None
    raise failure


def signed_document(alert: Element) -> Element:
    """An alert embedded in a feed as a document of its own: only the namespaces it uses
    (C14N 1.0 would count the feed's), as it stood when it was signed."""
    document = etree.fromstring(etree.tostring(alert, with_tail=False), etree.XMLParser(resolve_entities=False, no_network=True))
    etree.cleanup_namespaces(document)
    return document


def document_bytes(document: Element) -> bytes:
    """An embedded alert's document as CAP bytes (UTF-8, with its declaration)."""
    return bytes(etree.tostring(document, xml_declaration=True, encoding="UTF-8"))

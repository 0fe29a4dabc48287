"""One CAP from a source -> checked under the source's policy, marked relayed, accepted.

The CAP goes through tocsin's own parsing and validation and the accept path (policy with
the source's rights, limits, cover, signature, the stream's create-if-absent per identity):
a relayed alert is stored and delivered like an issued one. What marks it relayed is inside
the bytes the deployment signs: a CAP `<code>tocsin-relayed:<source></code>` (any such
code the source sent is dropped first), so a device tells it from its own authorities'
alerts and nobody on the way can take the mark off. The source's own XML signature is
checked first under its policy; the relayed CAP no longer carries it (the content changed
by the mark; the deployment's signature replaces it), and the ledger keeps the bytes as the
source sent them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tocsin.cap.model import Alert
from tocsin.cap.xmltree import Element, read_xml
from tocsin.errors import CapInvalid, Rejected
from tocsin.pipeline.accept import Accept
from tocsin.audience import RELAYED_CODE_PREFIX, relayed_from
from tocsin.sources.model import REQUIRE_SIGNED, Source
from tocsin.sources.xmlsig import SignatureInvalid, verify

RELAYED, KNOWN, REFUSED = "relayed", "known", "refused"
__all__ = ["relay", "relayed_from", "mark", "check_signature", "Relayed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Relayed:
    """What became of one CAP: relayed (stored now), known (stored before: a re-poll),
    or refused (with the problem code or signature reason, and a detail)."""

    outcome: str
    alert_id: str = ""
    identifier: str = ""
    code: str = ""
    detail: str = ""


def mark(alert: Alert, source: Source) -> Alert:
    """The alert as this deployment relays it: its relayed code, no foreign one, no
    signature of its own."""
    codes = tuple(c for c in alert.codes if not c.startswith(RELAYED_CODE_PREFIX))
    return replace(alert, codes=(*codes, source.relayed_code), extensions=())


def check_signature(source: Source, document: Element) -> None:
    """Under `require-signed`, one of the CAP's XML signatures verifies with a key of the
    source's; `unsigned-ok` takes it as it is.

    Raises:
        SignatureInvalid: naming why.
    """
    if source.signatures == REQUIRE_SIGNED:
        verify(document, source.public_keys())


async def relay(accept: Accept, source: Source, cap: bytes, *, max_cap_bytes: int,
                document: Element | None = None) -> Relayed:
    """Check and accept one CAP of `source` (`document`: its tree, when already read).

    Raises:
        StoreUnavailable, StoreFull: not stored now; the entry is tried again next poll.
    """
    try:
        if source.signatures == REQUIRE_SIGNED:
            check_signature(source, document if document is not None else read_xml(cap, max_bytes=max_cap_bytes))
        alert = accept.parse(cap)
    except SignatureInvalid as exc:
        return Relayed(outcome=REFUSED, code=f"signature.{exc.reason}", detail=str(exc)[:300])
    except CapInvalid as exc:
        return Relayed(outcome=REFUSED, code=exc.problem.code, detail=str(exc)[:300])
    try:
        accepted = await accept(mark(alert, source), source.issuer(), original=cap)
    except Rejected as exc:
        return Relayed(outcome=REFUSED, identifier=alert.identifier, code=exc.problem.code, detail=str(exc)[:300])
    return Relayed(outcome=RELAYED if accepted.created else KNOWN, alert_id=accepted.stored.envelope.alert_id,
                   identifier=alert.identifier)

"""The small values and interfaces the stages use to reach the replicated store."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import NewType

AlertId = NewType("AlertId", str)


def alert_id_for(sender: str, identifier: str) -> AlertId:
    """An alert's id: a digest of its CAP identity, the same on every node and retry."""
    digest = hashlib.sha256(f"{sender}\n{identifier}".encode()).hexdigest()
    return AlertId(digest[:32])


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """What tocsin stores for an alert: the signed CAP bytes and who accepted them."""

    alert_id: AlertId
    # Canonical CAP 1.2 XML rendered by tocsin, UTF-8; the signature covers these bytes.
    payload: bytes
    sig: str
    kid: str
    issuer: str
    node: str
    accepted_at: datetime
    # When the alert stops being shown (its CAP expiry, or sent + the default lifetime);
    # carried in a header so that a follower skips an expired alert without parsing it.
    expires_at: datetime | None = None
    # When the stream lets it go (per-message TTL); None: never (an envelope read back).
    retain_until: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Stored:
    """An envelope at its place in the stream; `seq` is the device-visible event id."""

    seq: int
    envelope: Envelope
    created: bool = True

"""Account records as stored in the accounts bucket, decoded fail-closed.

Keys: `org.<name>`, `principal.<id>`, `token.<sha256>` (a name's ':' is written '=': KV keys
allow only [-/_=.a-zA-Z0-9]). A missing, malformed or unknown field never widens rights: a
record must say `"state": "active"` to be active, a token must say `"revoked": null` and an
expiry (null: none) to be valid, a list that is not a list of strings grants nothing.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from tocsin.geo.territory import Territory
from tocsin.policy import (
    DEFAULT_SEVERITIES,
    DEFAULT_STATUSES,
    DEFAULT_ALERTS_PER_MIN,
    AlertLimits,
    Approval,
    Issuer,
    Role,
    alerts_per_min,
)

# An organisation's name: what envelopes carry as `issuer` (the prober's is "prober:<node>").
ORG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,79}")
# A user's or API client's name inside its kind: "user:<name>", "client:<name>".
MEMBER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
KINDS = ("user", "client")
ACTIVE = "active"
DISABLED = "disabled"
# The deployment's own organisation; its admins manage every account (docs/accounts.md).
DEPLOYMENT_ORG = "admin"
BOOTSTRAP_ADMIN = "user:admin"
# Before every datetime a record can name: what a malformed date decodes to (expired).
_LONG_AGO = datetime(1970, 1, 1, tzinfo=UTC)


def token_digest(token: str) -> str:
    """The SHA-256 of a token: the only form in which tokens are stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def token_id(digest: str) -> str:
    """A token's public id: enough of its digest to name it, too little to look it up by."""
    return f"tok_{digest[:16]}"


def _key(kind: str, name: str) -> str:
    return f"{kind}.{name.replace(':', '=')}"


def org_key(name: str) -> str:
    return _key("org", name)


def principal_key(principal: str) -> str:
    return _key("principal", principal)


def token_key(digest: str) -> str:
    return f"token.{digest}"


def is_principal_id(principal: str) -> bool:
    kind, _, name = principal.partition(":")
    return kind in KINDS and MEMBER_NAME.fullmatch(name) is not None


def when(raw: object) -> datetime:
    """A stored ISO datetime (UTC); anything else is long ago."""
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            return _LONG_AGO
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return _LONG_AGO


def _strings(raw: object) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        return ()
    return tuple(raw)


def _roles(raw: object) -> frozenset[Role]:
    return frozenset(Role(r) for r in _strings(raw) if r in Role._value2member_map_)


@dataclass(frozen=True, slots=True, kw_only=True)
class Proposal:
    """An approval policy one admin proposed; a second admin makes it the policy."""

    approval: Approval
    by: str
    at: datetime

    def as_json(self) -> dict[str, Any]:
        return {"approval": self.approval.as_json(), "by": self.by, "at": self.at.isoformat()}


@dataclass(frozen=True, slots=True, kw_only=True)
class Organisation:
    """An issuer organisation: what its alerts may say and where, and how it is approved."""

    name: str
    senders: tuple[str, ...] = ()
    statuses: tuple[str, ...] = DEFAULT_STATUSES
    severities: tuple[str, ...] = DEFAULT_SEVERITIES
    approval: Approval = Approval()
    proposed: Proposal | None = None
    territory: Territory | None = None
    limits: AlertLimits = AlertLimits()
    alerts_per_min: int = DEFAULT_ALERTS_PER_MIN
    delegated: tuple[str, ...] = ()
    # The deployment's own organisation (its admins have every right) and the node probers.
    admin: bool = False
    probe: bool = False
    active: bool = True
    created: str = ""

    def issuer(self, principal: str, roles: frozenset[Role]) -> Issuer:
        """The acting Issuer: this organisation's rights, the principal's roles."""
        return Issuer(
            name=self.name, senders=self.senders, statuses=self.statuses, severities=self.severities,
            admin=self.admin and Role.ADMIN in roles, principal=principal, roles=roles, approval=self.approval,
            delegated=self.delegated, probe=self.probe, limits=self.limits, territory=self.territory,
            alerts_per_min=self.alerts_per_min,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "senders": list(self.senders), "statuses": list(self.statuses),
            "severities": list(self.severities), "approval": self.approval.as_json(),
            "proposed": None if self.proposed is None else self.proposed.as_json(),
            "territory": None if self.territory is None else self.territory.as_json(),
            "limits": self.limits.as_json(), "alerts_per_min": self.alerts_per_min,
            "delegated": list(self.delegated), "admin": self.admin, "probe": self.probe,
            "state": ACTIVE if self.active else DISABLED, "created": self.created,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Organisation | None:
        """Fail-closed; None for a record without a valid name (its tokens are refused)."""
        name = data.get("name")
        if not isinstance(name, str) or not ORG_NAME.fullmatch(name):
            return None
        proposed = data.get("proposed")
        return cls(
            name=name, senders=_strings(data.get("senders")), statuses=_strings(data.get("statuses")),
            severities=_strings(data.get("severities")), approval=Approval.from_json(data.get("approval")),
            proposed=_proposal(proposed) if isinstance(proposed, dict) else None,
            territory=Territory.decode(data.get("territory", {})), limits=AlertLimits.from_json(data.get("limits")),
            alerts_per_min=alerts_per_min(data.get("alerts_per_min")), delegated=_strings(data.get("delegated")),
            admin=data.get("admin") is True, probe=data.get("probe") is True, active=data.get("state") == ACTIVE,
            created=str(data.get("created") or ""),
        )

    @classmethod
    def of_issuer(cls, issuer: Issuer, created: str) -> Organisation:
        """The organisation whose rights `issuer` has (what `grant` stores)."""
        return cls(
            name=issuer.name, senders=issuer.senders, statuses=issuer.statuses, severities=issuer.severities,
            approval=issuer.approval, territory=issuer.territory, limits=issuer.limits,
            alerts_per_min=issuer.alerts_per_min, delegated=issuer.delegated, admin=issuer.admin,
            probe=issuer.probe, created=created,
        )

    def same_as(self, other: Organisation) -> bool:
        """Equal in everything but the creation date (an unchanged record is not written)."""
        return replace(self, created="") == replace(other, created="")


def _proposal(raw: dict[str, Any]) -> Proposal | None:
    by = raw.get("by")
    if not isinstance(by, str) or not by:
        return None
    return Proposal(approval=Approval.from_json(raw.get("approval")), by=by, at=when(raw.get("at")))


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """A user or an API client acting for one organisation, in its roles."""

    id: str  # "user:alice", "client:eew-feed"
    org: str
    roles: frozenset[Role] = frozenset()
    active: bool = True
    created: str = ""

    @property
    def kind(self) -> str:
        return self.id.partition(":")[0]

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "org": self.org, "roles": sorted(self.roles),
                "state": ACTIVE if self.active else DISABLED, "created": self.created}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Principal | None:
        """Fail-closed; None without a valid id and organisation."""
        principal, org = data.get("id"), data.get("org")
        if not isinstance(principal, str) or not is_principal_id(principal):
            return None
        if not isinstance(org, str) or not ORG_NAME.fullmatch(org):
            return None
        return cls(id=principal, org=org, roles=_roles(data.get("roles")), active=data.get("state") == ACTIVE,
                   created=str(data.get("created") or ""))

    def same_as(self, other: Principal) -> bool:
        return replace(self, created="") == replace(other, created="")


@dataclass(frozen=True, slots=True, kw_only=True)
class Token:
    """A bearer token, known by its SHA-256: whose it is, until when, whether revoked."""

    digest: str
    org: str
    # The user or client it authenticates; "" when the organisation itself acts (the
    # prober, an automated source), with the token's own roles.
    principal: str = ""
    roles: frozenset[Role] = frozenset()
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    expires: datetime | None = None
    revoked: datetime | None = None
    label: str = ""

    @property
    def id(self) -> str:
        return token_id(self.digest)

    def is_expired(self, now: datetime) -> bool:
        return self.expires is not None and self.expires <= now

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "digest": self.digest, "org": self.org, "principal": self.principal,
            "roles": sorted(self.roles), "created": self.created.isoformat(),
            "expires": None if self.expires is None else self.expires.isoformat(),
            "revoked": None if self.revoked is None else self.revoked.isoformat(), "label": self.label,
        }

    def public(self) -> dict[str, Any]:
        """What a listing shows: never the digest in full."""
        shown = self.as_json()
        del shown["digest"]
        return shown

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Token | None:
        """Fail-closed: no `"revoked": null` is revoked, no `expires` key or a malformed one is
        expired; None without a valid digest and organisation."""
        digest, org = data.get("digest"), data.get("org")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            return None
        if not isinstance(org, str) or not ORG_NAME.fullmatch(org):
            return None
        principal = data.get("principal")
        if principal is None or (principal != "" and not (isinstance(principal, str) and is_principal_id(principal))):
            return None
        revoked = data.get("revoked", "missing")
        expires = data.get("expires", "missing")
        return cls(
            digest=digest, org=org, principal=principal, roles=_roles(data.get("roles")),
            created=when(data.get("created")), expires=None if expires is None else when(expires),
            revoked=None if revoked is None else when(revoked), label=str(data.get("label") or "")[:200],
        )

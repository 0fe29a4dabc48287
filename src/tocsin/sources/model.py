"""Relayed CAP sources: their records, checked as an admin gives them, and the book every
node mirrors.

A source is another authority's CAP Atom or RSS feed that this deployment polls and relays
to its own devices (docs/sources.md). A deployment admin configures sources
(api/sources.py, `tocsin sources`); they live in the sources bucket, one record per source
keyed by its name, and every node mirrors that bucket into a `SourceBook` that its poller
reads. A source acts as an issuer of its own (`issuer()`): the senders, statuses and
territory it may alert, under the name `source:<name>`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from tocsin.audience import RELAYED_CODE_PREFIX
from tocsin.delivery.routes import check_name as route_name
from tocsin.delivery.routes import check_url, field_refusal
from tocsin.errors import SOURCE_INVALID, Rejected
from tocsin.geo.territory import Territory, TerritoryInvalid
from tocsin.policy import Approval, ApprovalMode, Issuer, Role
from tocsin.sources.xmlsig import KeyInvalid, PublicKey, load_key
from tocsin.store.book import Book

# What a source may relay; System is this deployment's own (its probes), Draft is never sent.
STATUSES = ("Actual", "Exercise", "Test")
# How the CAP's own XML signature is judged (docs/sources.md, "Signature policy").
UNSIGNED_OK = "unsigned-ok"
REQUIRE_SIGNED = "require-signed"
SIGNATURE_POLICIES = (UNSIGNED_OK, REQUIRE_SIGNED)
FIELDS = frozenset({"url", "interval_s", "signatures", "keys", "senders", "statuses", "territory", "enabled"})
MAX_SOURCES = 256
MAX_KEYS = 4
MAX_KEY_CHARS = 8192
MAX_SENDERS = 32
MAX_SENDER_CHARS = 255
MIN_INTERVAL_S = 1.0
MAX_INTERVAL_S = 86400.0
DEFAULT_INTERVAL_S = 60.0
# The issuer name a relayed alert is stored under, and the CAP <code> that marks it relayed
# inside the bytes the deployment signs (a device tells it from its own authorities' alerts).
ISSUER_PREFIX = "source:"


def invalid(path: str, detail: str) -> Rejected:
    """422 source.invalid naming the exact field."""
    return field_refusal(SOURCE_INVALID, path, detail)


def check_name(raw: object) -> str:
    return route_name(raw, invalid)  # the same rule: a bucket key and a NATS token


def _url(raw: object) -> str:
    try:
        return check_url(raw)
    except Rejected as exc:  # the same URL rules as a CAP route's, named for a source
        raise invalid("url", exc.violations[0].detail if exc.violations else str(exc)) from None


def _interval(raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not MIN_INTERVAL_S <= raw <= MAX_INTERVAL_S:
        raise invalid("interval_s", f"seconds between polls, {MIN_INTERVAL_S:g} to {MAX_INTERVAL_S:g}")
    return float(raw)


def _keys(raw: object) -> tuple[str, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_KEYS:
        raise invalid("keys", f"a list of at most {MAX_KEYS} PEM certificates or public keys")
    for n, pem in enumerate(raw):
        if not isinstance(pem, str) or len(pem) > MAX_KEY_CHARS:
            raise invalid(f"keys[{n}]", f"a PEM text of at most {MAX_KEY_CHARS} characters")
        try:
            load_key(pem)
        except KeyInvalid as exc:
            raise invalid(f"keys[{n}]", str(exc)) from None
    return tuple(raw)


def _senders(raw: object) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw or len(raw) > MAX_SENDERS:
        raise invalid("senders", f'a non-empty list of at most {MAX_SENDERS} CAP senders ("*": any)')
    for n, sender in enumerate(raw):
        if not isinstance(sender, str) or not sender or len(sender) > MAX_SENDER_CHARS or not sender.isprintable():
            raise invalid(f"senders[{n}]", f"a CAP sender of at most {MAX_SENDER_CHARS} printable characters")
    return tuple(raw)


def _statuses(raw: object) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw or len(raw) > len(STATUSES):
        raise invalid("statuses", f"a non-empty list of {', '.join(STATUSES)}")
    for n, status in enumerate(raw):
        if status not in STATUSES:
            raise invalid(f"statuses[{n}]", f"one of {', '.join(STATUSES)}")
    return tuple(sorted(set(raw), key=STATUSES.index))


def _territory(raw: object) -> Territory | None:
    if raw is None:
        return None
    try:
        return Territory.from_json(raw)
    except TerritoryInvalid as exc:
        raise invalid("territory", str(exc)) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    name: str
    url: str
    interval_s: float = DEFAULT_INTERVAL_S
    signatures: str = UNSIGNED_OK
    # PEM certificates or public keys; with require-signed, a CAP's XML signature must verify
    # with one of them (a certificate the CAP carries is only compared, never trusted).
    keys: tuple[str, ...] = field(default=(), repr=False)
    senders: tuple[str, ...] = ("*",)
    statuses: tuple[str, ...] = STATUSES
    territory: Territory | None = None
    enabled: bool = True
    created: str = ""
    created_by: str = ""
    changed: str = ""
    changed_by: str = ""

    def as_json(self) -> dict[str, Any]:
        """The bucket record, and what the admin API answers (nothing in it is secret)."""
        return {
            "name": self.name, "url": self.url, "interval_s": self.interval_s, "signatures": self.signatures,
            "keys": list(self.keys), "senders": list(self.senders), "statuses": list(self.statuses),
            "territory": self.territory.as_json() if self.territory is not None else None,
            "enabled": self.enabled, "created": self.created, "created_by": self.created_by,
            "changed": self.changed, "changed_by": self.changed_by,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Source | None:
        """A record as written by `as_json`; None (never an exception) for anything else."""
        try:
            return from_body(check_name(data.get("name")), {k: v for k, v in data.items() if k in FIELDS}, None,
                             actor=str(data.get("created_by", "")), now=str(data.get("created", "")),
                             changed=(str(data.get("changed", "")), str(data.get("changed_by", ""))))
        except Rejected:
            return None

    @property
    def issuer_name(self) -> str:
        return f"{ISSUER_PREFIX}{self.name}"

    @property
    def relayed_code(self) -> str:
        """The CAP <code> every alert relayed from this source carries."""
        return f"{RELAYED_CODE_PREFIX}{self.name}"

    def public_keys(self) -> list[PublicKey]:
        return [load_key(pem) for pem in self.keys]

    def issuer(self) -> Issuer:
        """The rights the source's alerts are checked with: its senders, statuses and
        territory; any severity; no approval (another authority already issued them)."""
        return Issuer(
            name=self.issuer_name, senders=self.senders, statuses=self.statuses, roles=frozenset({Role.AUTHOR}),
            approval=Approval(mode=ApprovalMode.NONE), territory=self.territory,
            severities=("Extreme", "Severe", "Moderate", "Minor", "Unknown"),
        )


def from_body(name: str, body: dict[str, Any], old: Source | None, *, actor: str, now: str,
              changed: tuple[str, str] | None = None) -> Source:
    """The source a PUT describes: a new one, or `old` replaced.

    Raises:
        Rejected: 422 source.invalid naming the field.
    """
    for key in sorted(set(body) - FIELDS):
        raise invalid(key, f"not a source field ({', '.join(sorted(FIELDS))})")
    enabled = body.get("enabled", True)
    if not isinstance(enabled, bool):
        raise invalid("enabled", "true or false")
    signatures = body.get("signatures", UNSIGNED_OK)
    if signatures not in SIGNATURE_POLICIES:
        raise invalid("signatures", f"one of {', '.join(SIGNATURE_POLICIES)}")
    keys = _keys(body.get("keys", []))
    if signatures == REQUIRE_SIGNED and not keys:
        raise invalid("keys", "require-signed needs at least one certificate or public key to verify with")
    source = Source(
        name=check_name(name), url=_url(body.get("url")), interval_s=_interval(body.get("interval_s", DEFAULT_INTERVAL_S)),
        signatures=str(signatures), keys=keys, senders=_senders(body.get("senders", ["*"])),
        statuses=_statuses(body.get("statuses", list(STATUSES))), territory=_territory(body.get("territory")),
        enabled=enabled, created=now, created_by=actor, changed=now, changed_by=actor,
    )
    if changed is not None:
        source = replace(source, changed=changed[0], changed_by=changed[1])
    if old is not None:
        source = replace(source, created=old.created, created_by=old.created_by)
    return source


class SourceBook(Book[Source]):
    """Every source record, as the node's mirror of the sources bucket holds them.
    Unreadable records poll nothing."""

    def __init__(self) -> None:
        super().__init__(Source.from_json, lambda source: source.name)

    def source(self, name: str) -> Source | None:
        return self.value(name)

    def sources(self) -> list[Source]:
        return self.values_by_name()

"""What an admin (api/admin.py) or the accounts file (accounts/file.py) may write, checked
field by field; an error names the field. Both read the same shapes, JSON or TOML."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from tocsin.accounts.model import KINDS, MEMBER_NAME, ORG_NAME, Organisation, Principal
from tocsin.cap.model import Severity, Status
from tocsin.geo.territory import Territory, TerritoryInvalid
from tocsin.policy import AlertLimits, Approval, ApprovalMode, Role

ORG_FIELDS = frozenset({"name", "senders", "statuses", "severities", "approval", "territory", "limits",
                        "alerts_per_min", "delegated", "disabled"})
MEMBER_FIELDS = frozenset({"name", "org", "roles", "disabled"})
MAX_LIST = 100
MAX_TEXT = 200
MAX_EXPIRY_DAYS = 3660


class Invalid(ValueError):
    """A field an account cannot have; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def unknown_fields(data: dict[str, Any], allowed: frozenset[str]) -> None:
    """Refuse a field outside `allowed` (a typo must not pass for a default)."""
    for name in sorted(set(data) - allowed):
        raise Invalid(name, "unknown field")


def _texts(data: dict[str, Any], name: str, choices: tuple[str, ...] | None = None) -> tuple[str, ...]:
    raw = data[name]
    if not isinstance(raw, list) or len(raw) > MAX_LIST or not all(isinstance(v, str) and 0 < len(v) <= MAX_TEXT for v in raw):
        raise Invalid(name, f"a list of at most {MAX_LIST} non-empty strings")
    for value in raw:
        if choices is not None and value not in choices:
            raise Invalid(name, f"{value!r} is not one of {', '.join(choices)}")
    return tuple(dict.fromkeys(raw))


def approval(raw: object, name: str = "approval") -> Approval:
    """An approval policy as given: {mode: always|above|none, severity: ...}."""
    if not isinstance(raw, dict) or set(raw) - {"mode", "severity"}:
        raise Invalid(name, "an object {mode, severity}")
    try:
        mode = ApprovalMode(raw.get("mode", ApprovalMode.ALWAYS.value))
        severity = Severity(raw.get("severity", Severity.SEVERE.value))
    except ValueError:
        raise Invalid(name, f"mode is one of {', '.join(m.value for m in ApprovalMode)}; severity a CAP severity") from None
    return Approval(mode=mode, severity=severity)


def _fields(data: object, allowed: frozenset[str], fixed: str, value: str) -> dict[str, Any]:
    """An object of known fields, whose `fixed` field (if given) is `value`: names and
    organisations do not change."""
    if not isinstance(data, dict):
        raise Invalid("body", "a JSON object")
    unknown_fields(data, allowed)
    if fixed in data and data[fixed] != value:
        raise Invalid(fixed, f"{value!r} stays as it is")
    return data


def _disabled(data: dict[str, Any]) -> bool:
    raw = data["disabled"]
    if not isinstance(raw, bool):
        raise Invalid("disabled", "true or false")
    return raw


def organisation(data: object, base: Organisation) -> Organisation:
    """`base` with the fields `data` gives (a new organisation: `base` holds its name and defaults).

    Raises:
        Invalid: naming the field.
    """
    data = _fields(data, ORG_FIELDS, "name", base.name)
    org = base
    if "senders" in data:
        org = replace(org, senders=_texts(data, "senders"))
    if "statuses" in data:
        org = replace(org, statuses=_texts(data, "statuses", tuple(s.value for s in Status if s is not Status.DRAFT)))
    if "severities" in data:
        org = replace(org, severities=_texts(data, "severities", tuple(s.value for s in Severity)))
    if "approval" in data:
        org = replace(org, approval=approval(data["approval"]))
    if "territory" in data:
        try:
            org = replace(org, territory=None if data["territory"] is None else Territory.from_json(data["territory"]))
        except TerritoryInvalid as exc:
            raise Invalid("territory", str(exc)) from None
    if "limits" in data:
        org = replace(org, limits=_limits(data["limits"]))
    if "alerts_per_min" in data:
        rate = data["alerts_per_min"]
        if not isinstance(rate, int) or isinstance(rate, bool) or not 0 <= rate <= 1_000_000:
            raise Invalid("alerts_per_min", "a whole number from 0 (no limit) to 1000000")
        org = replace(org, alerts_per_min=rate)
    if "delegated" in data:
        delegated = _texts(data, "delegated")
        for name in delegated:
            if not ORG_NAME.fullmatch(name):
                raise Invalid("delegated", f"{name!r} is not an organisation name")
        org = replace(org, delegated=delegated)
    if "disabled" in data:
        org = replace(org, active=not _disabled(data))
    return org


def _limits(raw: object) -> AlertLimits:
    if not isinstance(raw, dict):
        raise Invalid("limits", "an object of alert limits")
    limits = AlertLimits.from_json(raw)
    for name in raw:
        if name not in limits.as_json():
            raise Invalid(f"limits.{name}", "unknown, or not a positive number")
    return limits


def org_name(raw: object) -> str:
    if not isinstance(raw, str) or not ORG_NAME.fullmatch(raw):
        raise Invalid("name", "1-80 of A-Z a-z 0-9 . _ : - (starting with a letter or digit)")
    return raw


def principal_id(kind: str, raw: object) -> str:
    """"user:<name>" from a name (or the id itself)."""
    if isinstance(raw, str) and raw.startswith(f"{kind}:"):
        raw = raw[len(kind) + 1:]
    if kind not in KINDS or not isinstance(raw, str) or not MEMBER_NAME.fullmatch(raw):
        raise Invalid("name", "1-64 of A-Z a-z 0-9 . _ - (starting with a letter or digit)")
    return f"{kind}:{raw}"


def roles(raw: object) -> frozenset[Role]:
    if not isinstance(raw, list) or not raw or not all(isinstance(r, str) and r in Role._value2member_map_ for r in raw):
        raise Invalid("roles", f"a non-empty list of {', '.join(r.value for r in Role)}")
    return frozenset(Role(r) for r in raw)


def principal(data: object, base: Principal) -> Principal:
    """`base` with the fields `data` gives (roles, disabled; the organisation is fixed).

    Raises:
        Invalid: naming the field.
    """
    data = _fields(data, MEMBER_FIELDS, "org", base.org)
    found = base
    if "roles" in data:
        found = replace(found, roles=roles(data["roles"]))
    if "disabled" in data:
        found = replace(found, active=not _disabled(data))
    return found


def expiry(raw: object, now: datetime, name: str = "expires") -> datetime | None:
    """A token's expiry: an ISO 8601 time (a TOML datetime in the file) in the future, or null."""
    if raw is None:
        return None
    when = raw
    if isinstance(raw, str):
        try:
            when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise Invalid(name, "an ISO 8601 time such as 2027-01-31T00:00:00Z") from None
    if not isinstance(when, datetime):
        raise Invalid(name, "an ISO 8601 time such as 2027-01-31T00:00:00Z")
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    if when > now + timedelta(days=MAX_EXPIRY_DAYS):
        raise Invalid(name, f"at most {MAX_EXPIRY_DAYS} days ahead")
    return when.astimezone(UTC)

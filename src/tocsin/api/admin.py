"""Admin API: organisations, users and API clients (tokens: admin_tokens.py; docs/accounts.md).

Every route needs the admin role. A deployment admin (the deployment's own organisation)
manages every account; an organisation's admin manages its own organisation's users,
clients and tokens and may propose its policy. An approval policy change takes two admins:
the first one's is kept as proposed (202), a different admin confirms it. Each change is
appended to the audit log with its actor, organisation and source address.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tocsin.accounts import validate
from tocsin.accounts.model import (
    BOOTSTRAP_ADMIN,
    DEPLOYMENT_ORG,
    Organisation,
    Principal,
    Proposal,
    org_key,
    principal_key,
)
from tocsin.accounts.validate import Invalid
from tocsin.api.alerts import read_body
from tocsin.api.auth import issuer_for, require
from tocsin.api.services import Services
from tocsin.geo.territory import Territory, TerritoryInvalid
from tocsin.errors import (
    ACCOUNT_EXISTS,
    ACCOUNT_INVALID,
    ACCOUNT_UNKNOWN,
    NO_PROPOSAL,
    POLICY_NEEDS_SECOND_ADMIN,
    ROLE_REQUIRED,
    Rejected,
    Violation,
)
from tocsin.policy import Issuer, Role
from tocsin.store.audit import Action, AuditEntry
from tocsin.store.base import Records

# A record changed by two admins at once is read and decided again at most this often.
_CAS_TRIES = 8


class Admin:
    """One admin request: who acts, from where, with the node's services."""

    def __init__(self, request: Request, services: Services, issuer: Issuer) -> None:
        self.request = request
        self.services = services
        self.issuer = issuer
        self.actor = issuer.principal or f"org:{issuer.name}"
        client = request.client
        self.source = client.host if client else ""

    def scope(self, org: str) -> None:
        """Refuse acting on another organisation's accounts unless a deployment admin."""
        if not self.issuer.admin and org != self.issuer.name:
            raise Rejected(ROLE_REQUIRED, f"{self.actor} administers {self.issuer.name!r} only")

    def deployment(self) -> None:
        if not self.issuer.admin:
            raise Rejected(ROLE_REQUIRED, f"only an admin of {DEPLOYMENT_ORG!r} may do this")

    async def audit(self, action: Action, subject: str, org: str, detail: dict[str, Any] | None = None) -> None:
        await self.services.store.audit.append(AuditEntry(
            action=action, subject=subject, actor=self.actor, org=org, source=self.source, detail=detail or {},
        ))

    @property
    def now(self) -> datetime:
        return self.services.clock()


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def admin_for(request: Request) -> Admin:
    services = _services(request)
    issuer = await issuer_for(request, services)
    require(issuer, Role.ADMIN)
    return Admin(request, services, issuer)


def invalid(exc: Invalid) -> Rejected:
    return Rejected(ACCOUNT_INVALID, str(exc), violations=(
        Violation(problem=ACCOUNT_INVALID, path=exc.field, detail=str(exc), kind="policy"),))


async def body_of(admin: Admin) -> dict[str, Any]:
    raw = await read_body(admin.request, admin.services.settings.max_admin_body_bytes)
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise invalid(Invalid("body", "not JSON")) from None
    if not isinstance(data, dict):
        raise invalid(Invalid("body", "a JSON object"))
    return data


def path_param(request: Request, name: str) -> str:
    return str(request.path_params[name])[:200]


class Recorded(Protocol):
    def as_json(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=Recorded)


async def put_versioned(records: Records, key: str, build: Callable[[dict[str, Any] | None], R], *,
                        at_limit: Callable[[], Rejected | None], busy: Rejected, tries: int = 8) -> tuple[R, bool]:
    """Create or replace the record at `key` with what `build(the record there, or None)`
    makes, compare-and-set: when another write came first, built again from that one.
    Returns the value written and whether it was created (CAP routes, sources).

    Raises:
        Rejected: what `build` raises, what `at_limit` returns before a creation, or `busy`
            when the record kept changing.
    """
    for _ in range(tries):
        found = await records.get_versioned(key)
        value = build(found[0] if found is not None else None)
        if found is None:
            refusal = at_limit()
            if refusal is not None:
                raise refusal
            if await records.create(key, value.as_json()):
                return value, True
        elif await records.replace(key, value.as_json(), found[1]):
            return value, False
    raise busy


async def org_of(admin: Admin, name: str) -> Organisation:
    admin.scope(name)
    org = await admin.services.accounts.org(name)
    if org is None:
        raise Rejected(ACCOUNT_UNKNOWN, f"no organisation {name!r}")
    return org


async def check_territory_areas(admin: Admin, raw: object) -> None:
    """A territory's named areas must exist when it is set: 422 accounts.invalid naming the
    first the gazetteer (or the areas bucket) does not hold. What is not a territory at all
    is left to `validate.organisation`, which names it."""
    try:
        territory = Territory.from_json(raw)
    except TerritoryInvalid:
        return
    for n, (scheme, code) in enumerate(territory.named()):
        if not await admin.services.areas.holds(admin.services.store.areas, scheme, code):
            raise invalid(Invalid(f"territory.areas[{n}]", f"{scheme} has no code {code!r} (tocsin areas list)"))


async def change_record(admin: Admin, key: str, decode: Callable[[dict[str, Any]], Any],
                  change: Callable[[Any], Any]) -> tuple[Any, Any]:
    """Compare-and-set: read the record, apply `change`, write only if nobody wrote meanwhile.

    Returns (old, new) decoded records.
    """
    records = admin.services.accounts.records
    for _ in range(_CAS_TRIES):
        found = await records.get_versioned(key)
        old = None if found is None else decode(found[0])
        if found is None or old is None:
            raise Rejected(ACCOUNT_UNKNOWN, f"no record {key.partition('.')[2]!r}")
        new = change(old)
        value = new.as_json()
        if await records.replace(key, value, found[1]):
            await admin.services.accounts.mirror.seen(key, value)
            return old, new
    raise Rejected(ACCOUNT_INVALID, "the record kept changing; try again")


# Organisations


async def list_orgs(request: Request) -> Response:
    admin = await admin_for(request)
    orgs = [o.as_json() for o in admin.services.accounts.orgs() if admin.issuer.admin or o.name == admin.issuer.name]
    return JSONResponse({"organisations": orgs})


async def create_org(request: Request) -> Response:
    admin = await admin_for(request)
    admin.deployment()
    body = await body_of(admin)
    try:
        name = validate.org_name(body.get("name"))
        org = validate.organisation(body, Organisation(name=name, created=admin.now.isoformat()))
    except Invalid as exc:
        raise invalid(exc) from None
    if org.territory is not None:
        await check_territory_areas(admin, body["territory"])
    # A new organisation starts with the default policy; any other is a proposal (two admins).
    proposed = org.approval
    org = replace(org, approval=Organisation(name=name).approval)
    if proposed != org.approval:
        org = replace(org, proposed=Proposal(approval=proposed, by=admin.actor, at=admin.now))
    if not await admin.services.accounts.create(org_key(name), org.as_json()):
        raise Rejected(ACCOUNT_EXISTS, f"organisation {name!r} exists")
    await admin.audit(Action.ACCOUNT_CREATED, name, name, {"kind": "organisation"})
    if org.proposed is not None:
        await admin.audit(Action.POLICY_PROPOSED, name, name, {"approval": proposed.as_json()})
    return _org_answer(org, 201)


def _org_answer(org: Organisation, status: int) -> Response:
    body: dict[str, Any] = {"organisation": org.as_json()}
    if org.proposed is not None:
        body.update(state="proposed", code=POLICY_NEEDS_SECOND_ADMIN.code,
                    detail=f"the approval policy {org.proposed.approval.as_json()} waits for a second admin")
        status = 202 if status == 200 else status
    return JSONResponse(body, status_code=status)


async def show_org(request: Request) -> Response:
    admin = await admin_for(request)
    org = await org_of(admin, path_param(request, "name"))
    return JSONResponse({"organisation": org.as_json()})


async def change_org(request: Request) -> Response:
    admin = await admin_for(request)
    name = path_param(request, "name")
    await org_of(admin, name)
    body = await body_of(admin)
    if set(body) - {"approval"} and not admin.issuer.admin:  # its rights are the deployment's to grant
        raise Rejected(ROLE_REQUIRED, f"only an admin of {DEPLOYMENT_ORG!r} may change an organisation's rights")
    if name == DEPLOYMENT_ORG:
        for field in sorted(set(body) - {"approval"}):  # every right already: nothing to change but lock out
            raise invalid(Invalid(field, "the deployment's own organisation keeps its rights"))
    if body.get("territory") is not None:
        await check_territory_areas(admin, body["territory"])

    def change(old: Organisation) -> Organisation:
        try:
            new = validate.organisation(body, old)
        except Invalid as exc:
            raise invalid(exc) from None
        if new.approval != old.approval:  # the policy waits for a second admin
            new = replace(new, approval=old.approval, proposed=Proposal(approval=new.approval, by=admin.actor, at=admin.now))
        return new

    old, new = await change_record(admin, org_key(name), Organisation.from_json, change)
    if not new.same_as(replace(old, proposed=new.proposed)):
        await admin.audit(Action.ACCOUNT_CHANGED, name, name, {"fields": sorted(k for k in body if k != "approval")})
    proposing = "approval" in body and new.proposed is not None and new.proposed != old.proposed
    if proposing:
        await admin.audit(Action.POLICY_PROPOSED, name, name, {"approval": new.proposed.approval.as_json()})
    return _org_answer(new, 200) if proposing else JSONResponse({"organisation": new.as_json()})


async def confirm_policy(request: Request) -> Response:
    """A second admin makes the proposed approval policy the organisation's."""
    admin = await admin_for(request)
    name = path_param(request, "name")
    await org_of(admin, name)
    body = await body_of(admin)
    try:
        expected = validate.approval(body["approval"]) if "approval" in body else None
    except Invalid as exc:
        raise invalid(exc) from None

    def change(old: Organisation) -> Organisation:
        proposal = old.proposed
        if proposal is None or (expected is not None and expected != proposal.approval):
            raise Rejected(NO_PROPOSAL, f"{name!r} has {'another' if proposal else 'no'} proposed policy")
        if proposal.by == admin.actor:
            raise Rejected(POLICY_NEEDS_SECOND_ADMIN, f"{admin.actor} proposed it; another admin must confirm")
        return replace(old, approval=proposal.approval, proposed=None)

    old, new = await change_record(admin, org_key(name), Organisation.from_json, change)
    assert old.proposed is not None
    await admin.audit(Action.POLICY_CHANGED, name, name, {
        "approval": new.approval.as_json(), "before": old.approval.as_json(), "proposed_by": old.proposed.by,
    })
    return JSONResponse({"organisation": new.as_json(), "state": "changed"})


async def disable_org(request: Request) -> Response:
    admin = await admin_for(request)
    admin.deployment()
    name = path_param(request, "name")
    if name == DEPLOYMENT_ORG:
        raise invalid(Invalid("name", "the deployment's own organisation cannot be disabled"))
    await org_of(admin, name)
    _, new = await change_record(admin, org_key(name), Organisation.from_json, lambda o: replace(o, active=False))
    await admin.audit(Action.ACCOUNT_REVOKED, name, name, {"kind": "organisation"})
    return JSONResponse({"organisation": new.as_json()})


# Users and API clients


def _kind(request: Request) -> str:
    return "user" if request.url.path.startswith("/api/v1/admin/users") else "client"


async def list_principals(request: Request) -> Response:
    admin = await admin_for(request)
    org = request.query_params.get("org", "" if admin.issuer.admin else admin.issuer.name)
    scope_listing(admin, org)
    found = admin.services.accounts.principals(org=org, kind=_kind(request))
    return JSONResponse({f"{_kind(request)}s": [p.as_json() for p in found]})


def scope_listing(admin: Admin, org: str) -> None:
    """One organisation's listing needs its admin; all organisations', a deployment admin."""
    if org:
        admin.scope(org)
    else:
        admin.deployment()


async def create_principal(request: Request) -> Response:
    admin = await admin_for(request)
    kind = _kind(request)
    body = await body_of(admin)
    try:
        principal_id = validate.principal_id(kind, body.get("name"))
        org = validate.org_name(body.get("org", admin.issuer.name))
        fields = {k: v for k, v in body.items() if k != "name"}
        fields.setdefault("roles", ["author"])
        principal = validate.principal(fields, Principal(id=principal_id, org=org, created=admin.now.isoformat()))
    except Invalid as exc:
        raise invalid(exc) from None
    await org_of(admin, org)
    if not await admin.services.accounts.create(principal_key(principal_id), principal.as_json()):
        raise Rejected(ACCOUNT_EXISTS, f"{principal_id} exists")
    await admin.audit(Action.ACCOUNT_CREATED, principal_id, org, {"kind": kind, "roles": sorted(principal.roles)})
    return JSONResponse({kind: principal.as_json()}, status_code=201)


async def _principal(admin: Admin, request: Request) -> Principal:
    kind = _kind(request)
    try:
        principal_id = validate.principal_id(kind, path_param(request, "name"))
    except Invalid:
        raise Rejected(ACCOUNT_UNKNOWN, f"no {kind} {path_param(request, 'name')!r}") from None
    found = await admin.services.accounts.principal(principal_id)
    if found is None:
        raise Rejected(ACCOUNT_UNKNOWN, f"no {principal_id}")
    admin.scope(found.org)
    return found


async def show_principal(request: Request) -> Response:
    admin = await admin_for(request)
    found = await _principal(admin, request)
    return JSONResponse({found.kind: found.as_json()})


def _keep_bootstrap_admin(found: Principal) -> None:
    """The bootstrap admin stays an active admin, so that a deployment cannot lock itself
    out through the API; its tokens are revoked like any (docs/accounts.md)."""
    if found.id == BOOTSTRAP_ADMIN:
        raise invalid(Invalid("name", f"{BOOTSTRAP_ADMIN} stays an admin; revoke its tokens instead"))


async def change_principal(request: Request) -> Response:
    admin = await admin_for(request)
    found = await _principal(admin, request)
    _keep_bootstrap_admin(found)
    body = await body_of(admin)

    def change(old: Principal) -> Principal:
        try:
            return validate.principal(body, old)
        except Invalid as exc:
            raise invalid(exc) from None

    _, new = await change_record(admin, principal_key(found.id), Principal.from_json, change)
    await admin.audit(Action.ACCOUNT_CHANGED, found.id, found.org, {"fields": sorted(body), "roles": sorted(new.roles)})
    return JSONResponse({new.kind: new.as_json()})


async def disable_principal(request: Request) -> Response:
    admin = await admin_for(request)
    found = await _principal(admin, request)
    _keep_bootstrap_admin(found)
    _, new = await change_record(admin, principal_key(found.id), Principal.from_json, lambda p: replace(p, active=False))
    await admin.audit(Action.ACCOUNT_REVOKED, found.id, found.org, {"kind": found.kind})
    return JSONResponse({new.kind: new.as_json()})

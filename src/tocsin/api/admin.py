"""Admin API: organisations, users, API clients and tokens (docs/accounts.md).

Every route needs the admin role. A deployment admin (the deployment's own organisation)
manages every account; an organisation's admin manages its own organisation's users,
clients and tokens and may propose its policy. An approval policy change takes two admins:
the first one's is kept as proposed (202), a different admin confirms it. Each change is
appended to the audit log with its actor, organisation and source address.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tocsin.accounts import validate
from tocsin.accounts.model import (
    BOOTSTRAP_ADMIN,
    DEPLOYMENT_ORG,
    Organisation,
    Principal,
    Proposal,
    Token,
    new_token,
    org_key,
    principal_key,
    token_digest,
    token_key,
)
from tocsin.accounts.validate import Invalid
from tocsin.api.alerts import read_body
from tocsin.api.auth import bearer, issuer_for, require
from tocsin.api.services import Services
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

# A record changed by two admins at once is read and decided again at most this often.
_CAS_TRIES = 8


class _Admin:
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


async def _admin(request: Request) -> _Admin:
    services = _services(request)
    issuer = await issuer_for(request, services)
    require(issuer, Role.ADMIN)
    return _Admin(request, services, issuer)


def _invalid(exc: Invalid) -> Rejected:
    return Rejected(ACCOUNT_INVALID, str(exc), violations=(
        Violation(problem=ACCOUNT_INVALID, path=exc.field, detail=str(exc), kind="policy"),))


async def _body(admin: _Admin) -> dict[str, Any]:
    raw = await read_body(admin.request, admin.services.settings.max_admin_body_bytes)
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _invalid(Invalid("body", "not JSON")) from None
    if not isinstance(data, dict):
        raise _invalid(Invalid("body", "a JSON object"))
    return data


def _path(request: Request, name: str) -> str:
    return str(request.path_params[name])[:200]


async def _org(admin: _Admin, name: str) -> Organisation:
    admin.scope(name)
    org = await admin.services.accounts.org(name)
    if org is None:
        raise Rejected(ACCOUNT_UNKNOWN, f"no organisation {name!r}")
    return org


async def _change(admin: _Admin, key: str, decode: Callable[[dict[str, Any]], Any],
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
    admin = await _admin(request)
    orgs = [o.as_json() for o in admin.services.accounts.orgs() if admin.issuer.admin or o.name == admin.issuer.name]
    return JSONResponse({"organisations": orgs})


async def create_org(request: Request) -> Response:
    admin = await _admin(request)
    admin.deployment()
    body = await _body(admin)
    try:
        name = validate.org_name(body.get("name"))
        org = validate.organisation(body, Organisation(name=name, created=admin.now.isoformat()))
    except Invalid as exc:
        raise _invalid(exc) from None
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
    admin = await _admin(request)
    org = await _org(admin, _path(request, "name"))
    return JSONResponse({"organisation": org.as_json()})


async def change_org(request: Request) -> Response:
    admin = await _admin(request)
    name = _path(request, "name")
    await _org(admin, name)
    body = await _body(admin)
    if set(body) - {"approval"} and not admin.issuer.admin:  # its rights are the deployment's to grant
        raise Rejected(ROLE_REQUIRED, f"only an admin of {DEPLOYMENT_ORG!r} may change an organisation's rights")
    if name == DEPLOYMENT_ORG:
        for field in sorted(set(body) - {"approval"}):  # every right already: nothing to change but lock out
            raise _invalid(Invalid(field, "the deployment's own organisation keeps its rights"))

    def change(old: Organisation) -> Organisation:
        try:
            new = validate.organisation(body, old)
        except Invalid as exc:
            raise _invalid(exc) from None
        if new.approval != old.approval:  # the policy waits for a second admin
            new = replace(new, approval=old.approval, proposed=Proposal(approval=new.approval, by=admin.actor, at=admin.now))
        return new

    old, new = await _change(admin, org_key(name), Organisation.from_json, change)
    if not new.same_as(replace(old, proposed=new.proposed)):
        await admin.audit(Action.ACCOUNT_CHANGED, name, name, {"fields": sorted(k for k in body if k != "approval")})
    proposing = "approval" in body and new.proposed is not None and new.proposed != old.proposed
    if proposing:
        await admin.audit(Action.POLICY_PROPOSED, name, name, {"approval": new.proposed.approval.as_json()})
    return _org_answer(new, 200) if proposing else JSONResponse({"organisation": new.as_json()})


async def confirm_policy(request: Request) -> Response:
    """A second admin makes the proposed approval policy the organisation's."""
    admin = await _admin(request)
    name = _path(request, "name")
    await _org(admin, name)
    body = await _body(admin)
    try:
        expected = validate.approval(body["approval"]) if "approval" in body else None
    except Invalid as exc:
        raise _invalid(exc) from None

    def change(old: Organisation) -> Organisation:
        proposal = old.proposed
        if proposal is None or (expected is not None and expected != proposal.approval):
            raise Rejected(NO_PROPOSAL, f"{name!r} has {'another' if proposal else 'no'} proposed policy")
        if proposal.by == admin.actor:
            raise Rejected(POLICY_NEEDS_SECOND_ADMIN, f"{admin.actor} proposed it; another admin must confirm")
        return replace(old, approval=proposal.approval, proposed=None)

    old, new = await _change(admin, org_key(name), Organisation.from_json, change)
    assert old.proposed is not None
    await admin.audit(Action.POLICY_CHANGED, name, name, {
        "approval": new.approval.as_json(), "before": old.approval.as_json(), "proposed_by": old.proposed.by,
    })
    return JSONResponse({"organisation": new.as_json(), "state": "changed"})


async def disable_org(request: Request) -> Response:
    admin = await _admin(request)
    admin.deployment()
    name = _path(request, "name")
    if name == DEPLOYMENT_ORG:
        raise _invalid(Invalid("name", "the deployment's own organisation cannot be disabled"))
    await _org(admin, name)
    _, new = await _change(admin, org_key(name), Organisation.from_json, lambda o: replace(o, active=False))
    await admin.audit(Action.ACCOUNT_REVOKED, name, name, {"kind": "organisation"})
    return JSONResponse({"organisation": new.as_json()})


# Users and API clients


def _kind(request: Request) -> str:
    return "user" if request.url.path.startswith("/api/v1/admin/users") else "client"


async def list_principals(request: Request) -> Response:
    admin = await _admin(request)
    org = request.query_params.get("org", "" if admin.issuer.admin else admin.issuer.name)
    _scope_listing(admin, org)
    found = admin.services.accounts.principals(org=org, kind=_kind(request))
    return JSONResponse({f"{_kind(request)}s": [p.as_json() for p in found]})


def _scope_listing(admin: _Admin, org: str) -> None:
    """One organisation's listing needs its admin; all organisations', a deployment admin."""
    if org:
        admin.scope(org)
    else:
        admin.deployment()


async def create_principal(request: Request) -> Response:
    admin = await _admin(request)
    kind = _kind(request)
    body = await _body(admin)
    try:
        principal_id = validate.principal_id(kind, body.get("name"))
        org = validate.org_name(body.get("org", admin.issuer.name))
        fields = {k: v for k, v in body.items() if k != "name"}
        fields.setdefault("roles", ["author"])
        principal = validate.principal(fields, Principal(id=principal_id, org=org, created=admin.now.isoformat()))
    except Invalid as exc:
        raise _invalid(exc) from None
    await _org(admin, org)
    if not await admin.services.accounts.create(principal_key(principal_id), principal.as_json()):
        raise Rejected(ACCOUNT_EXISTS, f"{principal_id} exists")
    await admin.audit(Action.ACCOUNT_CREATED, principal_id, org, {"kind": kind, "roles": sorted(principal.roles)})
    return JSONResponse({kind: principal.as_json()}, status_code=201)


async def _principal(admin: _Admin, request: Request) -> Principal:
    kind = _kind(request)
    try:
        principal_id = validate.principal_id(kind, _path(request, "name"))
    except Invalid:
        raise Rejected(ACCOUNT_UNKNOWN, f"no {kind} {_path(request, 'name')!r}") from None
    found = await admin.services.accounts.principal(principal_id)
    if found is None:
        raise Rejected(ACCOUNT_UNKNOWN, f"no {principal_id}")
    admin.scope(found.org)
    return found


async def show_principal(request: Request) -> Response:
    admin = await _admin(request)
    found = await _principal(admin, request)
    return JSONResponse({found.kind: found.as_json()})


def _keep_bootstrap_admin(found: Principal) -> None:
    """The bootstrap admin stays an active admin, so that a deployment cannot lock itself
    out through the API; its tokens are revoked like any (docs/accounts.md)."""
    if found.id == BOOTSTRAP_ADMIN:
        raise _invalid(Invalid("name", f"{BOOTSTRAP_ADMIN} stays an admin; revoke its tokens instead"))


async def change_principal(request: Request) -> Response:
    admin = await _admin(request)
    found = await _principal(admin, request)
    _keep_bootstrap_admin(found)
    body = await _body(admin)

    def change(old: Principal) -> Principal:
        try:
            return validate.principal(body, old)
        except Invalid as exc:
            raise _invalid(exc) from None

    _, new = await _change(admin, principal_key(found.id), Principal.from_json, change)
    await admin.audit(Action.ACCOUNT_CHANGED, found.id, found.org, {"fields": sorted(body), "roles": sorted(new.roles)})
    return JSONResponse({new.kind: new.as_json()})


async def disable_principal(request: Request) -> Response:
    admin = await _admin(request)
    found = await _principal(admin, request)
    _keep_bootstrap_admin(found)
    _, new = await _change(admin, principal_key(found.id), Principal.from_json, lambda p: replace(p, active=False))
    await admin.audit(Action.ACCOUNT_REVOKED, found.id, found.org, {"kind": found.kind})
    return JSONResponse({new.kind: new.as_json()})


# Tokens


async def create_token(request: Request) -> Response:
    """A new token for a user, a client or an organisation itself; the secret is in this
    answer only."""
    admin = await _admin(request)
    body = await _body(admin)
    try:
        validate.unknown_fields(body, frozenset({"principal", "org", "roles", "expires", "label"}))
        principal_id = str(body.get("principal") or "")
        expires = validate.expiry(body.get("expires"), admin.now)
        label = body.get("label", "")
        if not isinstance(label, str) or len(label) > validate.MAX_TEXT:
            raise Invalid("label", f"a string of at most {validate.MAX_TEXT} characters")
        roles = validate.roles(body["roles"]) if not principal_id else frozenset()
    except KeyError:
        raise _invalid(Invalid("roles", "an organisation's own token needs roles")) from None
    except Invalid as exc:
        raise _invalid(exc) from None
    if principal_id:
        principal = await admin.services.accounts.principal(principal_id)
        if principal is None:
            raise Rejected(ACCOUNT_UNKNOWN, f"no {principal_id[:100]}")
        org = principal.org
    else:
        try:
            org = validate.org_name(body.get("org"))
        except Invalid as exc:
            raise _invalid(Invalid("org", str(exc))) from None
    await _org(admin, org)
    return await _issue(admin, Token(digest="", org=org, principal=principal_id, roles=roles, expires=expires,
                                     label=label), status=201)


async def _issue(admin: _Admin, template: Token, *, status: int) -> Response:
    secret = new_token("tck")
    token = replace(template, digest=token_digest(secret), created=admin.now, revoked=None)
    await admin.services.accounts.put(token_key(token.digest), token.as_json())
    await admin.audit(Action.TOKEN_CREATED, token.id, token.org,
                      {"principal": token.principal, "expires": token.public()["expires"]})
    return JSONResponse({"token": secret, **token.public()}, status_code=status)


async def list_tokens(request: Request) -> Response:
    admin = await _admin(request)
    org = request.query_params.get("org", "" if admin.issuer.admin else admin.issuer.name)
    _scope_listing(admin, org)
    principal = request.query_params.get("principal", "")
    found = admin.services.accounts.tokens(org=org, principal=principal)
    return JSONResponse({"tokens": [t.public() for t in found]})


async def _token(admin: _Admin, request: Request) -> Token:
    wanted = _path(request, "token_id")
    if wanted == "self":
        found = await admin.services.accounts.token(token_digest(bearer(request) or ""))
    else:
        found = admin.services.accounts.token_by_id(wanted)
    if found is None:
        raise Rejected(ACCOUNT_UNKNOWN, f"no token {wanted!r}")
    admin.scope(found.org)
    return found


async def _revoke(admin: _Admin, token: Token) -> Token:
    def change(old: Token) -> Token:
        return old if old.revoked is not None else replace(old, revoked=admin.now)

    old, new = await _change(admin, token_key(token.digest), Token.from_json, change)
    if old.revoked is None:
        await admin.audit(Action.TOKEN_REVOKED, token.id, token.org, {"principal": token.principal})
    revoked: Token = new
    return revoked


async def revoke_token(request: Request) -> Response:
    admin = await _admin(request)
    token = await _revoke(admin, await _token(admin, request))
    return JSONResponse({"token": token.public()})


async def rotate_token(request: Request) -> Response:
    """A new token in place of the given one (same owner, roles and expiry unless given);
    the old one is revoked once the new one is stored."""
    admin = await _admin(request)
    old = await _token(admin, request)
    body = await _body(admin)
    try:
        validate.unknown_fields(body, frozenset({"expires"}))
        expires = validate.expiry(body["expires"], admin.now) if "expires" in body else old.expires
    except Invalid as exc:
        raise _invalid(exc) from None
    answer = await _issue(admin, replace(old, expires=expires), status=201)
    await _revoke(admin, old)
    return answer


Endpoint = Callable[[Request], Awaitable[Response]]


def _by_method(**handlers: Endpoint) -> Endpoint:
    """One endpoint for a path served by several methods (one route per path; HEAD is GET)."""

    async def endpoint(request: Request) -> Response:
        return await handlers.get(request.method, handlers["GET"])(request)

    return endpoint


def _routes() -> list[Route]:
    routes = [
        Route("/api/v1/admin/orgs", _by_method(GET=list_orgs, POST=create_org), methods=["GET", "POST"]),
        Route("/api/v1/admin/orgs/{name}", _by_method(GET=show_org, PATCH=change_org), methods=["GET", "PATCH"]),
        Route("/api/v1/admin/orgs/{name}/disable", disable_org, methods=["POST"]),
        Route("/api/v1/admin/orgs/{name}/policy/confirm", confirm_policy, methods=["POST"]),
    ]
    for kind in ("users", "clients"):
        routes += [
            Route(f"/api/v1/admin/{kind}", _by_method(GET=list_principals, POST=create_principal),
                  methods=["GET", "POST"]),
            Route(f"/api/v1/admin/{kind}/{{name}}", _by_method(GET=show_principal, PATCH=change_principal),
                  methods=["GET", "PATCH"]),
            Route(f"/api/v1/admin/{kind}/{{name}}/disable", disable_principal, methods=["POST"]),
        ]
    return routes + [
        Route("/api/v1/admin/tokens", _by_method(GET=list_tokens, POST=create_token), methods=["GET", "POST"]),
        Route("/api/v1/admin/tokens/{token_id}/revoke", revoke_token, methods=["POST"]),
        Route("/api/v1/admin/tokens/{token_id}/rotate", rotate_token, methods=["POST"]),
    ]


ROUTES = _routes()

"""Admin API, tokens: create (the secret shown once), list, revoke, rotate (docs/accounts.md)."""

from __future__ import annotations

from dataclasses import replace

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tocsin.accounts import validate
from tocsin.accounts.model import Token, new_token, token_digest, token_key
from tocsin.accounts.validate import Invalid
from tocsin.api.admin import Admin, admin_for, body_of, change_record, invalid, org_of, path_param, scope_listing
from tocsin.api.auth import bearer
from tocsin.errors import ACCOUNT_UNKNOWN, Rejected
from tocsin.store.audit import Action


async def create_token(request: Request) -> Response:
    """A new token for a user, a client or an organisation itself; the secret is in this
    answer only."""
    admin = await admin_for(request)
    body = await body_of(admin)
    try:
        validate.unknown_fields(body, frozenset({"principal", "org", "roles", "expires", "label"}))
        principal_id = str(body.get("principal") or "")
        expires = validate.expiry(body.get("expires"), admin.now)
        label = body.get("label", "")
        if not isinstance(label, str) or len(label) > validate.MAX_TEXT:
            raise Invalid("label", f"a string of at most {validate.MAX_TEXT} characters")
        roles = validate.roles(body["roles"]) if not principal_id else frozenset()
    except KeyError:
        raise invalid(Invalid("roles", "an organisation's own token needs roles")) from None
    except Invalid as exc:
        raise invalid(exc) from None
    if principal_id:
        principal = await admin.services.accounts.principal(principal_id)
        if principal is None:
            raise Rejected(ACCOUNT_UNKNOWN, f"no {principal_id[:100]}")
        org = principal.org
    else:
        try:
            org = validate.org_name(body.get("org"))
        except Invalid as exc:
            raise invalid(Invalid("org", str(exc))) from None
    await org_of(admin, org)
    return await _issue(admin, Token(digest="", org=org, principal=principal_id, roles=roles, expires=expires,
                                     label=label), status=201)


async def _issue(admin: Admin, template: Token, *, status: int) -> Response:
    secret = new_token("tck")
    token = replace(template, digest=token_digest(secret), created=admin.now, revoked=None)
    await admin.services.accounts.put(token_key(token.digest), token.as_json())
    await admin.audit(Action.TOKEN_CREATED, token.id, token.org,
                      {"principal": token.principal, "expires": token.public()["expires"]})
    return JSONResponse({"token": secret, **token.public()}, status_code=status)


async def list_tokens(request: Request) -> Response:
    admin = await admin_for(request)
    org = request.query_params.get("org", "" if admin.issuer.admin else admin.issuer.name)
    scope_listing(admin, org)
    principal = request.query_params.get("principal", "")
    found = admin.services.accounts.tokens(org=org, principal=principal)
    return JSONResponse({"tokens": [t.public() for t in found]})


async def _token(admin: Admin, request: Request) -> Token:
    wanted = path_param(request, "token_id")
    if wanted == "self":
        found = await admin.services.accounts.token(token_digest(bearer(request) or ""))
    else:
        found = admin.services.accounts.token_by_id(wanted)
    if found is None:
        raise Rejected(ACCOUNT_UNKNOWN, f"no token {wanted!r}")
    admin.scope(found.org)
    return found


async def _revoke(admin: Admin, token: Token) -> Token:
    def change(old: Token) -> Token:
        return old if old.revoked is not None else replace(old, revoked=admin.now)

    old, new = await change_record(admin, token_key(token.digest), Token.from_json, change)
    if old.revoked is None:
        await admin.audit(Action.TOKEN_REVOKED, token.id, token.org, {"principal": token.principal})
    revoked: Token = new
    return revoked


async def revoke_token(request: Request) -> Response:
    admin = await admin_for(request)
    token = await _revoke(admin, await _token(admin, request))
    return JSONResponse({"token": token.public()})


async def rotate_token(request: Request) -> Response:
    """A new token in place of the given one (same owner, roles and expiry unless given);
    the old one is revoked once the new one is stored."""
    admin = await admin_for(request)
    old = await _token(admin, request)
    body = await body_of(admin)
    try:
        validate.unknown_fields(body, frozenset({"expires"}))
        expires = validate.expiry(body["expires"], admin.now) if "expires" in body else old.expires
    except Invalid as exc:
        raise invalid(exc) from None
    answer = await _issue(admin, replace(old, expires=expires), status=201)
    await _revoke(admin, old)
    return answer

"""`tocsin issuers|users|clients|tokens ...`: the admin API (api/admin.py) from a shell.

Each command takes --url/--token (TOCSIN_URL/TOCSIN_TOKEN) and --json, prints the answer,
and exits 2 with the problem's code when refused (3 when no node answered).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click
import httpx

from tocsin.cli.issue_cmd import EXIT_REFUSED, EXIT_UNAVAILABLE
from tocsin.cli.node_urls import url_option

F = TypeVar("F", bound=Callable[..., Any])


def common(command: F) -> F:
    command = click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")(command)
    command = click.option("--token", envvar="TOCSIN_TOKEN", required=True,
                           help="Your token (an admin's for accounts); default TOCSIN_TOKEN.")(command)
    return url_option(command)


def call(urls: list[str], token: str, method: str, path: str, body: dict[str, Any] | None = None,
         params: dict[str, str] | None = None, content: bytes | None = None,
         timeout_s: float = 15) -> tuple[int, dict[str, Any]]:
    """The answer of the first node that answers: its status and JSON body. `content`: a
    body sent as it is (JSON), in place of `body`; `token` "" sends none (public reads).

    Raises:
        SystemExit: 3 when no node answered.
    """
    last: Exception | None = None
    for url in urls:
        try:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            if content is not None:
                headers["Content-Type"] = "application/json"
            response = httpx.request(method, f"{url}{path}", json=body, params=params, timeout=timeout_s,
                                     headers=headers, content=content)
        except httpx.HTTPError as exc:
            last = exc
            continue
        try:
            answer: dict[str, Any] = response.json()
        except ValueError:
            answer = {"code": "client.unreadable", "detail": response.text[:300]}
        return response.status_code, answer
    click.echo(json.dumps({"code": "client.unreachable", "detail": repr(last)[:300]}), err=True)
    raise SystemExit(EXIT_UNAVAILABLE)


def run(urls: list[str], token: str, as_json: bool, method: str, path: str, *,
         body: dict[str, Any] | None = None, params: dict[str, str] | None = None,
         show: Callable[[dict[str, Any]], str] | None = None, content: bytes | None = None,
         timeout_s: float = 15) -> None:
    status, answer = call(urls, token, method, path, body, params, content, timeout_s)
    if status >= 400:
        click.echo(f"{answer.get('code', status)}: {answer.get('detail', '')}" if not as_json else json.dumps(answer),
                   err=True)
        raise SystemExit(EXIT_UNAVAILABLE if status >= 500 else EXIT_REFUSED)
    if as_json or show is None:
        click.echo(json.dumps(answer, ensure_ascii=False))
    else:
        click.echo(show(answer))
    if answer.get("state") == "proposed":
        click.echo(f"{answer.get('code')}: {answer.get('detail')}", err=True)


def _org_line(org: dict[str, Any]) -> str:
    approval = org.get("approval", {})
    proposed = org.get("proposed")
    waiting = f" (proposed: {proposed['approval']['mode']} by {proposed['by']})" if proposed else ""
    return (f"{org['name']}  {org.get('state')}  senders={','.join(org.get('senders', []))}  "
            f"approval={approval.get('mode')}{waiting}  alerts/min={org.get('alerts_per_min')}")


def _org_fields(senders: tuple[str, ...], statuses: tuple[str, ...], severities: tuple[str, ...],
                approval: str | None, polygons: tuple[str, ...], circles: tuple[str, ...], anywhere: bool,
                rate: int | None, delegated: tuple[str, ...], named: tuple[str, ...] = ()) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for name, values in (("senders", senders), ("statuses", statuses), ("severities", severities),
                         ("delegated", delegated)):
        if values:
            body[name] = list(values)
    if approval:
        mode, _, severity = approval.partition(":")
        body["approval"] = {"mode": mode, **({"severity": severity} if severity else {})}
    if polygons or circles or named:
        body["territory"] = {"polygons": list(polygons), "circles": list(circles), "areas": list(named)}
    elif anywhere:
        body["territory"] = None
    if rate is not None:
        body["alerts_per_min"] = rate
    return body


def _org_options(command: F) -> F:
    for option in reversed([
        click.option("--sender", "senders", multiple=True, help="A CAP sender it may use (repeat)."),
        click.option("--status", "statuses", multiple=True, help="A CAP status it may send (repeat)."),
        click.option("--severity", "severities", multiple=True, help="A CAP severity it may send (repeat)."),
        click.option("--approval", help="always | none | above:<Severity> (a change takes two admins)."),
        click.option("--territory-polygon", "polygons", multiple=True, help="A CAP polygon of its territory."),
        click.option("--territory-circle", "circles", multiple=True, help="A CAP circle of its territory."),
        click.option("--territory-area", "named", multiple=True,
                     help="A named area of its territory, SCHEME:CODE such as INSEE-DEP:06 (docs/areas.md)."),
        click.option("--anywhere", is_flag=True, help="No territory: it may alert anywhere."),
        click.option("--rate", type=int, help="Alerts a minute on each node (0: no limit)."),
        click.option("--delegate", "delegated", multiple=True, help="An organisation whose alerts it may update."),
    ]):
        command = option(command)
    return command


@click.group()
def issuers() -> None:
    """Issuer organisations: list, show, add, set, disable, confirm-policy."""


@issuers.command("list")
@common
def issuers_list(urls: list[str], token: str, as_json: bool) -> None:
    """Every organisation this admin may see."""
    run(urls, token, as_json, "GET", "/api/v1/admin/orgs",
         show=lambda a: "\n".join(_org_line(o) for o in a["organisations"]))


@issuers.command("show")
@click.argument("name")
@common
def issuers_show(name: str, urls: list[str], token: str, as_json: bool) -> None:
    """One organisation, in full (JSON)."""
    run(urls, token, True, "GET", f"/api/v1/admin/orgs/{name}")


@issuers.command("add")
@click.argument("name")
@_org_options
@common
def issuers_add(name: str, urls: list[str], token: str, as_json: bool, **fields: Any) -> None:
    """Create an organisation (a policy other than `always` waits for a second admin)."""
    run(urls, token, as_json, "POST", "/api/v1/admin/orgs", body={"name": name, **_org_fields(**fields)},
         show=lambda a: _org_line(a["organisation"]))


@issuers.command("set")
@click.argument("name")
@_org_options
@click.option("--enable", is_flag=True, help="Enable a disabled organisation.")
@common
def issuers_set(name: str, urls: list[str], token: str, as_json: bool, enable: bool, **fields: Any) -> None:
    """Change an organisation; an approval policy change is proposed for a second admin."""
    body = _org_fields(**fields)
    if enable:
        body["disabled"] = False
    run(urls, token, as_json, "PATCH", f"/api/v1/admin/orgs/{name}", body=body,
         show=lambda a: _org_line(a["organisation"]))


@issuers.command("confirm-policy")
@click.argument("name")
@common
def issuers_confirm(name: str, urls: list[str], token: str, as_json: bool) -> None:
    """Confirm the approval policy another admin proposed."""
    run(urls, token, as_json, "POST", f"/api/v1/admin/orgs/{name}/policy/confirm", body={},
         show=lambda a: _org_line(a["organisation"]))


@issuers.command("disable")
@click.argument("name")
@common
def issuers_disable(name: str, urls: list[str], token: str, as_json: bool) -> None:
    """Disable an organisation: every token of it is refused at once."""
    run(urls, token, as_json, "POST", f"/api/v1/admin/orgs/{name}/disable",
         show=lambda a: _org_line(a["organisation"]))


def _principal_line(p: dict[str, Any]) -> str:
    return f"{p['id']}  {p['org']}  {p.get('state')}  roles={','.join(p.get('roles', []))}"


def _principal_group(kind: str) -> click.Group:
    """`tocsin users ...` or `tocsin clients ...`: the same commands for either kind."""
    path = f"/api/v1/admin/{kind}s"

    @click.group(name=f"{kind}s", help=f"{kind.capitalize()}s of issuer organisations: list, add, set, disable.")
    def group() -> None:
        pass

    @group.command("list")
    @click.option("--org", default="", help="Only this organisation's.")
    @common
    def listing(org: str, urls: list[str], token: str, as_json: bool) -> None:
        """List them."""
        run(urls, token, as_json, "GET", path, params={"org": org} if org else None,
             show=lambda a: "\n".join(_principal_line(p) for p in a[f"{kind}s"]))

    @group.command("add")
    @click.argument("name")
    @click.option("--org", required=True, help="The organisation it acts for.")
    @click.option("--role", "roles", multiple=True, default=("author",), show_default=True,
                  help="author, approver, admin (repeat).")
    @common
    def add(name: str, org: str, roles: tuple[str, ...], urls: list[str], token: str, as_json: bool) -> None:
        """Create one."""
        run(urls, token, as_json, "POST", path, body={"name": name, "org": org, "roles": list(roles)},
             show=lambda a: _principal_line(a[kind]))

    @group.command("set")
    @click.argument("name")
    @click.option("--role", "roles", multiple=True, help="Its roles from now on (repeat).")
    @click.option("--enable", is_flag=True, help="Enable it again.")
    @common
    def change(name: str, roles: tuple[str, ...], enable: bool, urls: list[str], token: str, as_json: bool) -> None:
        """Change its roles, or enable it again."""
        body: dict[str, Any] = {"roles": list(roles)} if roles else {}
        if enable:
            body["disabled"] = False
        run(urls, token, as_json, "PATCH", f"{path}/{name}", body=body, show=lambda a: _principal_line(a[kind]))

    @group.command("disable")
    @click.argument("name")
    @common
    def disable(name: str, urls: list[str], token: str, as_json: bool) -> None:
        """Disable it: its tokens are refused at once."""
        run(urls, token, as_json, "POST", f"{path}/{name}/disable", show=lambda a: _principal_line(a[kind]))

    return group


users = _principal_group("user")
clients = _principal_group("client")


def _token_line(t: dict[str, Any]) -> str:
    state = "revoked" if t.get("revoked") else "valid"
    return (f"{t['id']}  {t['org']}  {t.get('principal') or '(organisation)'}  {state}  "
            f"expires={t.get('expires') or 'never'}  {t.get('label', '')}").rstrip()


def _new_token(answer: dict[str, Any]) -> str:
    return f"{_token_line(answer)}\ntoken, shown once; keep it safe:\n  {answer['token']}"


@click.group()
def tokens() -> None:
    """Tokens: create, list, revoke, rotate (stored hashed; a secret is shown once)."""


@tokens.command("create")
@click.option("--principal", default="", help="user:<name> or client:<name>.")
@click.option("--org", default="", help="Or: a token of the organisation itself ...")
@click.option("--role", "roles", multiple=True, help="... with these roles (repeat).")
@click.option("--expires", default=None, help="ISO 8601 time it stops working (default: never).")
@click.option("--label", default="", help="What it is for.")
@common
def tokens_create(principal: str, org: str, roles: tuple[str, ...], expires: str | None, label: str,
                  urls: list[str], token: str, as_json: bool) -> None:
    """Create a token for a user, a client, or an organisation itself."""
    if bool(principal) == bool(org):
        raise click.UsageError("give --principal, or --org with --role")
    body: dict[str, Any] = {"principal": principal} if principal else {"org": org, "roles": list(roles)}
    body.update(expires=expires, label=label)
    run(urls, token, as_json, "POST", "/api/v1/admin/tokens", body=body, show=_new_token)


@tokens.command("list")
@click.option("--org", default="", help="Only this organisation's.")
@click.option("--principal", default="", help="Only this user's or client's.")
@common
def tokens_list(org: str, principal: str, urls: list[str], token: str, as_json: bool) -> None:
    """List tokens (ids, owners, dates; never a secret)."""
    params = {k: v for k, v in (("org", org), ("principal", principal)) if v}
    run(urls, token, as_json, "GET", "/api/v1/admin/tokens", params=params,
         show=lambda a: "\n".join(_token_line(t) for t in a["tokens"]))


@tokens.command("revoke")
@click.argument("token_id")
@common
def tokens_revoke(token_id: str, urls: list[str], token: str, as_json: bool) -> None:
    """Revoke a token (`self`: the one given with --token); refused on every node at once."""
    run(urls, token, as_json, "POST", f"/api/v1/admin/tokens/{token_id}/revoke", body={},
         show=lambda a: _token_line(a["token"]))


@tokens.command("rotate")
@click.argument("token_id")
@click.option("--expires", default=None, help="A new expiry (default: the old token's).")
@common
def tokens_rotate(token_id: str, expires: str | None, urls: list[str], token: str, as_json: bool) -> None:
    """A new token in place of TOKEN_ID (`self`: the one given with --token), which is revoked."""
    run(urls, token, as_json, "POST", f"/api/v1/admin/tokens/{token_id}/rotate",
         body={"expires": expires} if expires else {}, show=_new_token)

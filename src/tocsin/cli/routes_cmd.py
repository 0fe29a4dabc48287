"""`tocsin routes add|list|remove|test`: CAP forwarding routes over the admin API
(api/cap_routes.py, docs/cap-forwarding.md). A deployment admin's token; exit codes as the
accounts commands: 2 refused, 3 no node answered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from tocsin.cli.accounts_cmd import call, common, run
from tocsin.cli.issue_cmd import EXIT_REFUSED, EXIT_UNAVAILABLE
from tocsin.delivery.routes import DEFAULT_STATUSES, MAX_TOKEN_CHARS, STATUSES


@click.group()
def routes() -> None:
    """CAP forwarding routes: add, list, remove, test."""


def _when(entry: dict[str, Any] | None) -> str:
    return str(entry.get("at", "-")) if entry else "never"


def route_line(route: dict[str, Any]) -> str:
    """One route and its status on one line, then what is wrong, if anything."""
    status = route.get("status") or {}
    link = status.get("link_test")
    failure = status.get("last_failure")
    state = "disabled" if not route.get("enabled") else "ok" if status.get("ok") else "FAILING"
    line = (f"{route['name']}  {state}  {route['url']}  statuses={','.join(route['statuses'])}  "
            f"token={'yes' if route.get('has_token') else 'no'}  pending={status.get('pending', '?')}  "
            f"last-success={_when(status.get('last_success'))}  "
            f"last-failure={_when(failure)}{' (' + str(failure.get('reason')) + ')' if failure else ''}  "
            f"link-test={'never' if not link else ('ok' if link.get('ok') else 'failed: ' + str(link.get('reason')))}")
    detail = status.get("detail")
    return f"{line}\n  {detail}" if detail else line


def _read_token(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        click.echo(f"route.invalid: token file {path}: {exc}", err=True)
        raise SystemExit(EXIT_REFUSED) from None
    if not token or len(token) > MAX_TOKEN_CHARS:
        click.echo(f"route.invalid: token file {path}: empty or over {MAX_TOKEN_CHARS} characters", err=True)
        raise SystemExit(EXIT_REFUSED)
    return token


@routes.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--status", "statuses", multiple=True, type=click.Choice(STATUSES),
              help=f"A CAP status to forward (repeat; default {', '.join(DEFAULT_STATUSES)}). Draft: never.")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A file holding the bearer token the downstream expects (stored in the routes bucket).")
@click.option("--disabled", is_flag=True, help="Store the route without forwarding to it yet.")
@common
def routes_add(name: str, url: str, statuses: tuple[str, ...], token_file: Path | None, disabled: bool,
               urls: list[str], token: str, as_json: bool) -> None:
    """Add (or replace) route NAME posting each alert's signed CAP to URL."""
    body: dict[str, Any] = {"url": url, "enabled": not disabled}
    if statuses:
        body["statuses"] = list(statuses)
    route_token = _read_token(token_file)
    if route_token is not None:
        body["token"] = route_token
    run(urls, token, as_json, "PUT", f"/api/v1/admin/routes/{quote(name, safe='')}", body=body,
        show=lambda a: route_line({**a["route"], "status": a["status"]}))


@routes.command("list")
@common
def routes_list(urls: list[str], token: str, as_json: bool) -> None:
    """Every route with its status: last success, last failure, link test, deliveries waiting."""
    run(urls, token, as_json, "GET", "/api/v1/admin/routes",
        show=lambda a: "\n".join(route_line(r) for r in a["routes"]) or "no routes")


@routes.command("remove")
@click.argument("name")
@common
def routes_remove(name: str, urls: list[str], token: str, as_json: bool) -> None:
    """Remove route NAME: nothing more goes to it; what waited for it is dropped."""
    run(urls, token, as_json, "DELETE", f"/api/v1/admin/routes/{quote(name, safe='')}", show=lambda a: f"{a['route']['name']} removed")


# `tocsin routes test`: the downstream did not accept the link test.
EXIT_LINK_FAILED = 1


@routes.command("test")
@click.argument("name")
@common
def routes_test(name: str, urls: list[str], token: str, as_json: bool) -> None:
    """Post a link test (a System message signed by the deployment) to route NAME now;
    exits 1 when the downstream did not accept it."""
    status, answer = call(urls, token, "POST", f"/api/v1/admin/routes/{quote(name, safe='')}/test")
    if status >= 400:
        click.echo(json.dumps(answer) if as_json else f"{answer.get('code', status)}: {answer.get('detail', '')}",
                   err=True)
        raise SystemExit(EXIT_UNAVAILABLE if status >= 500 else EXIT_REFUSED)
    link = answer["link_test"]
    click.echo(json.dumps(answer) if as_json else
               f"{name}: link test {'ok' if link['ok'] else 'FAILED: ' + str(link['reason'])}")
    if not link["ok"]:
        raise SystemExit(EXIT_LINK_FAILED)

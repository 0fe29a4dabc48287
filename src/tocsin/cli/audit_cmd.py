"""`tocsin audit`: read the audit log (GET /api/v1/audit), oldest first, page by page."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import click
import httpx

from tocsin.cli.issue_cmd import EXIT_REFUSED, EXIT_UNAVAILABLE
from tocsin.cli.node_urls import url_option

# --all follows the next links at most this many pages (200 entries each at most).
MAX_PAGES = 1000


def _line(entry: dict[str, Any]) -> str:
    detail = " ".join(f"{k}={v}" for k, v in sorted((entry.get("detail") or {}).items()))
    return (f"{entry.get('seq', '')}\t{entry['at']}\t{entry['action']}\t{entry['subject']}\t{entry['actor']}"
            f"\t{entry.get('org', '')}\t{entry.get('source', '')}\t{detail}").rstrip()


@click.command()
@url_option
@click.option("--token", envvar="TOCSIN_TOKEN", help="Token; default TOCSIN_TOKEN. An admin reads everything.")
@click.option("--action", "actions", multiple=True, help="Only this action (repeatable): submitted, approved, ...")
@click.option("--subject", default="", help="Only entries about this alert id or account name.")
@click.option("--actor", default="", help="Only entries by this actor (user:alice, client:feed, node:n1).")
@click.option("--org", default="", help="Only this organisation's entries (an admin's filter).")
@click.option("--after", type=int, default=0, help="Start after this seq.")
@click.option("--limit", type=click.IntRange(1, 200), default=50, help="Entries per page.")
@click.option("--all", "every", is_flag=True, help="Follow the next links to the end of the log.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per entry.")
def audit(urls: list[str], token: str | None, actions: tuple[str, ...], subject: str, actor: str, org: str,
          after: int, limit: int, every: bool, as_json: bool) -> None:
    """Print audit entries: seq, time, action, subject, actor, organisation, source, detail."""
    if not token:
        raise click.UsageError("give --token or set TOCSIN_TOKEN")
    params: list[tuple[str, str]] = [("action", a) for a in actions]
    params += [(k, v) for k, v in (("subject", subject), ("actor", actor), ("org", org)) if v]
    params += [("after", str(after)), ("limit", str(limit))]
    path: str | None = "/api/v1/audit"
    with httpx.Client(base_url=urls[0], timeout=10, headers={"Authorization": f"Bearer {token}"}) as http:
        for _ in range(MAX_PAGES if every else 1):
            if path is None:
                break
            body = _page(http, path, params)
            params = []  # a next link carries its query
            for entry in body["entries"]:
                click.echo(json.dumps(entry, ensure_ascii=False) if as_json else _line(entry))
            path = body["links"].get("next")
    if path is not None and not every and not as_json:
        click.echo(f"more: --after {path.rsplit('after=', 1)[-1].split('&')[0]}", err=True)


def _page(http: httpx.Client, path: str, params: list[tuple[str, str]]) -> dict[str, Any]:
    try:
        response = http.get(path, params=urlencode(params) if params else None)
    except httpx.HTTPError as exc:
        click.echo(json.dumps({"code": "client.unreachable", "detail": repr(exc)[:200]}), err=True)
        raise SystemExit(EXIT_UNAVAILABLE) from None
    if response.status_code >= 400:
        click.echo(response.text[:500], err=True)
        raise SystemExit(EXIT_UNAVAILABLE if response.status_code >= 500 else EXIT_REFUSED)
    body: dict[str, Any] = response.json()
    return body

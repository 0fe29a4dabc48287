"""`tocsin sources add|list|status|remove`: relayed CAP sources over the admin API
(api/sources.py, docs/sources.md). A deployment admin's token; exit codes as the accounts
commands: 2 refused, 3 no node answered.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import click

from tocsin.cli.accounts_cmd import common, run
from tocsin.cli.issue_cmd import EXIT_REFUSED
from tocsin.sources.model import MAX_KEY_CHARS, REQUIRE_SIGNED, STATUSES, UNSIGNED_OK


@click.group()
def sources() -> None:
    """Other authorities' CAP feeds this deployment relays: add, list, status, remove."""


def name_for(url: str) -> str:
    """A source name from its URL's host ("alerts.weather.gov" -> "alerts-weather-gov")."""
    host = (urlsplit(url).hostname or "source").lower()
    name = re.sub(r"[^a-z0-9]+", "-", host).strip("-")[:63].rstrip("-")
    return name or "source"


def _when(entry: dict[str, Any] | None) -> str:
    return str(entry.get("at", "-")) if entry else "never"


def source_line(source: dict[str, Any]) -> str:
    """One source and its status on one line, then its last error, if any."""
    status = source.get("status") or {}
    error = status.get("last_error")
    line = (f"{source['name']}  {status.get('state', '?')}  {source['url']}  every {source['interval_s']:g} s  "
            f"signatures={source['signatures']}  errors={status.get('consecutive_errors', 0)}  "
            f"last-success={_when(status.get('last_success'))}  last-alert={_when(status.get('last_alert'))}  "
            f"last-error={_when(error)}{' (' + str(error.get('reason')) + ')' if error else ''}")
    return f"{line}\n  {error.get('detail', '')}" if error and status.get("consecutive_errors") else line


def _read(path: Path, what: str, limit: int) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        click.echo(f"source.invalid: {what} {path}: {exc}", err=True)
        raise SystemExit(EXIT_REFUSED) from None
    if len(text) > limit:
        click.echo(f"source.invalid: {what} {path}: over {limit} characters", err=True)
        raise SystemExit(EXIT_REFUSED)
    return text


@sources.command("add")
@click.argument("url")
@click.option("--name", default=None, help="The source's name (default: from the URL's host).")
@click.option("--interval", "interval_s", type=float, default=None, help="Seconds between polls (default 60).")
@click.option("--require-signed", is_flag=True,
              help="Relay only CAP whose XML signature verifies with a --key (default: unsigned-ok).")
@click.option("--key", "key_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A PEM certificate or public key the source signs with (repeat).")
@click.option("--sender", "senders", multiple=True, help="A CAP sender this source may relay (repeat; default any).")
@click.option("--status", "statuses", multiple=True, type=click.Choice(STATUSES),
              help="A CAP status to relay (repeat; default all three).")
@click.option("--territory", "territory_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help='A JSON file {"areas", "polygons", "circles"}: where the source may alert.')
@click.option("--disabled", is_flag=True, help="Store the source without polling it yet.")
@common
def sources_add(url: str, name: str | None, interval_s: float | None, require_signed: bool,
                key_files: tuple[Path, ...], senders: tuple[str, ...], statuses: tuple[str, ...],
                territory_file: Path | None, disabled: bool, urls: list[str], token: str, as_json: bool) -> None:
    """Add (or replace) the source polling the CAP Atom or RSS feed at URL."""
    body: dict[str, Any] = {"url": url, "enabled": not disabled,
                            "signatures": REQUIRE_SIGNED if require_signed else UNSIGNED_OK}
    if interval_s is not None:
        body["interval_s"] = interval_s
    if key_files:
        body["keys"] = [_read(path, "key file", MAX_KEY_CHARS) for path in key_files]
    if senders:
        body["senders"] = list(senders)
    if statuses:
        body["statuses"] = list(statuses)
    if territory_file is not None:
        try:
            body["territory"] = json.loads(_read(territory_file, "territory file", 1_000_000))
        except ValueError as exc:
            click.echo(f"source.invalid: territory file {territory_file}: {exc}", err=True)
            raise SystemExit(EXIT_REFUSED) from None
    name = name or name_for(url)
    run(urls, token, as_json, "PUT", f"/api/v1/admin/sources/{quote(name, safe='')}", body=body,
        show=lambda a: source_line({**a["source"], "status": a["status"]}))


@sources.command("list")
@common
def sources_list(urls: list[str], token: str, as_json: bool) -> None:
    """Every source with its state, last success, last alert and last error."""
    run(urls, token, as_json, "GET", "/api/v1/admin/sources",
        show=lambda a: "\n".join(source_line(s) for s in a["sources"]) or "no sources")


@sources.command("status")
@click.argument("name")
@common
def sources_status(name: str, urls: list[str], token: str, as_json: bool) -> None:
    """Source NAME's whole status, as its poller last wrote it."""
    run(urls, token, as_json, "GET", f"/api/v1/admin/sources/{quote(name, safe='')}",
        show=lambda a: "\n".join([source_line({**a["source"], "status": a["status"]}),
                                  *(f"  {k}: {json.dumps(v)}" for k, v in a["status"].items() if v not in (None, {}))]))


@sources.command("remove")
@click.argument("name")
@common
def sources_remove(name: str, urls: list[str], token: str, as_json: bool) -> None:
    """Remove source NAME: no more polls; the alerts it relayed stay until they expire."""
    run(urls, token, as_json, "DELETE", f"/api/v1/admin/sources/{quote(name, safe='')}",
        show=lambda a: f"{a['source']['name']} removed")

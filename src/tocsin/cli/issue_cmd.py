"""`tocsin issue FILE`: post a CAP alert, print the answer as JSON, fail with its code."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import click
import httpx

from tocsin.cli.node_urls import url_option

# Exit codes: 0 stored, 2 refused (4xx), 3 the service could not store it (5xx, unreachable).
EXIT_REFUSED = 2
EXIT_UNAVAILABLE = 3


def _content_type(path: Path, data: bytes) -> str:
    if path.suffix.lower() == ".json" or data.lstrip()[:1] in (b"{", b"["):
        return "application/json"
    return "application/cap+xml"


def post_alert(urls: list[str], token: str, data: bytes, content_type: str, attempts: int = 5) -> httpx.Response:
    """Post to the first node that answers; on 503 or no answer, try the next with jitter.

    Retrying is safe: the same sender+identifier is never stored twice.
    """
    last: Exception | None = None
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
    for attempt in range(attempts):
        url = urls[attempt % len(urls)]
        try:
            response = httpx.post(f"{url}/api/v1/alerts", content=data, headers=headers, timeout=15)
        except httpx.HTTPError as exc:
            last = exc
        else:
            if response.status_code != 503 or attempt == attempts - 1:
                return response
            last = None
        time.sleep(random.uniform(0, min(4.0, 0.25 * 2**attempt)))
    raise click.ClickException(f"no node answered: {last!r}")


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@url_option
@click.option("--token", envvar="TOCSIN_TOKEN", help="Issuer token; default TOCSIN_TOKEN.")
def issue(file: Path, urls: list[str], token: str | None) -> None:
    """Issue the CAP alert in FILE (XML, or the JSON form) and print the answer."""
    if not token:
        raise click.UsageError("give --token or set TOCSIN_TOKEN")
    data = file.read_bytes()
    try:
        response = post_alert(urls, token, data, _content_type(file, data))
    except click.ClickException as exc:
        click.echo(json.dumps({"code": "client.unreachable", "detail": exc.message}))
        raise SystemExit(EXIT_UNAVAILABLE) from None
    try:
        body: Any = response.json()
    except ValueError:
        body = {"status": response.status_code, "detail": response.text[:500]}
    click.echo(json.dumps(body, ensure_ascii=False))
    if response.status_code >= 500:
        raise SystemExit(EXIT_UNAVAILABLE)
    if response.status_code >= 400:
        raise SystemExit(EXIT_REFUSED)

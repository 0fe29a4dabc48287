"""`tocsin issue FILE`: post a CAP alert, print the answer as JSON, fail with its code.

`tocsin issue --preview FILE`: ask whom it would reach instead (nothing is issued), printed
for a person, or as the raw answer with `--json`.
"""

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


def post_alert(urls: list[str], token: str, data: bytes, content_type: str, attempts: int = 5,
               path: str = "/api/v1/alerts") -> httpx.Response:
    """Post to the first node that answers; on 503 or no answer, try the next with jitter.

    Retrying is safe: the same sender+identifier is never stored twice.
    """
    last: Exception | None = None
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
    for attempt in range(attempts):
        url = urls[attempt % len(urls)]
        try:
            response = httpx.post(f"{url}{path}", content=data, headers=headers, timeout=15)
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
@click.option("--preview", "preview", is_flag=True,
              help="Only preview whom the alert would reach (devices, km², text budgets, warnings); "
              "nothing is issued.")
@click.option("--json", "as_json", is_flag=True, help="With --preview: print the raw JSON answer.")
def issue(file: Path, urls: list[str], token: str | None, preview: bool, as_json: bool) -> None:
    """Issue the CAP alert in FILE (XML, or the JSON form) and print the answer."""
    if not token:
        raise click.UsageError("give --token or set TOCSIN_TOKEN")
    data = file.read_bytes()
    path = "/api/v1/alerts/preview" if preview else "/api/v1/alerts"
    try:
        response = post_alert(urls, token, data, _content_type(file, data), path=path)
    except click.ClickException as exc:
        click.echo(json.dumps({"code": "client.unreachable", "detail": exc.message}))
        raise SystemExit(EXIT_UNAVAILABLE) from None
    try:
        body: Any = response.json()
    except ValueError:
        body = {"status": response.status_code, "detail": response.text[:500]}
    readable = preview and not as_json
    if response.status_code >= 400:
        click.echo(refusal_text(body) if readable else json.dumps(body, ensure_ascii=False), err=readable)
        raise SystemExit(EXIT_UNAVAILABLE if response.status_code >= 500 else EXIT_REFUSED)
    click.echo(preview_text(body) if readable else json.dumps(body, ensure_ascii=False))


def refusal_text(problem: dict[str, Any]) -> str:
    """A refusal for a person: its code and detail, then each finding."""
    lines = [f"refused: {problem.get('code', 'unknown')} ({problem.get('status', '?')}): "
             f"{problem.get('detail') or problem.get('title', '')}"]
    lines += [f"  {e.get('path', '')}: {e.get('detail', '')}" for e in problem.get("errors") or []]
    return "\n".join(lines)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name or '(none)'} {n:,}" for name, n in counts.items()) or "none"


def preview_text(answer: dict[str, Any]) -> str:
    """A reach preview for a person (docs/api.md, "Reach preview")."""
    alert, reach, area = answer["alert"], answer["reach"], answer["area"]
    here = reach["connectedHere"]
    lines = [
        f"Preview of {alert['sender']} / {alert['identifier']} ({answer['status']} {answer['msgType']}): "
        "nothing was issued",
        f"Cover: {answer['cover']['cells']:,} cells, from {answer['cover']['from']}",
        f"Area: {area['text']} in all",
        *(f"  info[{i['info']}] {i['language']}: {i['km2']:,.1f} km²" for i in area["infos"]),
        _territory_line(answer["territory"]),
        f"Devices reached: {reach['devices']:,} registered",
        f"  by channel: {_counts(reach['byChannel'])}",
        f"  by language: {_counts(reach['byLanguage'])}",
        f"  connected now to {here['node']}: {here['devices']:,} (sse {here['sse']:,}, ws {here['ws']:,})",
        "Text budgets:",
    ]
    for entry in answer["budgets"]["infos"]:
        lines.append(f"  info[{entry['info']}] {entry['language']}: cell broadcast {_use(entry['cellBroadcast'])}; "
                     f"WEA {_use(entry['wea'])}")
    lines.append(f"  push payload: {_use(answer['budgets']['push'])}")
    lines.append("Warnings:" if answer["warnings"] else "Warnings: none")
    lines += [f"  [{w['code']}] {w['detail']}" for w in answer["warnings"]]
    return "\n".join(lines)


def _territory_line(territory: dict[str, Any] | None) -> str:
    if territory is None:
        return "Territory: none (the organisation may alert anywhere)"
    ratio = territory["ratio"]
    share = f", the area is {ratio:.2f} of it" if ratio is not None else ""
    return f"Territory: {territory['km2']:,.1f} km²{share}"


def _use(used: dict[str, Any]) -> str:
    text = f"{used['length']:,}/{used['budget']:,} {used['unit']}" + (" OVER" if used["over"] else "")
    because = used.get("ucs2Because")
    if because:
        text += f" (UCS-2 because of {because['character']!r} {because['codePoint']} at {because['index']})"
    return text

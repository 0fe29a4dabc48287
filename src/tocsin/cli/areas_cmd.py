"""`tocsin areas import|list|show|remove`: gazetteers over the areas API (api/areas.py).

`import` checks the whole file here first, with the code the node checks it with, so that a
refusal names the feature before anything is sent; the node checks it again and stores
nothing on a refusal. `list` and `show` are public reads; `import` and `remove` need a
deployment admin's token. Exit codes as the accounts commands: 2 refused, 3 no node.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from tocsin.api.areas import read_geojson
from tocsin.cli.accounts_cmd import call, common, run
from tocsin.cli.issue_cmd import EXIT_REFUSED, EXIT_UNAVAILABLE
from tocsin.cli.node_urls import url_option
from tocsin.geo.gazetteer import GazetteerInvalid

# An import sends megabytes and the node checks them before it answers.
IMPORT_TIMEOUT_S = 120.0


def _reads(command: Any) -> Any:
    """--url, --json and an optional --token (the reads are public)."""
    command = click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")(command)
    command = click.option("--token", envvar="TOCSIN_TOKEN", default="", help="A token (not needed).")(command)
    return url_option(command)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


@click.group()
def areas() -> None:
    """Gazetteers (named areas for CAP geocodes): import, list, show, remove."""


@areas.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--scheme", required=True, help="The scheme: the CAP geocode valueName its areas answer to.")
@click.option("--code-property", required=True, help="The feature property that holds each area's code.")
@click.option("--name-property", default=None, help="The feature property that holds each area's name.")
@common
def areas_import(file: Path, scheme: str, code_property: str, name_property: str | None,
                 urls: list[str], token: str, as_json: bool) -> None:
    """Import (or replace) SCHEME from a GeoJSON FeatureCollection of (Multi)Polygons."""
    raw = file.read_bytes()
    try:
        found = read_geojson(raw, scheme, code_property, name_property)
    except GazetteerInvalid as exc:
        click.echo(f"area.import-invalid: {file}: {exc}", err=True)
        raise SystemExit(EXIT_REFUSED) from None
    params = {"code_property": code_property, **({"name_property": name_property} if name_property else {})}
    run(urls, token, as_json, "PUT", f"/api/v1/admin/areas/{quote(scheme, safe='')}", params=params, content=raw,
        timeout_s=IMPORT_TIMEOUT_S,
        show=lambda a: (f"{a['scheme']}: {_plural(a['areas'], 'area')} imported ({a['points']} points), "
                        f"{a['removed']} removed; checked {len(found)} here"))


@areas.command("list")
@click.option("--scheme", default="", help="List this scheme's areas (codes, names, points).")
@_reads
def areas_list(scheme: str, urls: list[str], token: str, as_json: bool) -> None:
    """The schemes a node holds with their counts and source, or one scheme's areas."""
    if not scheme:
        run(urls, token, as_json, "GET", "/api/v1/areas", show=lambda a: "\n".join(
            f"{s['scheme']}  {_plural(s['areas'], 'area')}  {s['source']}" for s in a["schemes"]))
        return
    listed: list[dict[str, Any]] = []
    after = ""
    while True:  # every page; a page is at most 1000 areas
        status, answer = call(urls, token, "GET", f"/api/v1/areas/{quote(scheme, safe='')}",
                              params={"after": after} if after else None)
        if status >= 400:
            click.echo(json.dumps(answer) if as_json else f"{answer.get('code', status)}: {answer.get('detail', '')}",
                       err=True)
            raise SystemExit(EXIT_UNAVAILABLE if status >= 500 else EXIT_REFUSED)
        listed.extend(answer["areas"])
        after = answer.get("next") or ""
        if not after:
            break
    if as_json:
        click.echo(json.dumps({"scheme": scheme, "source": answer.get("source"), "areas": listed}, ensure_ascii=False))
        return
    click.echo(f"{scheme}  {_plural(len(listed), 'area')}  {answer.get('source')}")
    for a in listed:
        click.echo(f"{a['code']}  {a['name']}  {_plural(a['polygons'], 'polygon')}  {_plural(a['points'], 'point')}")


@areas.command("show")
@click.argument("scheme")
@click.argument("code")
@_reads
def areas_show(scheme: str, code: str, urls: list[str], token: str, as_json: bool) -> None:
    """One named area with its polygons (JSON, [lat, lon] rings)."""
    run(urls, token, as_json, "GET", f"/api/v1/areas/{quote(scheme, safe='')}/{quote(code, safe='')}",
        show=lambda a: json.dumps(a, ensure_ascii=False))


@areas.command("remove")
@click.argument("scheme")
@common
def areas_remove(scheme: str, urls: list[str], token: str, as_json: bool) -> None:
    """Remove an imported SCHEME from every node (a territory naming its codes then holds
    nothing there)."""
    run(urls, token, as_json, "DELETE", f"/api/v1/admin/areas/{quote(scheme, safe='')}",
        show=lambda a: f"{a['scheme']}: {_plural(a['removed'], 'area')} removed")

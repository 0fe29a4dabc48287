"""`tocsin watch`: be a device from the terminal, printing each alert it would show."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import click

from tocsin import logs
from tocsin.cli.node_urls import url_option
from tocsin.client.keys import KeyFileInvalid, Keys, NoTrustedKeys, load_key_file
from tocsin.client.node import NodeIncompatible, RegistrationRefused
from tocsin.client.places import MAX_PLACES, Place, parse_place
from tocsin.client.display import terminal_line
from tocsin.client.state import StateInvalid
from tocsin.client.watch import Display, Watcher
from tocsin.loopback import url_is_loopback

# Exit codes: 0 stopped by the user, 2 a node refused the registration for good.
EXIT_REFUSED = 2


class WatchRefused(click.ClickException):
    """A node refused this device for good (e.g. an invalid registration)."""

    exit_code = EXIT_REFUSED


def _place(text: str) -> Place:
    try:
        return parse_place(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--place") from None


def _places(lat: float | None, lon: float | None, places: tuple[str, ...]) -> list[Place]:
    """`--lat/--lon` (named "here") then each `--place`; at most MAX_PLACES in all."""
    found = [_place(p) for p in places]
    if (lat is None) != (lon is None):
        raise click.UsageError("--lat and --lon go together")
    if lat is not None and lon is not None:
        found.insert(0, _place(f"here={lat},{lon}"))
    if not found:
        raise click.UsageError("give --lat and --lon, or --place [NAME=]LAT,LON")
    if len(found) > MAX_PLACES:
        raise click.UsageError(f"{len(found)} places; a device follows at most {MAX_PLACES}")
    return found


def plain_remote_urls(urls: list[str]) -> list[str]:
    """The URLs that would carry alerts in plain text off this machine."""
    return [url for url in urls if url.lower().startswith("http://") and not url_is_loopback(url)]


def _keys(path: Path | None) -> Keys | None:
    if path is None:
        return None
    try:
        return load_key_file(path)
    except KeyFileInvalid as exc:
        raise click.BadParameter(str(exc), param_hint="--keys / TOCSIN_KEYS") from None


def render(display: Display) -> str:
    """One readable line, safe for a terminal (client/display.py)."""
    return terminal_line(display)


@click.command(name="watch")
@url_option
@click.option("--lat", type=float, default=None, help="Latitude of the place to watch.")
@click.option("--lon", type=float, default=None, help="Longitude of the place to watch.")
@click.option("--place", "places", multiple=True,
              help=f"A place as NAME=LAT,LON (or LAT,LON); repeatable, at most {MAX_PLACES}. Only its coarse cell is sent.")
@click.option("--lang", "languages", multiple=True, help="Preferred language, in order; repeatable (default en).")
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="State file: keeps the device, trusted keys, last event and what it showed (replaced, cancelled).")
@click.option("--keys", "keys_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              envvar="TOCSIN_KEYS", help="Key file to trust (as /.well-known/tocsin/keys serves); or TOCSIN_KEYS.")
@click.option("--trust-on-first-use", "tofu", is_flag=True,
              help="With no key file: trust the first node's keys (only safe over TLS to a node you know).")
@click.option("--tests", is_flag=True, help="Also show Test and Exercise alerts.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per shown alert.")
def watch(
    urls: list[str],
    lat: float | None,
    lon: float | None,
    places: tuple[str, ...],
    languages: tuple[str, ...],
    state_path: Path | None,
    keys_path: Path | None,
    tofu: bool,
    tests: bool,
    as_json: bool,
) -> None:
    """Watch places for alerts, as a device would, until Ctrl-C.

    The node learns only each place's coarse cell (~36 km²); whether an alert's area holds
    a place is checked here, and an alert is printed once however many places it holds.
    """
    for url in plain_remote_urls(urls):
        click.echo(f"warning: {url} is plain HTTP to another host: anyone on the path can read and "
                   "block alerts; use https:// (docs/security.md)", err=True)
    try:
        watcher = Watcher(
            urls,
            _places(lat, lon, places),
            languages=languages or ("en",),
            tests=tests,
            state_path=state_path,
            keys=_keys(keys_path),
            trust_on_first_use=tofu,
        )
    except StateInvalid as exc:
        raise click.ClickException(f"state file: {exc}") from None
    except NoTrustedKeys as exc:
        raise click.UsageError(str(exc)) from None
    # Alerts go to stdout; the watcher's own log lines (JSON) to stderr.
    logs.setup(os.environ.get("TOCSIN_LOG_LEVEL", "WARNING"))
    try:
        asyncio.run(_print_displays(watcher, as_json))
    except KeyboardInterrupt:
        pass  # the watcher saved its state on the way out
    except ExceptionGroup as group:
        refused = group.subgroup((RegistrationRefused, NodeIncompatible))
        if refused is None:
            raise
        raise WatchRefused(str(refused.exceptions[0])) from None


async def _print_displays(watcher: Watcher, as_json: bool) -> None:
    async with watcher:
        async for display in watcher.displays():
            click.echo(json_line(display) if as_json else render(display))


def json_line(display: Display) -> str:
    """`--json`: one line, ASCII only, so that no character of an alert's text (a C1 control
    such as U+009B, which XML allows) can reach a terminal that shows the line raw."""
    return json.dumps(display.as_json(), ensure_ascii=True)

"""The nodes a command talks to: `--url` (repeatable), else `TOCSIN_URL`, read in one place."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

ENV = "TOCSIN_URL"


def node_urls(values: Iterable[str], env: Mapping[str, str] = os.environ) -> list[str]:
    """The `--url` values, else TOCSIN_URL; each may list several, comma separated.

    Raises:
        click.UsageError: neither names a node.
    """
    raw = list(values) or [env.get(ENV, "")]
    urls = [u.strip().rstrip("/") for value in raw for u in value.split(",") if u.strip()]
    if not urls:
        raise click.UsageError(f"give --url or set {ENV}")
    return urls


def url_option(command: F) -> F:
    """`--url`: the command gets `urls`, a non-empty list of node base URLs."""
    return click.option(
        "--url", "urls", multiple=True, callback=lambda _ctx, _param, values: node_urls(values),
        help=f"Node URL; repeat for a cluster (default {ENV}, comma separated).",
    )(command)

"""The `tocsin` command: thin subcommands over the same code the service runs."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any
import sys
from pathlib import Path

import click

from tocsin.cluster.nats_server import NatsServerError
from tocsin.errors import StoreMisconfigured
from tocsin.settings import Settings, SettingsError


@click.group()
@click.version_option(package_name="tocsin")
def cli() -> None:
    """tocsin: public emergency alerts, CAP 1.2 in, every device in the area out."""


@cli.command()
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=None,
              help="Data directory (default ./tocsin-data, or TOCSIN_DATA_DIR).")
@click.option("--listen", default=None, help="HOST:PORT to serve HTTP on (default 127.0.0.1:8080).")
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="TOML file of settings (keys as in TOCSIN_<KEY>, lower case); or TOCSIN_CONFIG.")
@click.option("--workers", type=int, default=None,
              help="Processes sharing the node's ports (0: one per core; default 1, or TOCSIN_WORKERS).")
def serve(data_dir: Path | None, listen: str | None, config: Path | None, workers: int | None) -> None:
    """Run a node: an embedded nats-server (unless TOCSIN_NATS_URL is set) and the HTTP API."""
    from tocsin import app, logs, workers as node_workers

    overrides: dict[str, Any] = {"data_dir": data_dir, "listen": listen}
    if workers is not None:
        overrides["workers"] = workers
    try:
        settings = Settings.from_env(config=config, **overrides)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    logs.setup(settings.log_level)

    def said(name: str, url: str, data: Path, token: str | None, workers_note: str = "") -> None:
        click.echo(f"tocsin {name} serving on {url}{workers_note} (data in {data})")
        if token:
            click.echo("admin token, shown once; keep it safe:")
            click.echo(f"  TOCSIN_TOKEN={token}")
        sys.stdout.flush()

    def ready(node: app.Node) -> None:
        said(node.settings.node_name, node.url, node.settings.data_dir, node.admin_token)

    def ready_workers(node: node_workers.Started) -> None:
        issuers = f" (issuers: {node.issuer_url}, a worker of their own)" if node.issuer_url else ""
        said(node.node_name, node.url, node.data_dir, node.admin_token, f" with {node.workers} workers{issuers}")

    try:
        if settings.workers == 1 or settings.is_worker:
            run_loop(app.serve(settings, ready))
        else:
            if config is not None:  # the workers read the same file (they inherit the environment)
                os.environ["TOCSIN_CONFIG"] = str(config.resolve())
            run_loop(node_workers.serve_workers(settings, ready_workers))
    except KeyboardInterrupt:
        pass
    except (NatsServerError, StoreMisconfigured, SettingsError) as exc:
        raise click.ClickException(str(exc)) from None


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it is installed (the fan-out's writes are its hot path)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        asyncio.run(main)
        return
    uvloop.run(main)


def _register_optional() -> None:
    from tocsin.cli.audit_cmd import audit
    from tocsin.cli.approval_cmd import approve, correct, pending, reject
    from tocsin.cli.cap_cmd import cap
    from tocsin.cli.cluster_cmd import cluster
    from tocsin.cli.drill_cmd import drill
    from tocsin.cli.issue_cmd import issue
    from tocsin.cli.keys_cmd import keys
    from tocsin.cli.status_cmd import status
    from tocsin.cli.watch_cmd import watch
    from tocsin.cli.watchdog_cmd import watchdog

    cli.add_command(audit)
    cli.add_command(approve)
    cli.add_command(cap)
    cli.add_command(correct)
    cli.add_command(pending)
    cli.add_command(reject)
    cli.add_command(cluster)
    cli.add_command(drill)
    cli.add_command(issue)
    cli.add_command(keys)
    cli.add_command(status)
    cli.add_command(watch)
    cli.add_command(watchdog)
    # ACCOUNTS: issuers, users, clients, tokens over the admin API
    from tocsin.cli.accounts_cmd import clients, issuers, tokens, users

    for group in (issuers, users, clients, tokens):
        cli.add_command(group)
    # GAZ: gazetteers over the areas API
    from tocsin.cli.areas_cmd import areas

    cli.add_command(areas)
    # ROUTES: CAP forwarding routes over the admin API
    from tocsin.cli.routes_cmd import routes

    cli.add_command(routes)
    # SOURCES: relayed CAP feeds over the admin API
    from tocsin.cli.sources_cmd import sources

    cli.add_command(sources)


_register_optional()


def main() -> None:  # pragma: no cover
    cli()


if __name__ == "__main__":  # pragma: no cover
    main()

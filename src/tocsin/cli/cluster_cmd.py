"""`tocsin cluster up`: a local N-node cluster in the foreground, for demos and tests."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import click

from tocsin.cluster.local import LocalCluster
from tocsin.cluster.supervise import supervise


@click.group(name="cluster")
def cluster() -> None:
    """Run a local cluster (each node: nats-server + tocsin)."""


@cluster.command()
@click.option("--nodes", type=click.Choice(["1", "3", "5"]), default="3", show_default=True)
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True, help="Cluster directory.")
@click.option("--base-port", type=int, default=0,
              help="Node i: HTTP on P+i, NATS P+10+i, monitor P+20+i, routes P+30+i (default: a free block).")
@click.option("--admin-token", envvar="TOCSIN_ADMIN_TOKEN", default="", help="Admin token (default: generated).")
def up(nodes: str, data_dir: Path, base_port: int, admin_token: str) -> None:
    """Start the cluster, write DIR/cluster.json, run until Ctrl-C, then stop every process."""
    from tocsin import logs

    logs.setup("WARNING")
    local = LocalCluster(data_dir, nodes=int(nodes), base_port=base_port, admin_token=admin_token)
    try:
        asyncio.run(_run(local))
    except KeyboardInterrupt:
        pass


async def _run(local: LocalCluster) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await local.start()
        for spec in local.specs:
            click.echo(f"{spec.name}: {spec.url}  (nats {spec.nats_url})")
        click.echo(f"cluster.json: {local.data_dir / 'cluster.json'}")
        click.echo(f"TOCSIN_URL={','.join(s.url for s in local.specs)}")
        # An automated source: its Actual alerts publish at once (the admin's wait for a
        # second person, docs/lifecycle.md).
        click.echo(f"TOCSIN_TOKEN={local.issuer_token}")
        click.echo(f"TOCSIN_ADMIN_TOKEN={local.admin_token}")
        click.echo("Ctrl-C stops the cluster. A node that dies is restarted unless DIR/nodeN/hold-down exists.",
                   err=True)
        keeper = asyncio.get_running_loop().create_task(supervise(local), name="supervise")
        await stop.wait()
        keeper.cancel()
    finally:
        await local.stop()

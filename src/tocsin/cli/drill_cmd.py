"""`tocsin drill`: a failover rehearsal on a live local cluster."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click

from tocsin.drill import run_drill


@click.command()
@click.option("--cluster", "cluster_json", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="The cluster.json written by `tocsin cluster up`.")
@click.option("--node", default=None, help="The node to take down (default: the first).")
@click.option("--mode", type=click.Choice(["kill", "lame-duck"]), default="kill", show_default=True)
@click.option("--slo", "slo_s", type=float, default=15.0, show_default=True, help="Delivery SLO in seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def drill(cluster_json: Path, node: str | None, mode: str, slo_s: float, as_json: bool) -> None:
    """Take a node down, check delivery through the others, bring it back, check catch-up."""
    report = asyncio.run(run_drill(cluster_json, victim=node, mode=mode, slo_s=slo_s))
    click.echo(json.dumps(report.as_json()) if as_json else report.render())
    if not report.ok:
        raise SystemExit(1)

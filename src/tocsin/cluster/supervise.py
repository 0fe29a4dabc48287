"""Keep a local cluster's processes running, as systemd's Restart=always would on hosts.

A node whose process died is restarted after a short delay, unless a file
`<node dir>/hold-down` exists: a drill or an operator holds the node down on purpose.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from tocsin.cluster.local import LocalCluster, NodeSpec

log = logging.getLogger(__name__)

HOLD_FILE = "hold-down"


def hold_path(spec: NodeSpec) -> Path:
    return spec.data_dir / HOLD_FILE


async def supervise(cluster: LocalCluster, *, period_s: float = 1.0, restart_delay_s: float = 1.0) -> None:
    """Forever: restart any dead nats-server or tocsin process of a node not held down."""
    while True:
        await asyncio.sleep(period_s)
        for spec in cluster.specs:
            if hold_path(spec).exists():
                continue
            try:
                await _revive(cluster, spec, restart_delay_s)
            except (RuntimeError, OSError) as exc:
                log.error("node restart failed", extra={"node": spec.name, "error": str(exc)})


async def _revive(cluster: LocalCluster, spec: NodeSpec, delay_s: float) -> None:
    pids = cluster.pids(spec.name)
    if pids["nats"] is None:
        log.warning("restarting nats-server", extra={"node": spec.name})
        await asyncio.sleep(delay_s)
        await cluster.start_nats(spec.name)
    if pids["tocsin"] is None:
        log.warning("restarting tocsin", extra={"node": spec.name})
        await asyncio.sleep(delay_s)
        await cluster.start_tocsin(spec.name)

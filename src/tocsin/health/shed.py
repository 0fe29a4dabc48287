"""Send devices away from a node that cannot deliver, so they resume on one that can.

A node whose readiness stays red keeps its devices' streams open with keepalives, and those
devices would wait there for alerts that will not come (found by the fault suite: F06
partitions, F16 stuck fan-out). In a cluster, once red for `after_s`, the node closes its
live connections and refuses new ones (503 `node.not-ready`) until it is ready again;
devices reconnect with jitter, the load balancer (or the client's list of nodes) takes them
elsewhere, and their cursor brings what they missed.

Off by default (settings.py `shed_after_s`), and superseded by the clients' rule: every
keepalive carries this node's canary age and a device leaves a stale node only for one
that delivers (client/freshness.py), which cannot stampede when every node is red.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from tocsin.channels.live import LiveRegistry

log = logging.getLogger(__name__)


async def shed_when_unready(
    is_ready: Callable[[], bool],
    live: LiveRegistry,
    *,
    after_s: float,
    period_s: float = 1.0,
) -> None:
    """Forever: close every live connection once per red period longer than `after_s`."""
    loop = asyncio.get_running_loop()
    red_since: float | None = None
    shed = False
    while True:
        await asyncio.sleep(period_s)
        if is_ready():
            red_since, shed = None, False
            live.accepting = True
            continue
        now = loop.time()
        red_since = now if red_since is None else red_since
        if not shed and now - red_since >= after_s:
            shed = True
            log.warning("not ready; sending live devices to other nodes", extra={"devices": live.count})
            live.accepting = False  # until ready again: reconnecting devices go elsewhere
            live.close_all()

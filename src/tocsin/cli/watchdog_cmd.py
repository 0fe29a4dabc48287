"""`tocsin watchdog`: the outside end of the dead man's switch."""

from __future__ import annotations

import asyncio

import click

from tocsin.prober.watchdog import watch


@click.command()
@click.option("--listen", default="127.0.0.1:9095", show_default=True, help="HOST:PORT to take heartbeats on.")
@click.option("--expect", "expect", multiple=True, required=True,
              help="A node name that must send heartbeats (repeatable, or comma separated).")
@click.option("--period", "period_s", type=float, default=10.0, show_default=True,
              help="The nodes' heartbeat period (TOCSIN_HEARTBEAT_INTERVAL_S); late = silent for over 1.5.")
@click.option("--grace", "grace_s", type=float, default=60.0, show_default=True,
              help="Extra seconds for a node never heard since the watchdog started.")
@click.option("--alarm", default=None,
              help="Shell command run when a node is late, with TOCSIN_WATCHDOG_NODE, TOCSIN_WATCHDOG_SILENT_S "
                   "and TOCSIN_WATCHDOG_LAST_SEEN set. Without it: print and exit 1.")
def watchdog(listen: str, expect: tuple[str, ...], period_s: float, grace_s: float, alarm: str | None) -> None:
    """Take heartbeats (POST /heartbeat/NAME) and raise the alarm when one is late."""
    names = [n.strip() for value in expect for n in value.split(",") if n.strip()]
    if not names:
        raise click.UsageError("give at least one --expect NAME")
    if period_s <= 0:
        raise click.UsageError("--period must be positive")
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise click.UsageError(f"--listen must be HOST:PORT, got {listen!r}")
    try:
        code = asyncio.run(watch(listen, names, period_s=period_s, alarm=alarm, grace_s=grace_s))
    except KeyboardInterrupt:
        code = 0
    raise SystemExit(code)

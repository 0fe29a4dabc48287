"""`tocsin status`: every node at a glance, from what each one measured (its /status)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click
import httpx

from tocsin.cli.node_urls import url_option

# Exit status with --once: 0 every node ready, 1 at least one not ready or unreachable.
EXIT_NOT_READY = 1
_CLEAR = "\x1b[H\x1b[2J"
_GREEN, _RED, _RESET = "\x1b[32m", "\x1b[31m", "\x1b[0m"


def fetch(http: httpx.Client, url: str) -> dict[str, Any]:
    """One node's /status document, or a stand-in saying why it could not be read."""
    try:
        response = http.get(f"{url}/status", headers={"Accept": "application/json"})
        body: dict[str, Any] = response.json()
        return {**body, "url": url}
    except (httpx.HTTPError, ValueError) as exc:
        return {"url": url, "node": "?", "ready": False, "failing": ["unreachable"],
                "failing_details": {"unreachable": repr(exc)[:200]}}


def _latency(body: dict[str, Any]) -> str:
    channels = (body.get("canary") or {}).get("channels") or {}
    parts = []
    for channel, c in sorted(channels.items()):
        last = c.get("last_latency_s")
        age = c.get("canary_age_s")
        parts.append(f"{channel} {'-' if last is None else f'{1000 * last:.0f} ms'}"
                     f" ({'never' if age is None else f'{age:.1f} s ago'})")
    return ", ".join(parts) or "no prober"


def _availability(body: dict[str, Any], window: str) -> str:
    measured = (body.get("measured") or {}).get(window) or {}
    values = [s.get("availability") for s in measured.values() if s.get("availability") is not None]
    return "-" if not values else f"{100 * min(values):.2f} %"


def _canaries(body: dict[str, Any]) -> str:
    """Each channel's canary age against its limit (two probe intervals): which link is late."""
    canary = body.get("canary") or {}
    limit = 2 * float(canary.get("interval_s") or 0)
    parts = []
    for channel, c in sorted((canary.get("channels") or {}).items()):
        age = c.get("canary_age_s")
        late = age is None or (limit > 0 and age >= limit)
        parts.append(f"{channel} {'never' if age is None else f'{age:.1f} s'}{' LATE' if late else ''}")
    return ", ".join(parts) or "no prober"


def fetch_alert(http: httpx.Client, urls: list[str], alert_id: str) -> dict[str, Any]:
    """An alert's delivery progress from the first node that answers (each sums every node's)."""
    errors = []
    for url in urls:
        try:
            response = http.get(f"{url}/api/v1/alerts/{alert_id}", headers={"Accept": "application/json"})
            body: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            errors.append(f"{url}: {repr(exc)[:120]}")
            continue
        if response.status_code != 200:
            return {"alert": alert_id, "url": url, "error": f"{response.status_code} {body.get('code', '')}".strip()}
        return {"alert": alert_id, "url": url, "state": body.get("state"), "expires": body.get("expires"),
                "delivery": body.get("delivery") or {}}
    return {"alert": alert_id, "error": "no node answered: " + "; ".join(errors)}


def render_alert(found: dict[str, Any]) -> str:
    """One line per channel: planned, queued, sent, failed by reason, receipts."""
    if "error" in found:
        return f"alert {found['alert']}: {found['error']}"
    lines = [f"alert {found['alert']} ({found.get('state')}, expires {found.get('expires') or '-'}) from {found['url']}"]
    delivery = found["delivery"]
    if delivery.get("liveDevicesOffered") is not None:
        lines.append(f"    live devices offered on {delivery.get('node')}: {delivery['liveDevicesOffered']}")
    channels = delivery.get("channels") or {}
    if not channels:
        lines.append("    no gateway delivery or receipt counted")
    for channel, c in sorted(channels.items()):
        failed = ", ".join(f"{reason} {n}" for reason, n in sorted((c.get("failed") or {}).items())) or "0"
        lines.append(f"    {channel:<8} planned {c.get('planned', 0)}  queued {c.get('queued', 0)}  "
                     f"sent {c.get('sent', 0)}  failed {failed}  receipts {c.get('receipts', 0)}")
    return "\n".join(lines)


def render(bodies: list[dict[str, Any]], colour: bool) -> str:
    """A few lines per node: ready or why not, canary latency, devices, backlog."""
    lines = []
    for body in bodies:
        ready = bool(body.get("ready"))
        word = "READY" if ready else "NOT READY"
        if colour:
            word = f"{_GREEN if ready else _RED}{word}{_RESET}"
        lines.append(f"{body.get('node', '?')}  {body['url']}  {word}")
        for name, detail in (body.get("failing_details") or {}).items():
            lines.append(f"    ! {name}: {detail}")
        if "devices" in body:
            lines.append(f"    canary: {_latency(body)}")
            lines.append(f"    canary ages: {_canaries(body)}")
            lines.append(f"    devices: {body['devices'].get('total', 0)}   pending deliveries: "
                         f"{body.get('pending_deliveries')}   availability hour {_availability(body, 'hour')}, "
                         f"day {_availability(body, 'day')}")
            redundancy = body.get("redundancy") or {}
            if not redundancy.get("redundant", True):
                lines.append(f"    {redundancy.get('statement', '')}")
    return "\n".join(lines)


@click.command()
@url_option
@click.option("--once", is_flag=True, help="Print once and exit: 0 if every node is ready, else 1.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per node (the node's /status).")
@click.option("--interval", "interval_s", type=float, default=2.0, show_default=True, help="Refresh period.")
@click.option("--alert", "alert_id", default=None, metavar="ID",
              help="Also show this alert's delivery progress per channel (summed over the nodes).")
def status(urls: list[str], once: bool, as_json: bool, interval_s: float, alert_id: str | None) -> None:
    """Show every node: ready or not and why, canary ages and latency, devices, pending
    deliveries; with --alert, that alert's delivery progress."""
    colour = sys.stdout.isatty() and not as_json
    with httpx.Client(timeout=min(5.0, max(1.0, interval_s))) as http:
        while True:
            bodies = [fetch(http, url) for url in urls]
            found = fetch_alert(http, urls, alert_id) if alert_id else None
            if as_json:
                for body in bodies:
                    click.echo(json.dumps(body, ensure_ascii=False))
                if found is not None:
                    click.echo(json.dumps(found, ensure_ascii=False))
            else:
                prefix = _CLEAR if (colour and not once) else ""
                stamp = time.strftime("%H:%M:%S")
                text = render(bodies, colour) + ("" if found is None else "\n" + render_alert(found))
                click.echo(f"{prefix}tocsin status at {stamp}\n{text}")
            if once:
                raise SystemExit(0 if all(b.get("ready") for b in bodies) else EXIT_NOT_READY)
            try:
                time.sleep(interval_s)
            except KeyboardInterrupt:
                return

"""Public endpoints: signing keys, liveness, readiness, metrics, the status page, OpenAPI.

`/readyz` and `/status` read what the background checks and the prober measured; they
never wait on NATS or the disk, so they answer at once even when those are frozen.
"""

from __future__ import annotations

import html
import json
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from tocsin.api.listener import FULL_FOR_S
from tocsin.api.openapi import document
from tocsin.api.services import Services
from tocsin.geo.cells import CELL_RESOLUTION
from tocsin.health.readiness import redundancy
from tocsin.health.workers import WorkerPeers
from tocsin.signing import published_key_set

_NO_STORE = {"Cache-Control": "no-store"}


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def keys(request: Request) -> Response:
    """The deployment's keys with validity dates, and the statements that vouch for them.

    Read from the key-set file, again when it changes (`tocsin keys rotate` publishes a
    new key before the nodes sign with it); a device trusts none of it by itself.
    """
    services = _services(request)
    path = services.settings.key_set_path
    try:
        stat = path.stat()
        version: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        version = None
    cached: tuple[tuple[int, int] | None, bytes] | None = getattr(request.app.state, "key_set", None)
    if cached is None or cached[0] != version:
        body = {**published_key_set(services.signer, path), "cell_resolution": CELL_RESOLUTION}
        cached = (version, json.dumps(body, separators=(",", ":")).encode("utf-8"))
        request.app.state.key_set = cached
    return Response(cached[1], media_type="application/json", headers={"Cache-Control": "public, max-age=300"})


async def livez(request: Request) -> Response:
    """The process answers HTTP; says nothing about delivery (that is /readyz)."""
    return JSONResponse({"status": "live", "node": _services(request).settings.node_name}, headers=_NO_STORE)


def readiness_report(services: Services) -> dict[str, Any]:
    """The last readiness results plus the listener's connections; never ready without checks."""
    report = _checks_report(services)
    if services.edge is None:
        return report
    gate = services.edge.public
    full = gate.is_full
    check = {
        "ok": not full, "age_s": 0.0, "max_age_s": FULL_FOR_S, "value": gate.as_json(),
        "detail": f"the public listener holds its limit of {gate.max_total} connections; new clients are refused"
        if full else f"{gate.total} of {gate.max_total} connections open",
    }
    failing = sorted({*report["failing"], "connections"}) if full else report["failing"]
    return {**report, "status": "not ready" if failing else "ready", "ready": not failing, "failing": failing,
            "checks": {**report["checks"], "connections": check}}


def _checks_report(services: Services) -> dict[str, Any]:
    if services.readiness is None:
        return {
            "status": "not ready", "ready": False, "node": services.settings.node_name,
            "failing": ["checks"], "checked_age_s": None,
            "redundancy": redundancy(services.settings.replicas),
            "checks": {"checks": {"ok": False, "age_s": None, "max_age_s": None, "value": None,
                                  "detail": "readiness checks are not running"}},
        }
    return services.readiness.report()


def _for_the_node(request: Request) -> WorkerPeers | None:
    """WORKERS: the node's other workers, when this request asks for the node's view (on a
    public port); None for a node of one process, or on this worker's private port."""
    peers = _services(request).peers
    server = request.scope.get("server")
    if peers is None or (server is not None and server[1] == peers.private_port):
        return None
    return peers


def node_readiness(request: Request) -> dict[str, Any]:
    """This process's readiness, merged with the other workers' when it speaks for the node."""
    report = readiness_report(_services(request))
    peers = _for_the_node(request)
    return report if peers is None else peers.merge(report)


async def readyz(request: Request) -> Response:
    """200 only when this node measured, seconds ago, that it can deliver; else 503."""
    report = node_readiness(request)
    return JSONResponse(report, status_code=200 if report["ready"] else 503, headers=_NO_STORE)


async def metrics(request: Request) -> Response:
    registry = _services(request).metrics.registry
    peers = _for_the_node(request)
    body = generate_latest(registry) if peers is None else await peers.metrics(lambda: generate_latest(registry))
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    return JSONResponse(document(_services(request).settings.base_url))


def status_document(services: Services, report: dict[str, Any] | None = None) -> dict[str, Any]:
    """What /status shows: readiness (`report`: the node's, merged over its workers), canaries,
    devices, backlog, measured availability."""
    report = readiness_report(services) if report is None else report
    prober = services.prober
    live = services.live
    readiness = services.readiness
    return {
        "node": services.settings.node_name,
        "url": services.settings.base_url,
        "ready": report["ready"],
        "failing": report["failing"],
        "failing_details": {name: report["checks"][name]["detail"] for name in report["failing"]},
        # Non-blocking checks that fail (a CAP route's downstream): named, the node stays ready.
        "degraded": {name: report["checks"][name]["detail"] for name in report.get("degraded", [])},
        "redundancy": report["redundancy"],
        "canary": prober.as_json() if prober else None,
        "devices": {"total": live.count, **{k: v for k, v in sorted(live.connected.items())}},
        "pending_deliveries": readiness.lag if readiness else None,
        "follower_behind_s": round(readiness.behind_s, 3) if readiness else None,
        "measured": prober.history.as_json() if prober else {},
        # ROUTES: each CAP route's last deliveries and link test (docs/cap-forwarding.md).
        "routes": services.route_worker.report() if services.route_worker else {},
        "readiness": report,
    }


async def status(request: Request) -> Response:
    """The public status page: HTML for browsers, JSON when asked (Accept or ?format=json)."""
    body = status_document(_services(request), node_readiness(request))
    accept = request.headers.get("accept", "")
    wants_json = request.query_params.get("format") == "json" or (
        "application/json" in accept and "text/html" not in accept
    )
    # Always 200: this page is a view for people and `tocsin status`; /readyz is the probe.
    if wants_json:
        return JSONResponse(body, headers=_NO_STORE)
    return HTMLResponse(render_status(body), headers=_NO_STORE)


def _pct(value: float | None) -> str:
    return "no probes" if value is None else f"{100 * value:.3f} %"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value == float("inf"):
        return "> 60 s"
    return f"{1000 * value:.0f} ms"


def render_status(body: dict[str, Any]) -> str:
    """A small page that needs no script and refreshes itself every 10 s."""
    e = html.escape
    state = "Delivering" if body["ready"] else "NOT delivering"
    colour = "#1b5e20" if body["ready"] else "#b71c1c"
    rows = []
    for window, channels in body["measured"].items():
        for channel, s in channels.items():
            rows.append(
                f"<tr><td>{e(window)}</td><td>{e(channel)}</td><td>{_pct(s['availability'])}</td>"
                f"<td>{s['probes']}</td><td>{_ms(s['latency_p50_s'])}</td><td>{_ms(s['latency_p99_s'])}</td>"
                f"<td>{_ms(s['latency_max_s'])}</td></tr>"
            )
    failing = "".join(
        f"<li><b>{e(name)}</b>: {e(str(detail))}</li>" for name, detail in body["failing_details"].items()
    )
    table = "".join(rows) or '<tr><td colspan="7">no probe measured yet</td></tr>'
    degraded = "".join(f"<li><b>{e(name)}</b>: {e(str(detail))}</li>" for name, detail in body.get("degraded", {}).items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="10">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tocsin {e(body['node'])}: {state}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ccc;padding:.3rem;text-align:left}}
.state{{color:#fff;background:{colour};padding:.5rem 1rem;display:inline-block}}</style></head>
<body><h1>tocsin node {e(body['node'])}</h1>
<p class="state">{state}</p>
{f'<ul>{failing}</ul>' if failing else ''}
{f'<p>Degraded (the node still delivers):</p><ul>{degraded}</ul>' if degraded else ''}
<p>{e(body['redundancy']['statement'])}</p>
<p>Devices connected: {body['devices']['total']}. Alerts not yet fanned out: {body['pending_deliveries']}.</p>
<h2>Measured end to end</h2>
<p>A test alert goes through the public API to a canary device on this node every few seconds;
availability is the share displayed within the deadline.</p>
<table><tr><th>window</th><th>channel</th><th>availability</th><th>probes</th><th>p50</th><th>p99</th>
<th>max</th></tr>{table}</table>
<p><a href="/readyz">readiness JSON</a> · <a href="/status?format=json">status JSON</a> ·
<a href="/metrics">metrics</a></p>
</body></html>
"""

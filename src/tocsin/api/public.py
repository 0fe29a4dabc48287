"""Public endpoints: signing keys, liveness, readiness, metrics, the OpenAPI document."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tocsin.api.openapi import document
from tocsin.api.services import Services
from tocsin.geo.cells import CELL_RESOLUTION


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def keys(request: Request) -> Response:
    services = _services(request)
    body = {"keys": [services.signer.public_jwk()], "cell_resolution": CELL_RESOLUTION}
    return JSONResponse(body, headers={"Cache-Control": "public, max-age=300"})


async def livez(request: Request) -> Response:
    return JSONResponse({"status": "live", "node": _services(request).settings.node_name})


async def readyz(request: Request) -> Response:
    """Ready when the store is reachable and this node follows the stream."""
    services = _services(request)
    checks = {
        "nats_connected": services.store.is_connected,
        "stream_followed": services.target.caught_up.is_set(),
    }
    ready = all(checks.values())
    body = {
        "status": "ready" if ready else "not ready",
        "node": services.settings.node_name,
        "checks": checks,
        "redundancy": "none: a single node (R1)" if services.settings.replicas == 1 else f"R{services.settings.replicas}",
    }
    return JSONResponse(body, status_code=200 if ready else 503)


async def metrics(request: Request) -> Response:
    services = _services(request)
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    return JSONResponse(document(_services(request).settings.base_url))

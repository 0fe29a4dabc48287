"""The HTTP edge's route table, and the app built from it."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp

from tocsin.api import (
    admin_routes, alerts, areas, audit, cap_routes, devices, drafts, preview, public, push_public, receipts, streams,
)
from tocsin.api import fpas  # FPAS
from tocsin.api import sources  # SOURCES
from tocsin.api import feeds
from tocsin.api.fastpath import SseFastPath
from tocsin.api.headers import EdgeHeaders
from tocsin.api.problems import HANDLERS
from tocsin.api.services import Services

ROUTES = [
    Route("/api/v1/alerts", alerts.alerts, methods=["POST", "GET"]),
    # PREVIEW: whom a draft would reach, stored nowhere (api/preview.py); before {alert_id}.
    Route("/api/v1/alerts/preview", preview.preview_alert, methods=["POST"]),
    # The lifecycle (docs/lifecycle.md) and the audit log (docs/audit.md).
    Route("/api/v1/alerts/{alert_id}/approve", alerts.approve_alert, methods=["POST"]),
    Route("/api/v1/alerts/{alert_id}/reject", alerts.reject_alert, methods=["POST"]),
    Route("/api/v1/alerts/{alert_id}/correct", alerts.correct_alert, methods=["POST"]),
    Route("/api/v1/drafts", drafts.drafts, methods=["POST", "GET"]),
    Route("/api/v1/drafts/{draft_id}", drafts.draft, methods=["GET", "DELETE"]),
    Route("/api/v1/audit", audit.get_audit, methods=["GET"]),
    Route("/api/v1/admin/correction-templates", alerts.correction_templates, methods=["GET", "PUT"]),
    Route("/api/v1/alerts/{alert_id}.xml", alerts.get_alert_xml, methods=["GET"]),
    Route("/api/v1/alerts/{alert_id}", alerts.get_alert, methods=["GET"]),
    Route("/api/v1/devices", devices.register_device, methods=["POST"]),
    Route("/api/v1/devices/{device_id}", devices.device, methods=["DELETE", "PUT"]),  # CORE: PUT
    Route("/api/v1/stream", streams.stream, methods=["GET"]),
    # PROGRESS: a device confirms it showed an alert (api/receipts.py)
    Route("/api/v1/receipts", receipts.post_receipt, methods=["POST"]),
    WebSocketRoute("/api/v1/ws", streams.websocket),
    Route("/.well-known/tocsin/keys", public.keys, methods=["GET"]),
    Route("/livez", public.livez, methods=["GET"]),
    Route("/readyz", public.readyz, methods=["GET"]),
    Route("/metrics", public.metrics, methods=["GET"]),
    Route("/status", public.status, methods=["GET"]),
    Route("/openapi.json", public.openapi, methods=["GET"]),
    # ACCOUNTS: the admin API (api/admin.py, docs/accounts.md)
    *admin_routes.ROUTES,
    # GAZ: gazetteers (api/areas.py, docs/areas.md)
    Route("/api/v1/areas", areas.list_schemes, methods=["GET"]),
    Route("/api/v1/areas/{scheme}", areas.list_areas, methods=["GET"]),
    Route("/api/v1/areas/{scheme}/{code}", areas.show_area, methods=["GET"]),
    Route("/api/v1/admin/areas/{scheme}", areas.areas_admin, methods=["PUT", "DELETE"]),
    # WEBPUSH: the VAPID key, and the event a push pointer sends the app to (api/push_public.py)
    Route("/api/v1/webpush/key", push_public.webpush_key, methods=["GET"]),
    Route("/api/v1/events/{alert_id}", push_public.event, methods=["GET"]),
    # ROUTES: CAP forwarding routes (api/cap_routes.py, docs/cap-forwarding.md)
    Route("/api/v1/admin/routes", cap_routes.list_routes, methods=["GET"]),
    Route("/api/v1/admin/routes/{name}", cap_routes.route, methods=["GET", "PUT", "DELETE"]),
    Route("/api/v1/admin/routes/{name}/test", cap_routes.test_route, methods=["POST"]),
    # FPAS: the FOSS Public Alert Server client API at the paths its clients use (api/fpas.py, docs/fpas.md)
    Route("/subscription/", fpas.subscription, methods=["GET", "POST", "PUT", "DELETE"]),
    Route("/alert/all", fpas.alerts_of_subscription, methods=["GET"]),
    Route("/alert/area", fpas.alerts_of_area, methods=["GET"]),
    Route("/alert/{alert_id}.xml", fpas.alert_cap, methods=["GET"]),
    Route("/alert/{alert_id}", fpas.alert, methods=["GET"]),
    Route("/config/server_status", fpas.server_status, methods=["GET"]),
    # SOURCES: relayed CAP feeds (api/sources.py, docs/sources.md)
    Route("/api/v1/admin/sources", sources.list_sources, methods=["GET"]),
    Route("/api/v1/admin/sources/{name}", sources.source, methods=["GET", "PUT", "DELETE"]),
    # FEEDS: the CAP Atom feeds (api/feeds.py, docs/feeds.md)
    Route("/feeds/alerts.atom", feeds.alerts_feed, methods=["GET"]),
    Route("/feeds/areas/{scheme}/{code}.atom", feeds.area_feed, methods=["GET"]),
]


def make_app(services: Services) -> ASGIApp:
    """The node's ASGI app: the routes with the edge's headers, behind the SSE fast path."""
    app = Starlette(routes=ROUTES, exception_handlers=HANDLERS)
    # Starlette would answer `/readyz/` with a redirect built from the Host header.
    app.router.redirect_slashes = False
    app.state.services = services
    app.state.refused = lambda code: services.metrics.refused.labels(code).inc()
    return SseFastPath(EdgeHeaders(app), services)

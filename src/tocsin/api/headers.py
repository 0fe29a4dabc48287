"""Response headers every route gets: security headers, and the CORS policy of the public API.

The policy (docs/security.md, "The edge"): what devices and the public read (alerts, keys,
streams, health, this API's document) may be read by a page of any origin, without
credentials; a browser may register a device from any origin (preflight answered). The
issuer API answers no preflight and sends no CORS header, so no other origin's page can
issue alerts through a visitor's browser. HTML pages forbid scripts, frames and sniffing.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CORS_ANY_ORIGIN = ((b"access-control-allow-origin", b"*"),)
ALWAYS = ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"))
HTML = (
    # The status page has inline styles and nothing else: no script, no frame, no form.
    (b"content-security-policy",
     b"default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    (b"x-frame-options", b"DENY"),
)
# GETs a page of any origin may read.
PUBLIC_READS = ("/api/v1/alerts/", "/api/v1/stream", "/.well-known/tocsin/", "/status", "/readyz", "/livez", "/openapi.json",
                "/feeds/")  # FEEDS
# Cross-origin requests a browser must ask for first: path -> (method, request headers).
PREFLIGHTS = {
    "/api/v1/devices": (b"POST", b"content-type"),
    "/api/v1/stream": (b"GET", b"authorization, last-event-id"),
    # PROGRESS: a web app's receipts (api/receipts.py), with its device token.
    "/api/v1/receipts": (b"POST", b"authorization, content-type"),
}
# POSTs a page of any origin may send (a device's own calls; no cookie ever authenticates).
PUBLIC_POSTS = ("/api/v1/devices", "/api/v1/receipts")
PREFLIGHT_MAX_AGE_S = b"86400"


def _is_public_read(scope: Scope) -> bool:
    return scope["method"] in ("GET", "HEAD") and scope["path"].startswith(PUBLIC_READS)


class EdgeHeaders:
    """ASGI wrapper: adds the headers above; answers CORS preflights for device endpoints."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __getattr__(self, name: str) -> Any:  # `state`, `routes`... of the wrapped app
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        preflight = PREFLIGHTS.get(scope["path"]) if scope["method"] == "OPTIONS" else None
        if preflight is not None and any(name == b"origin" for name, _ in scope["headers"]):
            method, headers = preflight
            await send({"type": "http.response.start", "status": 204, "headers": [
                *CORS_ANY_ORIGIN, (b"access-control-allow-methods", method),
                (b"access-control-allow-headers", headers), (b"access-control-max-age", PREFLIGHT_MAX_AGE_S),
                *ALWAYS,
            ]})
            await send({"type": "http.response.body", "body": b""})
            return
        cors = _is_public_read(scope) or (scope["method"] == "POST" and scope["path"] in PUBLIC_POSTS)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(ALWAYS)
                if cors:
                    headers.extend(CORS_ANY_ORIGIN)
                if any(n == b"content-type" and v.startswith(b"text/html") for n, v in headers):
                    headers.extend(HTML)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

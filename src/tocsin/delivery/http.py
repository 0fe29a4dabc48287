"""The HTTP client every gateway sender uses: HTTP/2 where the gateway speaks it (ALPN),
connections kept and reused, bounded in number, the system's CAs plus `push_ca_file`."""

from __future__ import annotations

import ssl

import httpx

from tocsin.settings import Settings


def tls_context(settings: Settings) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if settings.push_ca_file:
        context.load_verify_locations(settings.push_ca_file)
    return context


def gateway_client(settings: Settings, *, max_connections: int = 32) -> httpx.AsyncClient:
    """One client per gateway kind, for the life of the node. Never follows redirects (a
    gateway that redirects is answered as what it said); no proxies from the environment."""
    return httpx.AsyncClient(
        http2=True,
        verify=tls_context(settings),
        timeout=httpx.Timeout(settings.push_timeout_s, connect=min(5.0, settings.push_timeout_s)),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections,
                            keepalive_expiry=300.0),
        follow_redirects=False,
        trust_env=False,
    )

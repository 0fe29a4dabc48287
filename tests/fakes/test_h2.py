"""The fakes' server speaks HTTP/2 over TLS with the test CA, as the gateways do."""

from __future__ import annotations

from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fakes.h2 import h2_server
from tests.fakes.tls import gateway_ca
from tocsin.delivery.http import gateway_client
from tocsin.settings import Settings


async def _echo(request: Request) -> JSONResponse:
    return JSONResponse({"http_version": request.scope["http_version"]})


async def test_a_gateway_client_speaks_http2_to_a_fake_and_keeps_its_connection() -> None:
    app: Any = Starlette(routes=[Route("/", _echo)])
    async with h2_server(app) as url:
        async with gateway_client(Settings(push_ca_file=str(gateway_ca().ca_file))) as client:
            first = await client.get(url + "/")
            second = await client.get(url + "/")
    assert first.http_version == "HTTP/2" and first.json() == {"http_version": "2"}
    assert second.http_version == "HTTP/2"


async def test_a_client_without_the_test_ca_refuses_the_fake() -> None:
    app: Any = Starlette(routes=[Route("/", _echo)])
    async with h2_server(app) as url:
        async with gateway_client(Settings()) as client:
            try:
                await client.get(url + "/")
            except httpx.ConnectError as exc:
                assert "certificate" in str(exc).lower()
            else:
                raise AssertionError("an unknown CA was trusted")

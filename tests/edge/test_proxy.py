"""Behind a load balancer the client address comes from X-Forwarded-For, and only when the
proxy that sends it is trusted (TOCSIN_TRUSTED_PROXIES): otherwise anyone could pick the
source their requests are counted against."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.devices.test_registration import PARIS_CELL
from tests.e2e.conftest import node_settings, start_node, stop_node
from tocsin.cluster.nats_server import NatsServer


@pytest.mark.parametrize("trusted", [True, False], ids=["proxy-trusted", "proxy-not-trusted"])
async def test_the_client_address_comes_from_the_proxy_header_only_from_a_trusted_proxy(
    tmp_path: Path, nats_server: NatsServer, trusted: bool
) -> None:
    settings = node_settings(tmp_path, nats_server, registrations_per_source_per_min=3, registrations_per_min=0,
                             trusted_proxies="127.0.0.1" if trusted else "")
    running = await start_node(settings)
    try:
        async with httpx.AsyncClient(base_url=running[0].url, timeout=10) as http:
            statuses = [
                (await http.post("/api/v1/devices", json={"cells": [PARIS_CELL]},
                                 headers={"X-Forwarded-For": f"203.0.113.{n + 1}"})).status_code
                for n in range(8)
            ]
    finally:
        await stop_node(*running)
    if trusted:
        # Eight clients behind the proxy: each its own source, none over its limit.
        assert statuses == [201] * 8
    else:
        # The header is ignored: one source (the proxy's address), refused past its limit.
        assert statuses[:3] == [201] * 3 and set(statuses[3:]) == {429}

"""Readiness sees what outsiders see: a public listener nobody can enter is red within 10 s."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from tests.edge.conftest import connect, port_of
from tests.e2e.conftest import start_node, stop_node
from tests.health.conftest import RED_WITHIN_S, GREEN_WITHIN_S, Readyz, fast_settings
from tocsin.cluster.nats_server import NatsServer


async def test_a_saturated_public_listener_turns_readiness_red_and_the_probe_sees_it(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    settings = fast_settings(tmp_path, nats_server, max_connections=40, issuer_listen="127.0.0.1:0",
                             header_timeout_s=60.0)
    node, task, cm = await start_node(settings)
    flood: list[asyncio.StreamWriter] = []
    try:
        # Sampled through the issuer listener: the public one refuses everyone meanwhile.
        readyz = Readyz(f"http://{node.settings.issuer_listen}")
        async with httpx.AsyncClient(timeout=5) as http:
            await readyz.until(http, ready=True, within_s=GREEN_WITHIN_S)
            started = time.monotonic()
            edge = node.services.edge
            assert edge is not None

            async def fill() -> None:
                """Slow clients take every place, and any place that comes free again."""
                while edge.public.total < edge.public.max_total and len(flood) < 400:
                    _, writer = await connect(port_of(node.url), f"127.0.3.{1 + len(flood) % 100}")
                    writer.write(b"GET /livez HTTP/1.1\r\n")
                    flood.append(writer)
                    await asyncio.sleep(0)

            await fill()
            await readyz.until(http, ready=False, within_s=RED_WITHIN_S)
            assert "connections" in readyz.samples[-1].failing
            # The probe goes through the public listener on a fresh connection: it fails too.
            async with asyncio.timeout(RED_WITHIN_S - (time.monotonic() - started) + 1):
                while not set(readyz.samples[-1].failing) - {"connections"}:
                    await fill()
                    await asyncio.sleep(0.5)
                    await readyz.sample(http)
            print(f"red with {readyz.samples[-1].failing} {time.monotonic() - started:.1f} s after saturation")
            for writer in flood:
                writer.close()
            flood.clear()
            await readyz.until(http, ready=True, within_s=GREEN_WITHIN_S)
    finally:
        for writer in flood:
            writer.close()
        await stop_node(node, task, cm)

"""The client as an app behaves, against a real node: precise area check, once, never expired."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from tests.e2e.conftest import FakeClock
from tests.samples import IN_LYON, IN_PARIS, alert_xml
from tocsin.app import Node
from tocsin.cap.parse import parse_xml
from tocsin.client.display import Display
from tocsin.client.watch import Watcher
from tocsin.geo.cells import cell_for_point, cover_for

LYON_BOX = "45.70,4.75 45.70,4.90 45.80,4.90 45.80,4.75 45.70,4.75"
# Just east of the Paris box (lon 2.42): in a cell the box touches, outside the polygon.
NEAR_PARIS = (48.85, 2.4235)
XML = {"Content-Type": "application/cap+xml"}


async def issue(http: httpx.AsyncClient, admin: dict[str, str], xml: bytes) -> str:
    response = await http.post("/api/v1/alerts", content=xml, headers={**admin, **XML})
    assert response.status_code == 201, response.text
    return str(response.json()["identifier"])


async def next_display(displays: AsyncIterator[Display], timeout_s: float = 10) -> Display:
    async with asyncio.timeout(timeout_s):
        return await anext(displays)


async def test_watcher_shows_alerts_for_its_place_only(node: Node, http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    assert cover_for(parse_xml(alert_xml()).infos[0].areas).touches(cell_for_point(*NEAR_PARIS))
    async with (
        Watcher([node.url], [IN_PARIS], languages=["fr"], trust_on_first_use=True) as paris,
        Watcher([node.url], [IN_LYON], trust_on_first_use=True) as lyon,
        Watcher([node.url], [NEAR_PARIS], trust_on_first_use=True) as near,
    ):
        for watcher in (paris, lyon, near):
            await watcher.wait_synced()
        in_paris = await issue(http, admin, alert_xml(headline="Seine en crue"))
        in_lyon = await issue(http, admin, alert_xml(polygon=LYON_BOX))
        wide = await issue(http, admin, alert_xml(polygon="48.7,2.2 48.7,2.5 49.0,2.5 49.0,2.2 48.7,2.2"))
        shown = await next_display(paris.displays())
        assert (shown.identifier, shown.headline, shown.language) == (in_paris, "Seine en crue", "fr-FR")
        assert shown.delay_s >= 0
        # Each watcher's first display shows what it never displayed before it.
        assert (await next_display(lyon.displays())).identifier == in_lyon
        assert (await next_display(near.displays())).identifier == wide


async def test_watcher_stopped_during_an_alert_shows_it_once_after_restart(
    node: Node, http: httpx.AsyncClient, admin: dict[str, str], tmp_path: Path
) -> None:
    state = tmp_path / "watch.json"
    async with Watcher([node.url], [IN_PARIS], state_path=state, trust_on_first_use=True) as watcher:
        await watcher.wait_synced()
        before = await issue(http, admin, alert_xml())
        assert (await next_display(watcher.displays())).identifier == before
    missed = await issue(http, admin, alert_xml())
    async with Watcher([node.url], [IN_PARIS], state_path=state, trust_on_first_use=True) as watcher:
        assert (await next_display(watcher.displays())).identifier == missed
    async with Watcher([node.url], [IN_PARIS], state_path=state, trust_on_first_use=True) as watcher:
        await watcher.wait_synced()
        barrier = await issue(http, admin, alert_xml())
        # Neither earlier alert comes again: the next display is the new one.
        assert (await next_display(watcher.displays())).identifier == barrier


async def test_watcher_never_shows_an_expired_alert(node: Node, http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    late = FakeClock()
    late.advance(120)  # the device's clock reads the alert after it expired
    async with Watcher([node.url], [IN_PARIS], now=late, trust_on_first_use=True) as watcher:
        await watcher.wait_synced()
        await issue(http, admin, alert_xml(expires_in_s=60))
        barrier = await issue(http, admin, alert_xml(expires_in_s=3600))
        assert (await next_display(watcher.displays())).identifier == barrier


async def test_watcher_over_websocket(node: Node, http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    async with Watcher([node.url], [IN_PARIS], protocol="ws", trust_on_first_use=True) as watcher:
        await watcher.wait_synced()
        sent = await issue(http, admin, alert_xml())
        assert (await next_display(watcher.displays())).identifier == sent

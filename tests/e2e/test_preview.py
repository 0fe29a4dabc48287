"""The reach preview's count is the number of devices that then display the alert (issue 12)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h3
import httpx
import pytest

from tests.api.preview_drafts import ISSUER as CAP
from tests.api.preview_drafts import Text, Zone, draft, node_alone, preview, square
from tests.e2e.devices import SseDevice, register, sse_device
from tocsin.app import Node
from tocsin.cap.model import Alert
from tocsin.cap.parse import parse_stored, parse_xml
from tocsin.client.decide import Subscription, decide
from tocsin.cluster.nats_server import NatsServer
from tocsin.geo.cells import cell_for_point, cover_for, covers_point
from tocsin.signing import verify

# Île-de-France, roughly: 78 km by 73 km.
REGION = square(48.5, 1.9, 0.7)
FAR = {"Lyon": (45.764, 4.836), "Marseille": (43.296, 5.370), "Lille": (50.629, 3.057), "Brest": (48.390, -4.486)}
# Metropolitan France and more: every test device is in it (the alert that closes each count).
EVERYWHERE_IN_FRANCE = "41.0,-5.5 41.0,10.0 51.5,10.0 51.5,-5.5 41.0,-5.5"


@pytest.fixture
async def node(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[Node]:
    async with node_alone(tmp_path, nats_server, registrations_per_source_per_min=0, registrations_per_min=0) as node:
        yield node


def whole_cells_inside(polygon: str, step_deg: float = 0.09) -> list[tuple[float, float]]:
    """Points on a grid whose whole cell lies inside `polygon` (one point per cell): a device
    there is reached and displays the alert, nothing in between."""
    area = parse_xml(draft(Text(zones=(Zone(polygons=(polygon,)),)))).infos[0].areas
    points: dict[str, tuple[float, float]] = {}
    lat = 48.5
    while lat < 49.2:
        lon = 1.9
        while lon < 2.6:
            cell = cell_for_point(lat, lon)
            if cell not in points and all(covers_point(area, *v) for v in h3.cell_to_boundary(cell)):
                points[cell] = (lat, lon)
            lon += step_deg
        lat += step_deg
    return list(points.values())


@contextlib.asynccontextmanager
async def devices_at(node: Node, http: httpx.AsyncClient,
                     places: list[tuple[float, float]]) -> AsyncIterator[list[tuple[tuple[float, float], SseDevice]]]:
    """A registered device at each place, each with its SSE stream open and synced."""
    async with contextlib.AsyncExitStack() as stack:
        opened = []
        for place in places:
            token = (await register(http, *place, languages=["fr-FR"]))["token"]
            device = await stack.enter_async_context(sse_device(node.url, token))
            await device.next("synced")
            opened.append((place, device))
        yield opened


async def displayed(devices: list[tuple[tuple[float, float], SseDevice]], closing_id: str,
                    keys: dict[str, Any]) -> dict[str, list[tuple[float, float]]]:
    """Per alert id, the places whose device displayed it: each device reads its stream up to
    the alert that reaches them all (events come in stream order), verifies each signature
    and decides with the client's precise check."""
    shown: dict[str, list[tuple[float, float]]] = {}
    now = datetime.now(UTC)
    for place, device in devices:
        while True:
            event = await device.next_alert()
            assert verify(keys, event["kid"], event["cap"].encode(), event["sig"])
            alert: Alert = parse_stored(event["cap"].encode())
            if decide(alert, Subscription(places=(place,), languages=("fr-FR",)), {}, now).is_shown:
                shown.setdefault(event["id"], []).append(place)
            if event["id"] == closing_id:
                break
    return shown


async def issue(http: httpx.AsyncClient, body: bytes) -> dict[str, Any]:
    answered = await http.post("/api/v1/alerts", content=body, headers=CAP)
    assert answered.status_code == 201, answered.text
    got: dict[str, Any] = answered.json()
    return got


async def test_the_preview_count_is_the_number_of_devices_that_display_the_alert(
    node: Node, http: httpx.AsyncClient
) -> None:
    inside = whole_cells_inside(REGION)
    assert len(inside) >= 20
    body = draft(Text(zones=(Zone(desc="Île-de-France", polygons=(REGION,)),)))
    cover = cover_for(parse_xml(body).infos[0].areas)
    assert not any(cover.touches(cell_for_point(*p)) for p in FAR.values())  # far: not even a cell
    keys = {k["kid"]: k for k in (await http.get("/.well-known/tocsin/keys")).json()["keys"]}
    async with devices_at(node, http, inside + list(FAR.values())) as devices:
        previewed = await preview(http, body)
        assert previewed["reach"]["connectedHere"] == {"node": node.services.settings.node_name,
                                                       "devices": len(inside), "sse": len(inside), "ws": 0}
        alert_id = (await issue(http, body))["id"]
        closing = await issue(http, draft(Text(zones=(Zone(polygons=(EVERYWHERE_IN_FRANCE,)),))))
        shown = await displayed(devices, closing["id"], keys)
        assert previewed["reach"]["devices"] == len(shown[alert_id]) == len(inside)
        assert previewed["reach"]["byLanguage"] == {"fr-FR": len(inside)} and previewed["warnings"] == [
            {"code": "actual-alert", "detail": "this is an Actual alert: issuing it alerts the public"}]
        assert sorted(shown[alert_id]) == sorted(inside)
        # What the devices were sent is the size the preview gave for a push payload.
        stored = await node.services.store.get(alert_id)
        assert previewed["budgets"]["push"]["length"] == len(json.dumps(
            {"seq": stored.seq, "event_id": f"{stored.seq}.{alert_id[:8]}", "id": alert_id, "kid": stored.envelope.kid,
             "sig": stored.envelope.sig, "cap": stored.envelope.payload.decode()},
            ensure_ascii=False, separators=(",", ":")).encode())

        # A Cancel without an area goes where the alert went: the same devices.
        sent = parse_xml(body)
        reference = f"{sent.sender},{sent.identifier},{sent.sent.isoformat()}"
        cancel = draft(Text(zones=()), msg_type="Cancel", references=reference)
        retracting = await preview(http, cancel)
        assert retracting["cover"]["from"] == "references" and retracting["area"]["km2"] == 0
        assert retracting["reach"]["devices"] == len(inside)


async def test_an_alert_for_departement_06_by_geocode_alone_previews_the_devices_in_06(
    node: Node, http: httpx.AsyncClient
) -> None:
    in_06 = {"Nice": (43.7102, 7.2620), "Grasse": (43.6580, 6.9237)}
    outside = {"Marseille": (43.296, 5.370), "Paris": (48.8566, 2.3522)}
    body = draft(Text(zones=(Zone(desc="Alpes-Maritimes", geocodes=(("INSEE-DEP", "06"),)),)))
    keys = {k["kid"]: k for k in (await http.get("/.well-known/tocsin/keys")).json()["keys"]}
    async with devices_at(node, http, list(in_06.values()) + list(outside.values())) as devices:
        previewed = await preview(http, body)
        assert previewed["reach"]["devices"] == len(in_06)
        assert previewed["area"]["km2"] == pytest.approx(4299, rel=0.02)  # INSEE: 4,299 km²
        alert_id = (await issue(http, body))["id"]
        closing = await issue(http, draft(Text(zones=(Zone(polygons=(EVERYWHERE_IN_FRANCE,)),))))
        shown = await displayed(devices, closing["id"], keys)
        assert sorted(shown[alert_id]) == sorted(in_06.values())

"""Every area form against a real node: devices (the client library) at known points
inside, on the edge of, just outside and far from polygons, circles and gazetteer areas
each display, receive without displaying, or never receive an alert, exactly as they should.

No sleeps: a later alert every device must display (`barrier`) proves what came before it
(the stream is in order): a device that never received an alert has counted no event for
it when the barrier is displayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from xml.sax.saxutils import escape

import httpx

from tests.e2e.devices import sse_device
from tests.e2e.test_watch_cli import lines_until, tocsin_watch
from tests.samples import EIGHT_PLACES as EIGHT
from tocsin.app import Node
from tocsin.cap.parse import parse_xml
from tocsin.client.display import Display
from tocsin.client.places import Place
from tocsin.client.watch import Watcher
from tocsin.geo.cells import cell_for_point, cover_for

XML = {"Content-Type": "application/cap+xml"}
KM_LAT = 1 / 111.195  # degrees of latitude per km
_ids = itertools.count(1)

NICE = (43.7102, 7.2620)
MARSEILLE = (43.2965, 5.3698)
BREST = (48.3904, -4.4861)


def area(desc: str, *, polygons: Sequence[str] = (), circles: Sequence[str] = (), geocodes: Sequence[tuple[str, str]] = (),
         altitude: str | None = None, ceiling: str | None = None) -> str:
    """One CAP <area> (elements in the schema's order)."""
    return "".join([
        f"<area><areaDesc>{escape(desc)}</areaDesc>",
        *(f"<polygon>{p}</polygon>" for p in polygons),
        *(f"<circle>{c}</circle>" for c in circles),
        *(f"<geocode><valueName>{n}</valueName><value>{v}</value></geocode>" for n, v in geocodes),
        f"<altitude>{altitude}</altitude>" if altitude is not None else "",
        f"<ceiling>{ceiling}</ceiling>" if ceiling is not None else "",
        "</area>",
    ])


def cap(*areas: str, headline: str = "Alerte", msg_type: str = "Alert", references: str = "") -> tuple[str, bytes]:
    """(identifier, CAP XML) of a Public French alert over `areas`."""
    identifier = f"FR-AREAS-{next(_ids)}-{datetime.now(UTC).timestamp():.6f}"
    sent = datetime.now(UTC).replace(microsecond=0)
    refs = f"<references>{references}</references>" if references else ""
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?><alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">'
        f"<identifier>{identifier}</identifier><sender>prefecture@interieur.gouv.fr</sender>"
        f"<sent>{sent.isoformat()}</sent><status>Actual</status><msgType>{msg_type}</msgType><scope>Public</scope>{refs}"
        "<info><language>fr-FR</language><category>Met</category><event>Inondation</event>"
        "<urgency>Immediate</urgency><severity>Severe</severity><certainty>Observed</certainty>"
        f"<expires>{(sent + timedelta(hours=1)).isoformat()}</expires><headline>{escape(headline)}</headline>"
        f"{''.join(areas)}</info></alert>"
    )
    return identifier, xml.encode()


def circle(point: tuple[float, float], radius_km: float) -> str:
    return f"{point[0]},{point[1]} {radius_km}"


def box(south: float, west: float, north: float, east: float) -> str:
    return f"{south},{west} {south},{east} {north},{east} {north},{west} {south},{west}"


def north_of(point: tuple[float, float], km: float) -> tuple[float, float]:
    return (point[0] + km * KM_LAT, point[1])


def east_of(point: tuple[float, float], km: float) -> tuple[float, float]:
    return (point[0], point[1] + km * KM_LAT / math.cos(math.radians(point[0])))


async def issue(http: httpx.AsyncClient, headers: dict[str, str], alert: tuple[str, bytes]) -> str:
    response = await http.post("/api/v1/alerts", content=alert[1], headers={**headers, **XML})
    assert response.status_code == 201, response.text
    return alert[0]


@dataclass
class Device:
    """A watcher and the displays it produced, in order."""

    name: str
    watcher: Watcher
    shown: asyncio.Queue[Display]

    async def next(self, timeout_s: float = 15.0) -> Display:
        async with asyncio.timeout(timeout_s):
            return await self.shown.get()

    @property
    def received(self) -> int:
        return self.watcher.stats.events


@contextlib.asynccontextmanager
async def devices(node: Node, where: dict[str, Sequence[Place | tuple[float, float]]]) -> AsyncIterator[dict[str, Device]]:
    """One synced watcher per entry, each following its places."""
    async with contextlib.AsyncExitStack() as stack:
        found: dict[str, Device] = {}
        for name, places in where.items():
            queue: asyncio.Queue[Display] = asyncio.Queue()
            watcher = Watcher([node.url], places, trust_on_first_use=True, on_display=queue.put)
            await stack.enter_async_context(watcher)
            found[name] = Device(name, watcher, queue)
        async with asyncio.timeout(20):
            for device in found.values():
                await device.watcher.wait_synced()
        yield found


def barrier(points: Sequence[tuple[float, float]]) -> tuple[str, bytes]:
    """An alert every device at `points` displays (a small circle around each)."""
    return cap(area("barrière", circles=[circle(p, 0.2) for p in points]), headline="barrière")


async def expect(found: dict[str, Device], http: httpx.AsyncClient, headers: dict[str, str], sent: str,
                 displayed: set[str], received: set[str], points: Sequence[tuple[float, float]]) -> None:
    """Each device in `displayed` displays `sent`; then after a barrier, each device received
    `sent` exactly when it is in `received` (a superset of `displayed`)."""
    for name in displayed:
        shown = await found[name].next()
        assert shown.identifier == sent, name
    last = await issue(http, headers, barrier(points))
    for name, device in found.items():
        shown = await device.next()
        assert shown.identifier == last, f"{name} displayed {shown.identifier}, not the barrier"
        assert device.received == (2 if name in received else 1), f"{name} received {device.received} events"


LYON_BOX = box(45.70, 4.75, 45.80, 4.90)
TOULOUSE = (43.6047, 1.4442)


async def test_points_inside_on_the_edge_just_outside_and_far_from_each_area_form(
    node: Node, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    where = {
        "in polygon": (45.75, 4.80),
        "polygon edge": (45.70, 4.80),
        "just outside polygon": (45.6991, 4.80),  # 100 m south of its edge
        "in second polygon": (45.20, 5.72),
        "in circle": east_of(TOULOUSE, 3.0),
        "circle edge": east_of(TOULOUSE, 4.98),
        "just outside circle": east_of(TOULOUSE, 5.1),
        "Nice (06)": NICE,
        "Marseille (13)": MARSEILLE,
        "far": BREST,
    }
    alert = cap(
        area("Lyon et Grenoble", polygons=[LYON_BOX, box(45.15, 5.65, 45.25, 5.80)]),
        area("Toulouse", circles=[circle(TOULOUSE, 5.0)]),
        area("Alpes-Maritimes", geocodes=[("INSEE-DEP", "06")]),
    )
    areas = [a for info in parse_xml(alert[1]).infos for a in info.areas[:2]]
    for name in ("just outside polygon", "just outside circle"):  # in a cell the cover holds: received
        assert cover_for(areas).touches(cell_for_point(*where[name])), name
    async with devices(node, {name: [point] for name, point in where.items()}) as found:
        sent = await issue(http, admin, alert)
        displayed = {"in polygon", "polygon edge", "in second polygon", "in circle", "circle edge", "Nice (06)"}
        received = displayed | {"just outside polygon", "just outside circle"}
        await expect(found, http, admin, sent, displayed, received, list(where.values()))
        outside = found["just outside polygon"].watcher.stats.verdicts
        assert outside.get("out_of_area") == 1


async def test_departement_06_by_geocode_alone_reaches_nice_and_not_marseille(
    node: Node, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    alert = cap(area("Alpes-Maritimes", geocodes=[("INSEE-DEP", "06")]), headline="Crue du Var")
    async with devices(node, {"Nice": [NICE], "Marseille": [MARSEILLE]}) as found:
        sent = await issue(http, admin, alert)
        shown = await found["Nice"].next()
        assert (shown.identifier, shown.headline) == (sent, "Crue du Var")
        assert shown.places == ()  # one place: the display need not say which
        # What the device received and verified: the resolved polygons, the geocode kept.
        received = shown.alert.infos[0].areas[0]
        assert received.polygons and [(g.value_name, g.value) for g in received.geocodes] == [("INSEE-DEP", "06")]
        await expect(found, http, admin, sent, set(), {"Nice"}, [NICE, MARSEILLE])


def numbers(text: str) -> list[Decimal]:
    return [Decimal(n) for n in re.findall(r"[+-]?[\d.]+", text)]


async def test_altitude_ceiling_and_every_coordinate_reach_the_device_as_sent(
    node: Node, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    polygon = ("45.70000000,4.75 45.7,4.900000001 45.800000000000000001,4.90 "
               "45.80,4.75123456789 45.70000000,4.75")
    ring = "45.76,4.8357 0.49999999999999999"
    alert = cap(area("Lyon", polygons=[polygon], circles=[ring], altitude="152.123456789", ceiling="3000"))
    registered = await http.post("/api/v1/devices", json={"cells": [cell_for_point(45.75, 4.80)]})
    assert registered.status_code == 201, registered.text
    async with sse_device(node.url, registered.json()["token"]) as device:
        await device.next("synced")
        sent = await issue(http, admin, alert)
        event = await device.next_alert()
    # The CAP text the device verifies, signed: the issuer's numbers, altitude and ceiling.
    text = event["cap"]
    got = parse_xml(text.encode()).infos[0].areas[0]
    assert got.area_desc == "Lyon" and sent in text
    assert numbers(re.findall(r"<polygon>(.*?)</polygon>", text)[0]) == numbers(polygon)
    assert numbers(re.findall(r"<circle>(.*?)</circle>", text)[0]) == numbers(ring)
    assert re.findall(r"<altitude>(.*?)</altitude>", text) == ["152.123456789"]
    assert [Decimal(c) for c in re.findall(r"<ceiling>(.*?)</ceiling>", text)] == [Decimal("3000")]
    assert (got.altitude, got.ceiling) == (152.123456789, 3000.0)


async def test_a_polygon_across_the_antimeridian_and_a_twenty_metre_square(
    node: Node, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    fiji = "-18,179 -18,-179 -16,-179 -16,179 -18,179"
    corner = (43.7102, 7.2620)
    side = 20 * KM_LAT / 1000
    dlon = side / math.cos(math.radians(corner[0]))
    tiny = box(corner[0], corner[1], corner[0] + side, corner[1] + dlon)
    where = {
        "Suva side": (-17.0, 179.5),
        "Taveuni side": (-17.0, -179.5),
        "wrong way round": (-17.0, 178.0),
        "in the square": (corner[0] + side / 2, corner[1] + dlon / 2),
        "beside the square": (corner[0] + side / 2, corner[1] + 2 * dlon),  # 30 m east of it
    }
    alert = cap(area("Fidji", polygons=[fiji]), area("Carré", polygons=[tiny]))
    async with devices(node, {name: [point] for name, point in where.items()}) as found:
        sent = await issue(http, admin, alert)
        displayed = {"Suva side", "Taveuni side", "in the square"}
        await expect(found, http, admin, sent, displayed, displayed | {"beside the square"}, list(where.values()))


async def test_a_bow_tie_is_refused_naming_the_area_and_the_crossing(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    bow_tie = "45.0,5.0 45.1,5.1 45.0,5.1 45.1,5.0 45.0,5.0"
    response = await http.post("/api/v1/alerts", content=cap(area("Lyon", polygons=[LYON_BOX]),
                                                                area("Noeud", polygons=[LYON_BOX, bow_tie]))[1],
                               headers={**admin, **XML})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "area.self-intersecting"
    assert body["detail"] == ("info[0].area[1] ('Noeud') polygon[1] crosses itself: the edge from point 0 to 1 "
                              "crosses the edge from point 2 to 3 at 45.05,5.05")
    # Touching itself at a vertex is accepted.
    lobes = "45.0,5.0 45.0,5.1 45.1,5.1 45.0,5.0 45.0,4.9 44.9,4.9 45.0,5.0"
    response = await http.post("/api/v1/alerts", content=cap(area("Lobes", polygons=[lobes]))[1], headers={**admin, **XML})
    assert response.status_code == 201, response.text


# In Lyon, 1.5 km from the eight's two Lyon places.
IN_LYON = (45.7485, 4.8467)


async def test_a_device_following_eight_places_gets_an_alert_for_any_of_them_once(
    node: Node, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    async with devices(node, {"eight": EIGHT, "Lyon only": [IN_LYON]}) as found:
        device = found["eight"]
        # The node holds coarse cells for it, never a point.
        registration = device.watcher.state.registration
        assert registration is not None
        record = await node.services.store.devices.get(registration.device_id)
        assert record is not None and sorted(record["cells"]) == sorted(device.watcher.cells)
        assert not {"points", "lat", "lon", "places"} & set(record)
        for place in EIGHT:
            sent = await issue(http, admin, cap(area(place.name, circles=[circle(place.point, 0.3)]), headline=place.name))
            shown = await device.next()
            assert (shown.identifier, shown.places) == (sent, (place.name,))
        # One alert over three of its places (and the other device's): displayed once.
        lyon_nice = cap(area("Lyon", circles=[circle((45.76, 4.834), 3.0)]), area("Nice", circles=[circle(NICE, 2.0)]))
        sent = await issue(http, admin, lyon_nice)
        shown = await device.next()
        assert (shown.identifier, shown.places) == (sent, ("Parents", "École", "Nice"))
        # Its Update and its Cancel each apply once.
        ref = f"prefecture@interieur.gouv.fr,{sent},{parse_xml(lyon_nice[1]).sent.isoformat()}"
        update = await issue(http, admin, cap(area("Lyon", circles=[circle((45.76, 4.834), 3.0)]), msg_type="Update",
                                              references=ref, headline="mise à jour"))
        shown = await device.next()
        assert (shown.identifier, shown.kind.value) == (update, "update")
        cancel = await issue(http, admin, cap(area("Lyon", circles=[circle((45.76, 4.834), 3.0)]), msg_type="Cancel",
                                              references=ref, headline="fin"))
        shown = await device.next()
        assert (shown.identifier, shown.kind.value) == (cancel, "cancel")
        # Nothing more came for any of it: the next display is a later alert.
        last = await issue(http, admin, barrier([*(place.point for place in EIGHT), IN_LYON]))
        assert (await device.next()).identifier == last
        assert device.watcher.stats.verdicts.get("duplicate", 0) == 0
        lyon = found["Lyon only"]
        for expected in (sent, update, cancel, last):
            assert (await lyon.next()).identifier == expected


async def test_tocsin_watch_with_named_places_says_which_place_an_alert_is_for(
    node: Node, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    async with tocsin_watch(node, "--place", f"Nice={NICE[0]},{NICE[1]}", "--place", "Brest=48.3904,-4.4861") as out:
        sync = await issue(http, admin, cap(area("Brest", circles=[circle(BREST, 1.0)]), headline="synchro"))
        await lines_until(out, sync)
        sent = await issue(http, admin, cap(area("Alpes-Maritimes", geocodes=[("INSEE-DEP", "06")]), headline="Crue du Var"))
        printed = await lines_until(out, sent)
    assert len(printed) == 1 and "Crue du Var (for Nice) [" in printed[0]

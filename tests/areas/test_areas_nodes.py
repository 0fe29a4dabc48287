"""Imported areas on every node, resolved at accept, and read fail-closed from the bucket."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.areas.conftest import ADMIN, MARSEILLE, NICE, collection, feature, import_areas, own_node
from tests.e2e.conftest import ISSUER_TOKEN, node_settings
from tests.samples import alert_xml
from tests.waiting import until
from tocsin.app import Node, open_node
from tocsin.cap.parse import parse_xml
from tocsin.cluster.nats_server import NatsServer
from tocsin.geo.gazetteer import key_for

CAP = {"Content-Type": "application/cap+xml", "Authorization": f"Bearer {ISSUER_TOKEN}"}


def geocode_alert(*codes: tuple[str, str], desc: str = "Zone") -> bytes:
    """An alert whose one area is given by geocodes alone."""
    xml = alert_xml()
    start, end = xml.index(b"<polygon>"), xml.index(b"</polygon>") + len(b"</polygon>")
    geocodes = "".join(f"<geocode><valueName>{n}</valueName><value>{v}</value></geocode>" for n, v in codes)
    return (xml[:start] + geocodes.encode() + xml[end:]).replace(b"Paris centre", desc.encode())


@pytest.fixture
async def two_nodes(tmp_path: Path, nats_server: NatsServer, areas_bucket: str) -> AsyncIterator[tuple[Node, Node]]:
    async with own_node(tmp_path / "a", nats_server, areas_bucket) as first, \
            own_node(tmp_path / "b", nats_server, areas_bucket, stream=first.settings.stream) as second:
        yield first, second


async def test_an_import_on_one_node_is_resolved_on_the_other(two_nodes: tuple[Node, Node]) -> None:
    a, b = two_nodes
    async with httpx.AsyncClient(base_url=a.url, timeout=30) as on_a, \
            httpx.AsyncClient(base_url=b.url, timeout=30) as on_b:
        imported_at = time.monotonic()
        made = await import_areas(on_a, "ZONES-N", collection(feature("nice", nom="Nice"),
                                                              feature("mrs", MARSEILLE, nom="Marseille")))
        assert made.status_code == 201, made.text
        await until(lambda: b.services.accept.gazetteer.schemes().get("ZONES-N") == 2, timeout_s=2)
        print(f"imported on {a.settings.node_name}, held on {b.settings.node_name} after "
              f"{1000 * (time.monotonic() - imported_at):.1f} ms")
        assert (await on_b.get("/api/v1/areas/ZONES-N/nice")).json()["name"] == "Nice"
        # Geocodes alone, accepted on the other node: the stored CAP carries the polygons.
        accepted = await on_b.post("/api/v1/alerts", content=geocode_alert(("ZONES-N", "nice")), headers=CAP)
        assert accepted.status_code == 201, accepted.text
        stored = await on_b.get(f"/api/v1/alerts/{accepted.json()['id']}.xml")
        area = parse_xml(stored.content).infos[0].areas[0]
        assert area.polygons == (tuple((lat, lon) for lon, lat in NICE),)
        assert [(g.value_name, g.value) for g in area.geocodes] == [("ZONES-N", "nice")]
        # Removed on b: gone from a's gazetteer, and a geocode of it no longer resolves.
        assert (await on_b.delete("/api/v1/admin/areas/ZONES-N", headers=ADMIN)).status_code == 200
        await until(lambda: not a.services.accept.gazetteer.knows("ZONES-N"), timeout_s=2)
        refused = await on_a.post("/api/v1/alerts", content=geocode_alert(("ZONES-N", "nice")), headers=CAP)
        assert refused.status_code == 422 and refused.json()["code"] == "policy.unlocatable-area"


async def test_geocodes_resolve_at_accept_once_and_an_unknown_code_is_named(
    http: httpx.AsyncClient, node: Node,
) -> None:
    assert (await import_areas(http, "ZONES-G", collection(feature("nice"), feature("mrs", MARSEILLE)))).status_code == 201
    sent = geocode_alert(("ZONES-G", "nice"), ("ZONES-G", "mrs"), ("OTHER", "1"))
    both = await http.post("/api/v1/alerts", content=sent, headers=CAP)
    assert both.status_code == 201, both.text
    area = parse_xml((await http.get(f"/api/v1/alerts/{both.json()['id']}.xml")).content).infos[0].areas[0]
    assert len(area.polygons) == 2 and len(area.geocodes) == 3
    with sqlite3.connect(node.settings.data_dir / "ledger.sqlite3") as ledger:  # the issuer's bytes, as sent
        original, payload = ledger.execute("SELECT original, payload FROM accepted WHERE alert_id = ?",
                                           (both.json()["id"],)).fetchone()
    assert original == sent and b"<polygon>" not in original and b"<polygon>" in payload
    unknown = await http.post("/api/v1/alerts", content=geocode_alert(("ZONES-G", "nice"), ("ZONES-G", "lyon"),
                                                                      desc="Côte"), headers=CAP)
    assert unknown.status_code == 422 and unknown.json()["code"] == "area.unknown-geocode"
    assert "info[0].area[0].geocode[1] ('Côte'): ZONES-G has no code 'lyon'" in unknown.json()["detail"]
    # A département by geocode alone, from the built-in gazetteer.
    dep = await http.post("/api/v1/alerts", content=geocode_alert(("INSEE-DEP", "06")), headers=CAP)
    assert dep.status_code == 201, dep.text
    stored = parse_xml((await http.get(f"/api/v1/alerts/{dep.json()['id']}.xml")).content)
    assert stored.infos[0].areas[0].polygons == node.services.accept.gazetteer["INSEE-DEP", "06"].polygons


async def test_hostile_records_in_the_bucket_are_skipped_and_good_ones_kept(
    http: httpx.AsyncClient, node: Node, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="tocsin.geo.gazetteer_mirror")
    assert (await import_areas(http, "ZONES-H", collection(feature("nice"), feature("mrs", MARSEILLE)))).status_code == 201
    gazetteer = node.services.accept.gazetteer
    records = node.services.store.areas
    raw = records.put_raw  # type: ignore[attr-defined]
    await raw(key_for("ZONES-H", "junk"), b"{not json")
    await raw(key_for("ZONES-H", "nice"), b'{"scheme":"ZONES-H","code":"nice","name":"n","polygons":"x"}')
    await raw(key_for("ZONES-H", "evil"), b'{"scheme": "ZONES-H", "code": "mrs", "name": "x", "polygons": []}')
    await raw(key_for("ZONES-H", "wide"), b'{"scheme":"ZONES-H","code":"wide","name":"w","polygons":[[[0,0],[0,1]]]}')
    await raw(key_for("INSEE-DEP", "06"), b'{"scheme":"INSEE-DEP","code":"06","name":"fake","polygons":'
                                          b'[[[0,0],[0,1],[1,1],[0,0]]]}')
    await raw(key_for("ZONES-H", "late"), b'{"scheme":"ZONES-H","code":"late","name":"ok","polygons":'
                                          b'[[[43,7],[43,7.1],[43.1,7.1],[43,7]]]}')
    await until(lambda: gazetteer.lookup("ZONES-H", "late") is not None, timeout_s=2)  # after every bad one
    assert gazetteer.lookup("ZONES-H", "nice") is None  # unreadable now: holds nothing
    assert gazetteer.lookup("ZONES-H", "junk") is None
    assert sum(r.message == "areas mirror skipped a record" for r in caplog.records) == 4
    assert gazetteer.lookup("ZONES-H", "mrs") is not None and gazetteer.lookup("ZONES-H", "wide") is None
    assert gazetteer.lookup("INSEE-DEP", "06").name == "Alpes-Maritimes"  # type: ignore[union-attr]
    refused = await http.post("/api/v1/alerts", content=geocode_alert(("ZONES-H", "nice")), headers=CAP)
    assert refused.status_code == 422 and refused.json()["code"] == "area.unknown-geocode"


async def test_a_starting_node_holds_the_imported_gazetteers_before_it_serves(
    tmp_path: Path, nats_server: NatsServer, areas_bucket: str,
) -> None:
    async with own_node(tmp_path / "a", nats_server, areas_bucket) as first, \
            httpx.AsyncClient(base_url=first.url, timeout=30) as http:
        assert (await import_areas(http, "ZONES-S", collection(feature("nice"), feature("mrs", MARSEILLE)))).status_code == 201
    settings = node_settings(tmp_path / "b", nats_server, areas_bucket=areas_bucket)
    async with open_node(settings) as node:  # not serving yet: its mirror has not run
        assert node.services.accept.gazetteer.schemes().get("ZONES-S") == 2
        assert "ZONES-S.nice" in node.services.areas

"""A gazetteer imported on one node of a real 3-node cluster: stored R3, resolved on every node."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx

from tests.areas.conftest import collection, feature, import_areas
from tests.areas.test_areas_nodes import geocode_alert
from tests.waiting import until_async
from tocsin.cap.parse import parse_xml
from tocsin.cluster.local import LocalCluster


async def retried(call: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
    """As a real client does: a 503 (no quorum yet) is retried, the same request."""
    for _ in range(3):
        response = await call()
        if response.status_code != 503:
            break
        await asyncio.sleep(float(response.headers.get("retry-after", "1")))
    return response


async def test_an_import_on_one_node_is_stored_r3_and_resolved_on_every_node(cluster: LocalCluster) -> None:
    admin = {"Authorization": f"Bearer {cluster.admin_token}"}
    async with httpx.AsyncClient(base_url=cluster.specs[0].url, timeout=30) as first:
        made = await retried(lambda: import_areas(first, "ZONES-R3", collection(feature("nice", nom="Nice")), token=admin))
        assert made.status_code == 201, made.text
    async with httpx.AsyncClient(base_url=cluster.specs[0].monitor_url) as http:
        jsz = (await http.get("/jsz", params={"streams": "true", "config": "true"})).json()
    bucket = [s for a in jsz["account_details"] for s in a["stream_detail"] if s["name"] == "KV_TOCSIN_AREAS"]
    assert bucket and bucket[0]["config"]["num_replicas"] == 3 and bucket[0]["config"]["allow_direct"]
    assert bucket[0]["config"]["max_msg_size"] == 1_000_000
    for spec in cluster.specs:
        async with httpx.AsyncClient(base_url=spec.url, timeout=30) as http:

            async def held() -> bool:
                return (await http.get("/api/v1/areas/ZONES-R3/nice")).status_code == 200

            await until_async(held, timeout_s=5)
            accepted = await retried(lambda: http.post(
                "/api/v1/alerts", content=geocode_alert(("ZONES-R3", "nice")),
                headers={"Authorization": f"Bearer {cluster.issuer_token}", "Content-Type": "application/cap+xml"}))
            assert accepted.status_code == 201, accepted.text
            stored = parse_xml((await http.get(f"/api/v1/alerts/{accepted.json()['id']}.xml")).content)
            assert len(stored.infos[0].areas[0].polygons) == 1

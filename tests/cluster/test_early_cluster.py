"""Early copies on a real 3-node cluster whose alerts stream has lost its quorum (two of the
three nats-servers killed): nothing can be stored, as during a leader election, and an alert
issued meanwhile still reaches the live devices of the node that took it (pipeline/early.py).

- quorum back within the publish deadline: the issuer gets its 201 once the alert is stored,
  after the devices had its early copy; the stored copy follows with its cursor;
- quorum back only after it: the issuer gets a 503 that says the alert went out early, the
  node's ledger keeps it, and the reconciler stores it once the stream is back.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.devices import register, sse_device
from tests.samples import IN_PARIS, alert_xml
from tests.waiting import until_async
from tocsin.cap.parse import parse_xml
from tocsin.cluster.local import LocalCluster
from tocsin.store.base import alert_id_for

pytestmark = pytest.mark.timeout(240)

# node1 waits long for a store (its alert is stored once the quorum is back); node2 gives up
# after 4 s (its alert is left to the reconciler).
PATIENT, HASTY = "node1", "node2"


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalCluster]:
    local = LocalCluster(Path(tmp_path_factory.mktemp("early")), nodes=3,
                         extra_env={"TOCSIN_PUBLISH_DEADLINE_S": "40"},
                         node_extra_env={HASTY: {"TOCSIN_PUBLISH_DEADLINE_S": "4"}})
    try:
        await local.start()
        yield local
    finally:
        await local.stop()


def headers(cluster: LocalCluster) -> dict[str, str]:
    return {"Authorization": f"Bearer {cluster.issuer_token}", "Content-Type": "application/cap+xml"}


async def stored_everywhere(cluster: LocalCluster, alert_id: str) -> bool:
    for spec in cluster.specs:
        async with httpx.AsyncClient(base_url=spec.url, timeout=5) as http:
            try:
                if (await http.get(f"/api/v1/alerts/{alert_id}")).status_code != 200:
                    return False
            except httpx.HTTPError:
                return False
    return True


async def ready(cluster: LocalCluster) -> bool:
    for spec in cluster.specs:
        async with httpx.AsyncClient(base_url=spec.url, timeout=5) as http:
            try:
                if (await http.get("/readyz")).status_code != 200:
                    return False
            except httpx.HTTPError:
                return False
    return True


async def without_quorum(cluster: LocalCluster, keep: str) -> list[str]:
    """Kill the nats-servers of the two other nodes (their tocsin processes stay)."""
    others = [s.name for s in cluster.specs if s.name != keep]
    for name in others:
        await cluster.kill(name, tocsin=False)
    return others


async def test_alerts_issued_without_a_quorum_reach_devices_before_they_are_stored(cluster: LocalCluster) -> None:
    """More alerts than the accept gate's slots (4): those waiting in the gate go early too."""
    await until_async(lambda: ready(cluster), 60, every_s=0.5)
    node = cluster.spec(PATIENT)
    documents = [alert_xml() for _ in range(6)]
    ids = {alert_id_for(parse_xml(d).sender, parse_xml(d).identifier) for d in documents}
    async with httpx.AsyncClient(base_url=node.url, timeout=60) as http:
        token = (await register(http, *IN_PARIS))["token"]
        async with sse_device(node.url, token) as device:
            await device.next("synced")
            killed = await without_quorum(cluster, PATIENT)
            sent_at = time.monotonic()
            issuing = [asyncio.create_task(http.post("/api/v1/alerts", content=d, headers=headers(cluster)))
                       for d in documents]
            early = [await device.next("alert", timeout_s=5) for _ in documents]
            early_s = time.monotonic() - sent_at
            assert {json.loads(e.data)["id"] for e in early} == ids
            assert all(json.loads(e.data)["seq"] is None and e.last_event_id == "" for e in early)
            assert not any(i.done() for i in issuing), "an issuer was answered before its alert was stored"
            for name in killed:
                await cluster.start_nats(name)
            responses = [await i for i in issuing]
            assert all(r.status_code == 201 for r in responses), [r.text for r in responses]
            stored = [json.loads((await device.next("alert", timeout_s=30)).data) for _ in documents]
            assert {s["id"] for s in stored} == ids
            assert {s["seq"] for s in stored} == {r.json()["seq"] for r in responses}
    assert early_s < 2.0, f"the last early copy came {early_s:.2f} s after the issue"
    for alert_id in ids:
        await until_async(lambda: stored_everywhere(cluster, alert_id), 30, every_s=0.5)


async def test_an_early_alert_the_store_could_not_confirm_is_stored_by_the_reconciler(cluster: LocalCluster) -> None:
    await until_async(lambda: ready(cluster), 90, every_s=0.5)
    node = cluster.spec(HASTY)
    async with httpx.AsyncClient(base_url=node.url, timeout=60) as http:
        token = (await register(http, *IN_PARIS))["token"]
        async with sse_device(node.url, token) as device:
            await device.next("synced")
            killed = await without_quorum(cluster, HASTY)
            response = await http.post("/api/v1/alerts", content=alert_xml(), headers=headers(cluster))
            assert response.status_code == 503, response.text
            problem = response.json()
            assert problem["code"] == "store.unavailable" and "ahead of storage" in problem["detail"]
            early = json.loads((await device.next("alert", timeout_s=5)).data)
            assert early["seq"] is None
            for name in killed:
                await cluster.start_nats(name)
            # Not withdrawn from the ledger: the reconciler publishes it once the stream is back.
            stored = json.loads((await device.next("alert", timeout_s=90)).data)
            assert stored["id"] == early["id"] and isinstance(stored["seq"], int)
    await until_async(lambda: stored_everywhere(cluster, early["id"]), 30, every_s=0.5)

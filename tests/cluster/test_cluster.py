"""Any node serves everything; losing a node loses nothing."""

from __future__ import annotations

import asyncio
import json
import os

import httpx

from tests.e2e.devices import register, sse_device
from tests.samples import IN_PARIS, alert_xml
from tocsin.cluster.local import LocalCluster


def auth(cluster: LocalCluster) -> dict[str, str]:
    return {"Authorization": f"Bearer {cluster.issuer_token}", "Content-Type": "application/cap+xml"}


async def issue(url: str, cluster: LocalCluster) -> dict[str, object]:
    """Issue as a real issuer does: a 503 (no quorum yet) is retried, the same alert."""
    xml = alert_xml()
    async with httpx.AsyncClient(base_url=url, timeout=20) as http:
        for _ in range(3):
            response = await http.post("/api/v1/alerts", content=xml, headers=auth(cluster))
            if response.status_code != 503:
                break
            await asyncio.sleep(float(response.headers.get("retry-after", "1")))
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


async def test_cluster_json_lists_every_node_with_its_pids(cluster: LocalCluster) -> None:
    described = json.loads((cluster.data_dir / "cluster.json").read_text())
    assert [n["name"] for n in described["nodes"]] == ["node1", "node2", "node3"]
    for node in described["nodes"]:
        assert node["url"].startswith("http://127.0.0.1:") and node["nats_url"].startswith("nats://")
        assert all(isinstance(pid, int) for pid in node["pids"].values())
    assert oct((cluster.data_dir / "cluster.json").stat().st_mode & 0o777) == "0o600"


async def test_alert_issued_on_one_node_reaches_devices_on_every_node(cluster: LocalCluster) -> None:
    devices = []
    for spec in cluster.specs:
        async with httpx.AsyncClient(base_url=spec.url) as http:
            devices.append((spec.url, (await register(http, *IN_PARIS))["token"]))
    async with sse_device(*devices[0]) as d1, sse_device(*devices[1]) as d2, sse_device(*devices[2]) as d3:
        for device in (d1, d2, d3):
            await device.next("synced")
        issued = await issue(cluster.specs[0].url, cluster)
        for device in (d1, d2, d3):
            assert (await device.next_alert())["id"] == issued["id"]
    for spec in cluster.specs:
        async with httpx.AsyncClient(base_url=spec.url) as http:
            assert (await http.get(f"/api/v1/alerts/{issued['id']}")).json()["seq"] == issued["seq"]


async def test_stream_is_replicated_on_three_nodes(cluster: LocalCluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.specs[0].monitor_url) as http:
        jsz = (await http.get("/jsz", params={"streams": "true", "config": "true"})).json()
    streams = [s for a in jsz["account_details"] for s in a["stream_detail"] if s["name"] == "TOCSIN_ALERTS"]
    assert streams and streams[0]["config"]["num_replicas"] == 3
    assert streams[0]["config"]["deny_delete"] and streams[0]["config"]["deny_purge"]
    assert len(streams[0]["cluster"]["replicas"]) == 2  # the leader plus two followers


async def test_device_of_a_killed_node_resumes_on_another_and_misses_nothing(cluster: LocalCluster) -> None:
    victim, survivor = cluster.specs[2], cluster.specs[0]
    async with httpx.AsyncClient(base_url=victim.url) as http:
        token = (await register(http, *IN_PARIS))["token"]
    async with sse_device(victim.url, token) as device:
        await device.next("synced")
        first = await issue(survivor.url, cluster)
        seen = await device.next_alert()
        assert seen["id"] == first["id"]
    await cluster.kill(victim.name)  # kill -9 of nats-server and tocsin
    missed = [await issue(survivor.url, cluster) for _ in range(3)]
    async with sse_device(survivor.url, token, last_event_id=seen["seq"]) as device:
        got = [(await device.next_alert(timeout_s=20))["id"] for _ in missed]
        # Nothing twice: the next alert after the missed ones is a new one.
        later = await issue(survivor.url, cluster)
        assert (await device.next_alert(timeout_s=20))["id"] == later["id"]
    assert got == [m["id"] for m in missed]
    await cluster.start_nats(victim.name)
    await cluster.start_tocsin(victim.name)
    # The restarted node caught up: it serves what was issued while it was down.
    async with httpx.AsyncClient(base_url=victim.url) as http:
        for alert in missed:
            assert (await http.get(f"/api/v1/alerts/{alert['id']}")).status_code == 200
    assert all(pid and os.kill(pid, 0) is None for pid in cluster.pids(victim.name).values())


async def test_watcher_on_three_nodes_loses_nothing_when_its_node_is_killed(cluster: LocalCluster) -> None:
    """Issue 3's acceptance: kill -9 (both processes) of the watcher's node during a burst."""
    from tocsin.client.watch import Watcher

    urls = [cluster.specs[1].url, cluster.specs[0].url, cluster.specs[2].url]
    issued: list[dict[str, object]] = []
    async with Watcher(urls, [IN_PARIS], trust_on_first_use=True) as watcher:
        synced = await watcher.wait_synced()
        # The node it follows now (normally the first URL) is the one to kill.
        victim = next(s for s in cluster.specs if s.name == synced.node)
        others = [s for s in cluster.specs if s is not victim]
        displays = watcher.displays()

        async def burst() -> None:
            for i in range(10):
                issued.append(await issue(others[i % 2].url, cluster))
                if i == 3:
                    await cluster.kill(victim.name)

        await burst()
        wanted = {str(a["identifier"]) for a in issued}
        shown = []  # also alerts of earlier tests still active here, replayed on connect
        async with asyncio.timeout(30):
            while not wanted <= {d.identifier for d in shown}:
                shown.append(await anext(displays))
        barrier = await issue(others[0].url, cluster)
        async with asyncio.timeout(20):
            after = await anext(displays)
    assert len({d.identifier for d in shown}) == len(shown)  # nothing twice
    assert after.identifier == barrier["identifier"]
    assert {d.node for d in shown if d.identifier in wanted} - {victim.url}
    await cluster.start_nats(victim.name)
    await cluster.start_tocsin(victim.name)

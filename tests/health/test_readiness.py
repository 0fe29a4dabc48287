"""/livez, /readyz, /metrics and /status of a healthy node, and what they promise."""

from __future__ import annotations

import asyncio
import time
import json
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from click.testing import CliRunner

from tests.e2e.conftest import start_node, stop_node
from tests.health.conftest import GREEN_WITHIN_S, Readyz, fast_settings
from tocsin.app import Node
from tocsin.cli.main import cli
from tocsin.cluster.nats_server import NatsServer
from tocsin.health.readiness import Check

EVERY_CHECK = {"nats", "stream", "follower", "consumers", "ledger", "disk", "reconciler", "stream-usage", "canary", "canary:sse",
               "canary:webpush", "connections", "devices"}


async def test_ready_node_lists_every_check_with_its_age(fast_node: Node, http: httpx.AsyncClient) -> None:
    await Readyz(fast_node.url).until(http, ready=True, within_s=GREEN_WITHIN_S)
    body = (await http.get(f"{fast_node.url}/readyz")).json()
    assert body["status"] == "ready" and body["failing"] == []
    assert set(body["checks"]) == EVERY_CHECK
    for name, check in body["checks"].items():
        assert check["ok"] is True, name
        assert 0 <= check["age_s"] <= check["max_age_s"], (name, check)
    assert body["checks"]["follower"]["value"]["lag"] == 0
    assert body["checks"]["disk"]["value"]["free_mb"] > 0
    # A single node says plainly that it has no redundancy.
    assert body["redundancy"]["redundant"] is False
    assert body["redundancy"]["statement"].startswith("no redundancy")
    assert (await http.get(f"{fast_node.url}/livez")).json()["status"] == "live"


async def test_node_without_prober_is_never_ready(tmp_path: Path, nats_server: NatsServer, http: httpx.AsyncClient) -> None:
    running = await start_node(fast_settings(tmp_path, nats_server, probe_interval_s=0.0))
    node = running[0]
    try:
        async with asyncio.timeout(5):  # the device index's first pass too (the devices check)
            while not node.services.device_cache.loaded:
                await asyncio.sleep(0.01)
        started = time.monotonic()  # the node has caught up: judge a refresh made after that
        async with asyncio.timeout(5):
            while node.services.readiness is None or (node.services.readiness.refreshed_at or 0) < started:
                await asyncio.sleep(0.05)
        response = await http.get(f"{node.url}/readyz")
        assert response.status_code == 503
        assert response.json()["failing"] == ["canary"]
        assert "prober is disabled" in response.json()["checks"]["canary"]["detail"]
    finally:
        await stop_node(*running)


def test_a_result_older_than_its_deadline_is_a_failure() -> None:
    check = Check(name="stream", ok=True, at=100.0, max_age_s=2.0, value={"last_seq": 3})
    assert check.as_json(now=101.0)["ok"] is True
    stale = check.as_json(now=103.5)
    assert stale["ok"] is False and stale["detail"].startswith("stale")


async def test_metrics_follow_prometheus_conventions(fast_node: Node, http: httpx.AsyncClient) -> None:
    await Readyz(fast_node.url).until(http, ready=True, within_s=GREEN_WITHIN_S)
    text = (await http.get(f"{fast_node.url}/metrics")).text
    for name in (
        'tocsin_probes_total{channel="sse",outcome="delivered"}',
        'tocsin_probe_latency_seconds_bucket{channel="sse",le="0.05"}',
        'tocsin_canary_age_seconds{channel="sse"}',
        'tocsin_deliveries_total{channel="sse",outcome="queued"}',
        'tocsin_connected_devices{channel="sse"} 1.0',
        "tocsin_pending_deliveries 0.0",
        "tocsin_follower_behind_seconds",
        "tocsin_reconciler_republished_total 0.0",
        'tocsin_alerts_accepted_total{status="System"}',
        "tocsin_ready 1.0",
        'tocsin_readiness_check{check="disk"} 1.0',
    ):
        assert name in text, name


async def test_accept_times_its_two_durable_writes_apart(fast_node: Node, http: httpx.AsyncClient) -> None:
    # The canary's alerts are accepted like any: each a publish and a ledger row, timed apart.
    await Readyz(fast_node.url).until(http, ready=True, within_s=GREEN_WITHIN_S)
    text = (await http.get(f"{fast_node.url}/metrics")).text
    samples = {(s.name, s.labels.get("phase")): s.value for family in text_string_to_metric_families(text)
               if family.name == "tocsin_accept_phase_seconds" for s in family.samples}
    for phase in ("publish", "ledger"):
        assert samples[("tocsin_accept_phase_seconds_count", phase)] >= 1, samples
        assert samples[("tocsin_accept_phase_seconds_sum", phase)] > 0, samples


async def test_status_page_in_html_and_json(fast_node: Node, http: httpx.AsyncClient) -> None:
    await Readyz(fast_node.url).until(http, ready=True, within_s=GREEN_WITHIN_S)
    page = await http.get(f"{fast_node.url}/status", headers={"Accept": "text/html"})
    assert page.headers["content-type"].startswith("text/html")
    assert "Delivering" in page.text and "no redundancy" in page.text
    body = (await http.get(f"{fast_node.url}/status", headers={"Accept": "application/json"})).json()
    assert body["ready"] is True and body["devices"]["sse"] == 1 and body["pending_deliveries"] == 0
    hour = body["measured"]["hour"]["sse"]
    assert hour["probes"] >= 1 and hour["availability"] == 1.0 and hour["latency_p99_s"] < 1.0
    assert body["canary"]["channels"]["sse"]["last_latency_s"] < 1.0


async def test_status_command_once_json_and_text(fast_node: Node, http: httpx.AsyncClient) -> None:
    await Readyz(fast_node.url).until(http, ready=True, within_s=GREEN_WITHIN_S)
    runner = CliRunner()
    # The command is synchronous; run it off the loop that serves the node.
    as_json = await asyncio.to_thread(runner.invoke, cli, ["status", "--url", fast_node.url, "--once", "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output.splitlines()[0])["node"] == fast_node.settings.node_name
    text = await asyncio.to_thread(
        runner.invoke, cli, ["status", "--url", fast_node.url, "--url", "http://127.0.0.1:9", "--once"]
    )
    assert text.exit_code == 1  # one node unreachable
    assert f"{fast_node.settings.node_name}  {fast_node.url}  READY" in text.output
    assert "NOT READY" in text.output and "unreachable" in text.output
    assert "canary: sse" in text.output and "no redundancy" in text.output


async def test_prober_memory_stays_bounded(tmp_path: Path, nats_server: NatsServer, http: httpx.AsyncClient) -> None:
    """Probes every 0.1 s expiring after 1 s: the follower and the prober keep only a few."""
    running = await start_node(fast_settings(tmp_path, nats_server, probe_interval_s=0.1, probe_expires_s=1.0))
    node = running[0]
    try:
        prober = node.services.prober
        assert prober is not None
        async with asyncio.timeout(10):
            while prober.channels.get("sse") is None or prober.channels["sse"].delivered < 30:
                await asyncio.sleep(0.1)
        pipeline = node.services.pipeline
        # CAP times have whole seconds and pruning runs once a second: about 3 s of probes
        # (30) are active at most, however long the node runs.
        sizes = []
        for _ in range(3):
            sizes.append(max(len(pipeline.index.active), len(pipeline.fanout.offered), len(pipeline.index.by_id)))
            assert prober.pending <= 5
            await asyncio.sleep(1.0)
        assert max(sizes) <= 40, sizes
    finally:
        await stop_node(*running)

"""A restart reads only what can still matter: never the expired history behind it."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import pytest

from tests.e2e.conftest import node_settings, start_node, stop_node
from tests.samples import alert_xml
from tests.waiting import until
from tocsin.cap.parse import parse_xml
from tocsin.cap.render import to_xml
from tocsin.cluster.nats_server import NatsServer
from tocsin.pipeline import handoff
from tocsin.store.base import AlertId, Envelope
from tocsin.store.jetstream import JetStreamStore, _headers, connect, subject_for

HISTORY = 100_000
# About 1.3 KB a message: the history needs more than the tests' usual stream limit.
BYTES = 1024**3


async def _preload(server: NatsServer, stream: str, data_dir: Path) -> Envelope:
    """HISTORY expired alerts, then one active one, straight into the stream as accept
    would store them (a server without sync_always, so that this takes seconds)."""
    settings = node_settings(data_dir, server, stream=stream, stream_max_bytes=BYTES)
    nc = await connect(settings, [server.client_url], name="preload")
    try:
        store = JetStreamStore(nc, settings)
        await store.ensure()
        now = datetime.now(UTC)
        alert = parse_xml(alert_xml(identifier="FR-OLD", sent=now - timedelta(days=3), expires_in_s=3600))
        payload = to_xml(alert)
        old = Envelope(alert_id=AlertId("0" * 32), payload=payload, sig="s", kid="k", issuer="admin", node="n",
                       accepted_at=now - timedelta(days=3), expires_at=now - timedelta(days=2),
                       retain_until=now + timedelta(days=5))
        for n in range(HISTORY):
            expired = replace(old, alert_id=AlertId(f"{n:032x}"))
            await nc.publish(subject_for(stream, expired.alert_id), payload, headers=_headers(expired))
            if n % 10_000 == 0:
                await nc.flush()
        live = parse_xml(alert_xml(identifier="FR-ACTIVE", expires_in_s=3600))
        active = replace(old, alert_id=AlertId("f" * 32), payload=to_xml(live), accepted_at=now,
                         expires_at=live.expires, retain_until=now + timedelta(days=8))
        await nc.publish(subject_for(stream, active.alert_id), active.payload, headers=_headers(active))
        await nc.flush()
        async with asyncio.timeout(120):
            while await store.last_seq() < HISTORY + 1:
                await asyncio.sleep(0.2)
        return active
    finally:
        await nc.close()


async def _time_to_caught_up(settings: Any, start_s: float = 20.0) -> tuple[float, Any]:
    started = time.monotonic()
    running = await start_node(settings, start_s=start_s)
    return time.monotonic() - started, running


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_restart_with_100000_expired_alerts_in_history_reads_none_of_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_dir = tmp_path / "nats"
    loader = NatsServer(store_dir=store_dir, name="history", sync_always=False)
    await loader.start()
    try:
        active = await _preload(loader, "HISTORY", tmp_path / "preload")
    finally:
        await loader.stop()
    server = NatsServer(store_dir=store_dir, name="history")  # sync_interval: always again
    await server.start()
    parsed: list[bytes] = []
    real_parse = handoff.parse_stored

    def counting_parse(payload: bytes) -> Any:
        parsed.append(payload)
        return real_parse(payload)

    monkeypatch.setattr(handoff, "parse_stored", counting_parse)
    try:
        settings = node_settings(tmp_path / "node", server, stream="HISTORY", stream_max_bytes=BYTES)
        # First start, no recorded position: every message is read, but an expired one only
        # by its header: one alert parsed, the active one.
        first_s, running = await _time_to_caught_up(settings, start_s=120.0)  # 100,000 headers read
        node = running[0]
        try:
            assert list(node.services.pipeline.index.by_id) == [active.alert_id]
            assert len(parsed) == 1
            position = settings.data_dir / "follower-position.json"
            await until(lambda: position.exists() and json.loads(position.read_text())["last_seq"] == HISTORY + 1,
                        timeout_s=10)
        finally:
            await stop_node(*running)
        # A restart follows on from the recorded position: it reads back the active alert
        # by seq and none of the history.
        parsed.clear()
        restart_s, running = await _time_to_caught_up(settings)
        node = running[0]
        try:
            checkpoint = node.services.pipeline.checkpoint
            assert checkpoint is not None and checkpoint.restored_from == HISTORY + 1
            assert list(node.services.pipeline.index.by_id) == [active.alert_id]
            assert len(parsed) == 1
        finally:
            await stop_node(*running)
        # The same restart on a stream without history, same server, same run.
        fresh = node_settings(tmp_path / "fresh", server, stream="NO_HISTORY")
        _, running = await _time_to_caught_up(fresh)
        await stop_node(*running)
        fresh_s, running = await _time_to_caught_up(fresh)
        await stop_node(*running)
        print(f"first start over {HISTORY} expired: {first_s:.2f} s; restart: {restart_s:.2f} s; "
              f"restart without history: {fresh_s:.2f} s")
        # Not a benchmark: a coarse bound that reading the history (seconds) would break.
        assert restart_s < fresh_s + 1.0
    finally:
        await server.stop()

"""`tocsin status`: each channel's canary age, and with --alert an alert's delivery progress."""

from __future__ import annotations

import asyncio
import json

import httpx
from click.testing import CliRunner

from tests.e2e.conftest import ISSUER_TOKEN
from tests.health.conftest import GREEN_WITHIN_S, Readyz
from tests.samples import alert_xml
from tests.waiting import until_async
from tocsin.app import Node
from tocsin.cli.main import cli
from tocsin.delivery.model import Outcome

ISSUE = {"Content-Type": "application/cap+xml", "Authorization": f"Bearer {ISSUER_TOKEN}"}


async def test_status_shows_canary_ages_and_an_alerts_delivery_progress(fast_node: Node, http: httpx.AsyncClient) -> None:
    await Readyz(fast_node.url).until(http, ready=True, within_s=GREEN_WITHIN_S)
    answer = await http.post(f"{fast_node.url}/api/v1/alerts", content=alert_xml(), headers=ISSUE)
    alert_id = answer.json()["id"]
    progress = fast_node.services.progress
    progress.planned(alert_id, "webpush", 4)
    for _ in range(2):
        progress.finished(alert_id, "webpush", Outcome.SENT)
    progress.finished(alert_id, "webpush", Outcome.PERMANENT, "expired")

    async def flushed() -> bool:
        return await fast_node.services.store.progress.get(  # type: ignore[attr-defined]
            progress.key(alert_id)) is not None

    await until_async(flushed, timeout_s=5)
    runner = CliRunner()
    text = await asyncio.to_thread(runner.invoke, cli, ["status", "--url", fast_node.url, "--once", "--alert", alert_id])
    assert text.exit_code == 0, text.output
    ages = next(line for line in text.output.splitlines() if "canary ages:" in line)
    assert ages.strip().startswith("canary ages: sse ") and "LATE" not in ages
    line = next(line for line in text.output.splitlines() if line.strip().startswith("webpush"))
    assert "planned 4" in line and "queued 1" in line and "sent 2" in line and "expired 1" in line
    as_json = await asyncio.to_thread(runner.invoke, cli, ["status", "--url", fast_node.url, "--once", "--json",
                                                           "--alert", alert_id])
    lines = [json.loads(line) for line in as_json.output.splitlines()]
    assert lines[0]["node"] == fast_node.settings.node_name
    assert lines[-1]["alert"] == alert_id and lines[-1]["delivery"]["channels"]["webpush"] == {
        "planned": 4, "queued": 1, "sent": 2, "failed": {"expired": 1}, "receipts": 0}
    # An alert no node holds says so, and the nodes' lines are still there.
    missing = await asyncio.to_thread(runner.invoke, cli, ["status", "--url", fast_node.url, "--once",
                                                           "--alert", "f" * 32])
    assert f"alert {'f' * 32}: 404 alert.not-found" in missing.output and "READY" in missing.output

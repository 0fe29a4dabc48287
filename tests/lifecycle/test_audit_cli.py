"""`tocsin audit` against a real node: lines or JSON, filters, refusals with their code."""

from __future__ import annotations

import asyncio
import json

import httpx
from click.testing import CliRunner, Result

from tocsin.app import Node
from tocsin.cli.main import cli

from tests.e2e.conftest import ADMIN_TOKEN
from tests.lifecycle.conftest import as_, token_of
from tests.samples import alert_xml


async def invoke(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args))


async def test_tocsin_audit_prints_an_alerts_trail(node: Node, http: httpx.AsyncClient) -> None:
    alert_id = (await http.post("/api/v1/alerts", content=alert_xml(identifier="cli-trail"), headers=as_("alice"))).json()["id"]
    await http.post(f"/api/v1/alerts/{alert_id}/reject", json={"reason": "test"}, headers=as_("bob"))
    result = await invoke("audit", "--url", node.url, "--token", ADMIN_TOKEN, "--subject", alert_id, "--json")
    assert result.exit_code == 0, result.output
    entries = [json.loads(line) for line in result.output.splitlines()]
    assert [(e["action"], e["actor"]) for e in entries] == [("submitted", "user:alice"), ("rejected", "user:bob")]
    plain = await invoke("audit", "--url", node.url, "--token", token_of("alice"), "--subject", alert_id,
                         "--action", "rejected")
    assert plain.exit_code == 0 and "\trejected\t" in plain.output and "reason=test" in plain.output
    refused = await invoke("audit", "--url", node.url, "--token", token_of("alice"), "--org", "elsewhere")
    assert refused.exit_code == 2 and "audit.query-invalid" in refused.output

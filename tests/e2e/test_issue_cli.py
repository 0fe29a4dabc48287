"""`tocsin issue FILE` against a running node."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner, Result

from tests.datafiles import CAP_DATA
from tests.e2e.conftest import ISSUER_TOKEN
from tests.samples import alert_xml
from tocsin.app import Node
from tocsin.cli.main import cli


async def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env)


async def test_issue_prints_the_stored_alert(node: Node, tmp_path: Path) -> None:
    path = tmp_path / "alert.xml"
    path.write_bytes(alert_xml(identifier="FR-CLI-1"))
    result = await invoke("issue", str(path), env={"TOCSIN_URL": node.url, "TOCSIN_TOKEN": ISSUER_TOKEN})
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["identifier"] == "FR-CLI-1" and body["seq"] >= 1


async def test_refused_alert_exits_non_zero_with_the_problem(node: Node, tmp_path: Path) -> None:
    invalid = CAP_DATA / "invalid" / "bz-nms-missing-sender.xml"
    result = await invoke("issue", str(invalid), "--url", node.url, "--token", ISSUER_TOKEN)
    assert result.exit_code == 2
    problem = json.loads(result.output)
    assert problem["status"] == 422 and problem["code"].startswith("cap.")
    assert any("sender" in e["path"] or "sender" in e["detail"] for e in problem["errors"])


async def test_wrong_token_exits_non_zero(node: Node, tmp_path: Path) -> None:
    path = tmp_path / "alert.xml"
    path.write_bytes(alert_xml())
    result = await invoke("issue", str(path), "--url", node.url, "--token", "nope")
    assert result.exit_code == 2 and json.loads(result.output)["code"] == "auth.unknown-token"


async def test_unreachable_node_exits_with_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "alert.xml"
    path.write_bytes(alert_xml())
    result = await invoke("issue", str(path), "--url", "http://127.0.0.1:9", "--token", "t")
    assert result.exit_code == 3 and json.loads(result.output)["code"] == "client.unreachable"


async def test_preview_prints_the_reach_readably_and_issues_nothing(node: Node, tmp_path: Path) -> None:
    path = tmp_path / "alert.xml"
    path.write_bytes(alert_xml(identifier="FR-CLI-PREVIEW", headline="Fenêtres fermées"))
    before = await node.services.store.last_seq()
    env = {"TOCSIN_URL": node.url, "TOCSIN_TOKEN": ISSUER_TOKEN}
    result = await invoke("issue", "--preview", str(path), env=env)
    assert result.exit_code == 0, result.output
    assert "FR-CLI-PREVIEW (Actual Alert): nothing was issued" in result.output
    assert "Area: " in result.output and "km² in all" in result.output
    assert "Devices reached: " in result.output and "connected now to " in result.output
    assert "UCS-2 because of 'ê' U+00EA" in result.output
    assert "[actual-alert] this is an Actual alert" in result.output
    raw = await invoke("issue", "--preview", "--json", str(path), env=env)
    assert raw.exit_code == 0 and json.loads(raw.output)["published"] is False
    assert await node.services.store.last_seq() == before


async def test_a_refused_preview_exits_non_zero_with_the_problem(node: Node, tmp_path: Path) -> None:
    invalid = CAP_DATA / "invalid" / "bz-nms-missing-sender.xml"
    env = {"TOCSIN_URL": node.url, "TOCSIN_TOKEN": ISSUER_TOKEN}
    result = await invoke("issue", "--preview", str(invalid), env=env)
    assert result.exit_code == 2 and result.output.startswith("refused: cap.")
    assert "sender" in result.output
    raw = await invoke("issue", "--preview", "--json", str(invalid), env=env)
    assert raw.exit_code == 2 and json.loads(raw.output)["code"].startswith("cap.")

"""`tocsin pending|approve|reject|correct`: the two-person rule from a terminal."""

from __future__ import annotations

import json

import httpx

from tests.e2e.test_issue_cli import invoke
from tests.lifecycle.conftest import as_, token_of
from tests.samples import alert_xml
from tocsin.app import Node


async def test_an_author_submits_another_approves_and_corrects_from_the_shell(node: Node, http: httpx.AsyncClient) -> None:
    submitted = await http.post("/api/v1/alerts", content=alert_xml(identifier="cli-two-person"), headers=as_("alice"))
    assert submitted.status_code == 202, submitted.text
    alert_id = submitted.json()["id"]
    as_bob = {"TOCSIN_URL": node.url, "TOCSIN_TOKEN": token_of("bob")}
    as_alice = {**as_bob, "TOCSIN_TOKEN": token_of("alice")}

    listed = await invoke("pending", env=as_bob)
    assert listed.exit_code == 0 and any(line.startswith(alert_id) for line in listed.output.splitlines())
    own = await invoke("approve", alert_id, env=as_alice)  # its author: refused, exit 2
    assert own.exit_code == 2 and own.output.startswith("approval.self-approval")
    approved = await invoke("approve", alert_id, "--json", env=as_bob)
    assert approved.exit_code == 0, approved.output
    assert json.loads(approved.output)["id"] == alert_id
    assert (await http.get(f"/api/v1/alerts/{alert_id}")).json()["state"] == "active"
    again = await invoke("approve", alert_id, env=as_bob)
    assert again.exit_code == 2  # published once: nothing left to approve

    corrected = await invoke("correct", alert_id, "--json", env=as_alice)
    assert corrected.exit_code == 0, corrected.output
    assert json.loads(corrected.output)["msgType"] == "Cancel"


async def test_a_rejection_from_the_shell_needs_a_reason_and_is_never_published(
    node: Node, http: httpx.AsyncClient
) -> None:
    submitted = await http.post("/api/v1/alerts", content=alert_xml(identifier="cli-reject"), headers=as_("alice"))
    alert_id = submitted.json()["id"]
    env = {"TOCSIN_URL": node.url, "TOCSIN_TOKEN": token_of("bob")}
    assert (await invoke("reject", alert_id, env=env)).exit_code != 0  # --reason is required
    rejected = await invoke("reject", alert_id, "--reason", "wrong commune", "--json", env=env)
    assert rejected.exit_code == 0, rejected.output
    assert (await http.get(f"/api/v1/alerts/{alert_id}", headers=as_("alice"))).json()["state"] == "rejected"
    assert (await invoke("approve", alert_id, env=env)).exit_code == 2
    assert (await invoke("pending", "--state", "rejected", env=env)).output.count(alert_id) == 1

"""`tocsin issuers|users|tokens ...` against a running node."""

from __future__ import annotations

import json

import httpx

from tests.accounts.conftest import ADMIN_TOKEN, fresh, new_admin, post_alert
from tests.e2e.test_issue_cli import invoke
from tocsin.app import Node


async def test_an_admin_provisions_an_issuer_from_the_shell(node: Node, http: httpx.AsyncClient) -> None:
    env = {"TOCSIN_URL": node.url, "TOCSIN_TOKEN": ADMIN_TOKEN}
    org, user = fresh("cli-org-"), fresh("cli-user-")
    sender = f"alerts@{org}"
    added = await invoke("issuers", "add", org, "--sender", sender, "--rate", "30", "--json", env=env)
    assert added.exit_code == 0, added.output
    assert json.loads(added.output)["organisation"]["alerts_per_min"] == 30
    listed = await invoke("issuers", "list", env=env)
    assert listed.exit_code == 0 and any(line.startswith(org) for line in listed.output.splitlines())
    made = await invoke("users", "add", user, "--org", org, "--role", "author", env=env)
    assert made.exit_code == 0 and f"user:{user}" in made.output
    created = await invoke("tokens", "create", "--principal", f"user:{user}", "--json", env=env)
    assert created.exit_code == 0, created.output
    token = json.loads(created.output)
    assert (await post_alert(http, token["token"], sender)).status_code in (201, 202)
    tokens = await invoke("tokens", "list", "--principal", f"user:{user}", "--json", env=env)
    assert token["token"] not in tokens.output and json.loads(tokens.output)["tokens"][0]["id"] == token["id"]
    rotated = await invoke("tokens", "rotate", token["id"], "--json", env=env)
    assert rotated.exit_code == 0, rotated.output
    new = json.loads(rotated.output)["token"]
    old = await post_alert(http, token["token"], sender)
    assert old.status_code == 401 and old.json()["code"] == "auth.token-revoked"
    assert (await post_alert(http, new, sender)).status_code in (201, 202)
    revoked = await invoke("tokens", "revoke", json.loads(rotated.output)["id"], env=env)
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    disabled = await invoke("users", "disable", user, env=env)
    assert disabled.exit_code == 0 and "disabled" in disabled.output


async def test_a_policy_change_from_the_shell_takes_two_admins(node: Node) -> None:
    env = {"TOCSIN_URL": node.url, "TOCSIN_TOKEN": ADMIN_TOKEN}
    org = fresh("cli-org-")
    assert (await invoke("issuers", "add", org, "--sender", f"a@{org}", env=env)).exit_code == 0
    proposed = await invoke("issuers", "set", org, "--approval", "above:Extreme", env=env)
    assert proposed.exit_code == 0 and "accounts.policy-needs-second-admin" in proposed.output
    same = await invoke("issuers", "confirm-policy", org, env=env)
    assert same.exit_code == 2 and same.output.startswith("accounts.policy-needs-second-admin")
    second = {**env, "TOCSIN_TOKEN": await new_admin_token(node)}
    confirmed = await invoke("issuers", "confirm-policy", org, "--json", env=second)
    assert confirmed.exit_code == 0, confirmed.output
    assert json.loads(confirmed.output)["organisation"]["approval"] == {"mode": "above", "severity": "Extreme"}


async def test_a_refusal_exits_non_zero_with_its_code(node: Node) -> None:
    env = {"TOCSIN_URL": node.url, "TOCSIN_TOKEN": "tck_not-a-token"}
    refused = await invoke("issuers", "list", env=env)
    assert refused.exit_code == 2 and refused.output.startswith("auth.unknown-token")
    bad = await invoke("issuers", "add", "bad name", "--json", env={**env, "TOCSIN_TOKEN": ADMIN_TOKEN})
    assert bad.exit_code == 2 and json.loads(bad.output)["code"] == "accounts.invalid"
    unreachable = await invoke("tokens", "list", "--url", "http://127.0.0.1:9", env=env)
    assert unreachable.exit_code == 3 and "client.unreachable" in unreachable.output


async def new_admin_token(node: Node) -> str:
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
        return await new_admin(http)

"""The declarative accounts file: applied at every start, idempotent, audited, refused whole."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from tests.accounts.conftest import ADMIN_TOKEN, bearer, fresh, post_alert
from tests.e2e.conftest import node_settings, start_node, stop_node
from tests.samples import PARIS_BOX
from tocsin.accounts.file import apply_accounts_file
from tocsin.app import open_node
from tocsin.cluster.nats_server import NatsServer
from tocsin.settings import SettingsError
from tocsin.store.audit import Action, AuditQuery

LYON_BOX = "45.70,4.80 45.70,4.90 45.80,4.90 45.80,4.80 45.70,4.80"

# What the file does (the alerts its accounts publish are audited too, as theirs).
ACCOUNT_ACTIONS = (Action.ACCOUNT_CREATED, Action.ACCOUNT_CHANGED, Action.ACCOUNT_REVOKED,
                   Action.TOKEN_CREATED, Action.TOKEN_REVOKED, Action.POLICY_CHANGED)


def accounts_file(tmp_path: Path, org: str, client_token: str, user_token: str, *, rate: int = 50) -> Path:
    (tmp_path / "user-token").write_text(user_token + "\n")
    (tmp_path / "org-token").write_text(f"{user_token}-org\n")
    path = tmp_path / "accounts.toml"
    path.write_text(f'''
[[issuers]]
name = "{org}"
senders = ["eew@{org}.example.org"]
statuses = ["Actual", "Exercise", "Test"]
approval = {{ mode = "none" }}
territory = {{ polygons = ["48.5,1.9 48.5,2.9 49.2,2.9 49.2,1.9 48.5,1.9"] }}
alerts_per_min = {rate}

[[issuers.clients]]
name = "feed-{org}"
roles = ["author"]
token_sha256 = "{hashlib.sha256(client_token.encode()).hexdigest()}"
expires = 2036-01-01T00:00:00Z

[[issuers.users]]
name = "admin-{org}"
roles = ["admin", "approver"]
token_file = "user-token"

[[issuers.tokens]]
token_file = "org-token"
roles = ["author"]
''', encoding="utf-8")
    return path


async def test_the_file_declares_working_accounts_and_a_restart_changes_nothing(
    tmp_path: Path, nats_server: NatsServer,
) -> None:
    org = fresh("file-org-")
    client, user = f"tck_{fresh('c-')}", f"tck_{fresh('u-')}"
    path = accounts_file(tmp_path, org, client, user)
    settings = node_settings(tmp_path / "node", nats_server, accounts_file=str(path))
    running = await start_node(settings)
    node = running[0]
    try:
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
            sender = f"eew@{org}.example.org"
            assert (await post_alert(http, client, sender, polygon=PARIS_BOX)).status_code == 201  # approval none
            outside = await post_alert(http, client, sender, polygon=LYON_BOX)
            assert outside.status_code == 403 and outside.json()["code"] == "policy.outside-territory"
            shown = await http.get(f"/api/v1/admin/orgs/{org}", headers=bearer(user))  # its own admin
            assert shown.status_code == 200 and shown.json()["organisation"]["alerts_per_min"] == 50
            tokens = (await http.get("/api/v1/admin/tokens", params={"org": org}, headers=bearer(ADMIN_TOKEN))).json()
            assert {t["principal"] for t in tokens["tokens"]} == {f"client:feed-{org}", f"user:admin-{org}", ""}
            own = await post_alert(http, f"{user}-org", sender, polygon=PARIS_BOX)  # the organisation's own token
            assert own.status_code == 201, own.text
            assert any(t["expires"] and t["expires"].startswith("2036-01-01") for t in tokens["tokens"])
        audit = node.services.store.audit
        entries = (await audit.page(AuditQuery(org=org, limit=200, actions=ACCOUNT_ACTIONS))).entries
        assert entries and all(e.actor == f"file:{path}" for e in entries)
        assert len(entries) == 6  # the organisation, two principals, three tokens
        # The same file again (a restart applies it): nothing is written or audited.
        assert await apply_accounts_file(node.services.store, path) == 0
        assert len((await audit.page(AuditQuery(org=org, limit=200, actions=ACCOUNT_ACTIONS))).entries) == 6
        # A changed rate is one write, audited as the file's.
        accounts_file(tmp_path, org, client, user, rate=70)
        assert await apply_accounts_file(node.services.store, path) == 1
        changed = (await audit.page(AuditQuery(org=org, limit=200, actions=ACCOUNT_ACTIONS))).entries[6:]
        assert [(e.action.value, e.actor) for e in changed] == [("account-changed", f"file:{path}")]
    finally:
        await stop_node(*running)
    running = await start_node(settings)  # a real restart with the same file
    try:
        assert len((await running[0].services.store.audit.page(AuditQuery(org=org, limit=200, actions=ACCOUNT_ACTIONS))).entries) == 7
    finally:
        await stop_node(*running)


async def test_the_file_never_revives_a_revoked_token(tmp_path: Path, nats_server: NatsServer) -> None:
    org = fresh("file-org-")
    client, user = f"tck_{fresh('c-')}", f"tck_{fresh('u-')}"
    path = accounts_file(tmp_path, org, client, user)
    running = await start_node(node_settings(tmp_path / "node", nats_server, accounts_file=str(path)))
    try:
        async with httpx.AsyncClient(base_url=running[0].url, timeout=10) as http:
            listed = (await http.get("/api/v1/admin/tokens", params={"principal": f"client:feed-{org}"},
                                     headers=bearer(ADMIN_TOKEN))).json()["tokens"]
            revoked = await http.post(f"/api/v1/admin/tokens/{listed[0]['id']}/revoke", headers=bearer(ADMIN_TOKEN))
            assert revoked.status_code == 200
            assert await apply_accounts_file(running[0].services.store, path) == 0
            refused = await post_alert(http, client, f"eew@{org}.example.org")
            assert refused.status_code == 401 and refused.json()["code"] == "auth.token-revoked"
    finally:
        await stop_node(*running)


@pytest.mark.parametrize(("text", "named"), [
    ('[[issuers]]\nname = "x y"\n', "issuers[0]"),
    ('[[issuers]]\nname = "ok-org"\nsenders = "a@b"\n', "senders"),
    ('[[issuers]]\nname = "ok-org"\napproval = { mode = "never" }\n', "approval"),
    ('[[issuers]]\nname = "ok-org"\nterritory = { polygons = ["1,2"] }\n', "territory"),
    ('[[issuers]]\nname = "ok-org"\n[[issuers.users]]\nname = "bob"\nroles = ["king"]\ntoken_sha256 = "' + "a" * 64 + '"\n',
     "issuers[0].users[0] (bob): roles"),
    ('[[issuers]]\nname = "ok-org"\n[[issuers.clients]]\nname = "feed"\ntoken_file = "missing"\n',
     "issuers[0].clients[0] (feed): token_file"),
    ('[[issuers]]\nname = "ok-org"\n[[issuers.tokens]]\ntoken_sha256 = "abc"\n', "issuers[0].tokens[0]"),
    ('[[issuers]]\nname = "ok-org"\ncolour = "red"\n', "colour"),
    ('[[issuers]]\nname = "ok-org"\n[[issuers]]\nname = "ok-org"\n', "declared twice"),
    ("issuers = [", "accounts.toml"),
])
async def test_an_invalid_file_stops_the_start_naming_the_entry(
    tmp_path: Path, nats_server: NatsServer, text: str, named: str,
) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text(text, encoding="utf-8")
    settings = node_settings(tmp_path / "node", nats_server, accounts_file=str(path))
    with pytest.raises(SettingsError) as refused:
        async with open_node(settings):
            pass
    assert named in str(refused.value) and "TOCSIN_ACCOUNTS_FILE" in str(refused.value)

"""The admin API on a real node: roles, tokens, disabling, two-admin policy, audit, bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from tests.accounts.conftest import ADMIN_TOKEN, Org, bearer, fresh, new_admin, new_org, ok, post_alert
from tocsin.app import Node
from tocsin.store.audit import Action, AuditQuery


async def test_admin_routes_need_a_token_and_the_admin_role(http: httpx.AsyncClient, org: Org) -> None:
    missing = await http.get("/api/v1/admin/orgs")
    assert missing.status_code == 401 and missing.json()["code"] == "auth.missing-token"
    for method, path in (("GET", "/api/v1/admin/orgs"), ("POST", "/api/v1/admin/tokens"),
                         ("GET", f"/api/v1/admin/orgs/{org.name}")):
        refused = await http.request(method, path, headers=bearer(org.author), json={})
        assert refused.status_code == 403, (path, refused.text)
        assert refused.json()["code"] == "auth.role-required"
        assert refused.headers["content-type"].startswith("application/problem+json")


async def test_a_token_made_by_an_admin_authenticates_its_user_until_revoked(http: httpx.AsyncClient, org: Org) -> None:
    assert (await post_alert(http, org.author, org.sender)).status_code == 201
    listed = await ok(await http.get("/api/v1/admin/tokens", params={"principal": org.user},
                                     headers=bearer(ADMIN_TOKEN)))
    (token,) = listed["tokens"]
    assert "token" not in token and "digest" not in token and org.author not in str(listed)
    assert token["revoked"] is None and token["principal"] == org.user and token["org"] == org.name
    revoked = await ok(await http.post(f"/api/v1/admin/tokens/{token['id']}/revoke", headers=bearer(ADMIN_TOKEN)))
    assert revoked["token"]["revoked"] is not None
    refused = await post_alert(http, org.author, org.sender)
    assert refused.status_code == 401 and refused.json()["code"] == "auth.token-revoked"


async def test_another_organisations_sender_is_refused(http: httpx.AsyncClient, org: Org) -> None:
    other = await new_org(http, automated=False)
    refused = await post_alert(http, org.author, other.sender)
    assert refused.status_code == 403 and refused.json()["code"] == "policy.sender-not-allowed"


async def test_an_expired_token_is_refused(http: httpx.AsyncClient, org: Org) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    made = await ok(await http.post("/api/v1/admin/tokens", json={"principal": org.user, "expires": past},
                                    headers=bearer(ADMIN_TOKEN)), 201)
    refused = await post_alert(http, made["token"], org.sender)
    assert refused.status_code == 401 and refused.json()["code"] == "auth.token-expired"
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    later = await ok(await http.post("/api/v1/admin/tokens", json={"principal": org.user, "expires": future},
                                     headers=bearer(ADMIN_TOKEN)), 201)
    assert (await post_alert(http, later["token"], org.sender)).status_code == 201


async def test_a_disabled_user_or_organisation_is_refused(http: httpx.AsyncClient) -> None:
    org = await new_org(http)
    name = org.user.partition(":")[2]
    await ok(await http.post(f"/api/v1/admin/users/{name}/disable", headers=bearer(ADMIN_TOKEN)))
    refused = await post_alert(http, org.author, org.sender)
    assert refused.status_code == 401 and refused.json()["code"] == "auth.account-disabled"
    await ok(await http.patch(f"/api/v1/admin/users/{name}", json={"disabled": False}, headers=bearer(ADMIN_TOKEN)))
    assert (await post_alert(http, org.author, org.sender)).status_code == 201
    await ok(await http.post(f"/api/v1/admin/orgs/{org.name}/disable", headers=bearer(ADMIN_TOKEN)))
    refused = await post_alert(http, org.author, org.sender)
    assert refused.status_code == 401 and refused.json()["code"] == "auth.account-disabled"


async def test_an_approval_policy_change_takes_two_admins(http: httpx.AsyncClient, node: Node) -> None:
    org = await new_org(http, automated=False)
    first, second = await new_admin(http), await new_admin(http)
    proposed = await http.patch(f"/api/v1/admin/orgs/{org.name}", json={"approval": {"mode": "none"}},
                                headers=bearer(first))
    assert proposed.status_code == 202
    body = proposed.json()
    assert body["code"] == "accounts.policy-needs-second-admin" and body["state"] == "proposed"
    assert body["organisation"]["approval"]["mode"] == "always"
    assert body["organisation"]["proposed"]["approval"]["mode"] == "none"
    same = await http.post(f"/api/v1/admin/orgs/{org.name}/policy/confirm", json={}, headers=bearer(first))
    assert same.status_code == 409 and same.json()["code"] == "accounts.policy-needs-second-admin"
    wrong = await http.post(f"/api/v1/admin/orgs/{org.name}/policy/confirm",
                            json={"approval": {"mode": "above", "severity": "Extreme"}}, headers=bearer(second))
    assert wrong.status_code == 409 and wrong.json()["code"] == "accounts.no-proposal"
    shown = await ok(await http.get(f"/api/v1/admin/orgs/{org.name}", headers=bearer(ADMIN_TOKEN)))
    assert shown["organisation"]["approval"]["mode"] == "always"
    confirmed = await ok(await http.post(f"/api/v1/admin/orgs/{org.name}/policy/confirm",
                                         json={"approval": {"mode": "none"}}, headers=bearer(second)))
    assert confirmed["organisation"]["approval"]["mode"] == "none" and confirmed["organisation"]["proposed"] is None
    again = await http.post(f"/api/v1/admin/orgs/{org.name}/policy/confirm", json={}, headers=bearer(ADMIN_TOKEN))
    assert again.status_code == 409 and again.json()["code"] == "accounts.no-proposal"
    page = await node.services.store.audit.page(AuditQuery(subject=org.name,
                                                           actions=(Action.POLICY_PROPOSED, Action.POLICY_CHANGED)))
    actions = [(e.action, e.org, e.source) for e in page.entries]
    assert actions == [(Action.POLICY_PROPOSED, org.name, "127.0.0.1"), (Action.POLICY_CHANGED, org.name, "127.0.0.1")]
    assert page.entries[0].actor != page.entries[1].actor
    assert page.entries[1].detail["proposed_by"] == page.entries[0].actor


async def test_a_new_organisation_with_a_lifted_policy_waits_for_a_second_admin(http: httpx.AsyncClient) -> None:
    name = fresh("org-")
    created = await http.post("/api/v1/admin/orgs", json={"name": name, "senders": ["a@b"], "approval": {"mode": "none"}},
                              headers=bearer(ADMIN_TOKEN))
    assert created.status_code == 201 and created.json()["state"] == "proposed"
    assert created.json()["organisation"]["approval"]["mode"] == "always"


async def test_every_account_action_is_audited_with_actor_org_and_source(http: httpx.AsyncClient, node: Node) -> None:
    org = await new_org(http, automated=False)
    listed = await ok(await http.get("/api/v1/admin/tokens", params={"principal": org.user}, headers=bearer(ADMIN_TOKEN)))
    token_id = listed["tokens"][0]["id"]
    await ok(await http.patch(f"/api/v1/admin/orgs/{org.name}", json={"alerts_per_min": 30}, headers=bearer(ADMIN_TOKEN)))
    await ok(await http.post(f"/api/v1/admin/tokens/{token_id}/revoke", headers=bearer(ADMIN_TOKEN)))
    audit = node.services.store.audit
    expected = [(org.name, Action.ACCOUNT_CREATED), (org.name, Action.ACCOUNT_CHANGED),
                (org.user, Action.ACCOUNT_CREATED), (token_id, Action.TOKEN_CREATED), (token_id, Action.TOKEN_REVOKED)]
    for subject, action in expected:
        page = await audit.page(AuditQuery(subject=subject, actions=(action,)))
        assert len(page.entries) == 1, (subject, action)
        entry = page.entries[0]
        assert (entry.actor, entry.org, entry.source) == ("user:admin", org.name, "127.0.0.1"), entry


async def test_invalid_bodies_name_the_field(http: httpx.AsyncClient, node: Node, org: Org) -> None:
    admin = bearer(ADMIN_TOKEN)
    cases = [
        ({"name": fresh("o-"), "senders": "a@b"}, "senders"),
        ({"name": fresh("o-"), "statuses": ["Draft"]}, "statuses"),
        ({"name": fresh("o-"), "colour": "red"}, "colour"),
        ({"name": "bad name"}, "name"),
        ({"name": fresh("o-"), "territory": {"polygons": ["1,2 3,4"]}}, "territory"),
        ({"name": fresh("o-"), "territory": {"circles": ["45,5 1"] * 201}}, "territory"),
        ({"name": fresh("o-"), "approval": {"mode": "sometimes"}}, "approval"),
        ({"name": fresh("o-"), "alerts_per_min": -1}, "alerts_per_min"),
    ]
    for body, field in cases:
        refused = await http.post("/api/v1/admin/orgs", json=body, headers=admin)
        assert refused.status_code == 422, (body, refused.text)
        problem = refused.json()
        assert problem["code"] == "accounts.invalid" and problem["errors"][0]["path"] == field, problem
    not_json = await http.post("/api/v1/admin/orgs", content=b"{nope", headers=admin)
    assert not_json.status_code == 422 and not_json.json()["errors"][0]["path"] == "body"
    big = b'{"name": "' + b"x" * (node.settings.max_admin_body_bytes + 1) + b'"}'
    assert (await http.post("/api/v1/admin/orgs", content=big, headers=admin)).status_code == 413
    exists = await http.post("/api/v1/admin/orgs", json={"name": org.name}, headers=admin)
    assert exists.status_code == 409 and exists.json()["code"] == "accounts.exists"
    unknown = await http.get(f"/api/v1/admin/orgs/{fresh('none-')}", headers=admin)
    assert unknown.status_code == 404 and unknown.json()["code"] == "accounts.unknown"
    roles = await http.post("/api/v1/admin/users", json={"name": fresh("u-"), "org": org.name, "roles": ["boss"]},
                            headers=admin)
    assert roles.status_code == 422 and roles.json()["errors"][0]["path"] == "roles"
    expiry = await http.post("/api/v1/admin/tokens", json={"principal": org.user, "expires": "soon"}, headers=admin)
    assert expiry.status_code == 422 and expiry.json()["errors"][0]["path"] == "expires"


async def test_an_organisation_admin_manages_only_its_own_organisation(http: httpx.AsyncClient) -> None:
    mine, other = await new_org(http, automated=False), await new_org(http, automated=False)
    boss = fresh("boss-")
    await ok(await http.post("/api/v1/admin/users", json={"name": boss, "org": mine.name, "roles": ["admin"]},
                             headers=bearer(ADMIN_TOKEN)), 201)
    token = (await ok(await http.post("/api/v1/admin/tokens", json={"principal": f"user:{boss}"},
                                      headers=bearer(ADMIN_TOKEN)), 201))["token"]
    listed = await ok(await http.get("/api/v1/admin/orgs", headers=bearer(token)))
    assert [o["name"] for o in listed["organisations"]] == [mine.name]
    made = await http.post("/api/v1/admin/tokens", json={"principal": mine.user}, headers=bearer(token))
    assert made.status_code == 201
    for refused in (
        await http.post("/api/v1/admin/tokens", json={"principal": other.user}, headers=bearer(token)),
        await http.get(f"/api/v1/admin/orgs/{other.name}", headers=bearer(token)),
        await http.post("/api/v1/admin/orgs", json={"name": fresh("o-")}, headers=bearer(token)),
        await http.post("/api/v1/admin/users", json={"name": fresh("u-"), "org": other.name}, headers=bearer(token)),
    ):
        assert refused.status_code == 403 and refused.json()["code"] == "auth.role-required", refused.text


async def test_an_organisation_admin_cannot_widen_its_own_rights(http: httpx.AsyncClient) -> None:
    mine = await new_org(http, automated=False)
    boss = fresh("boss-")
    await ok(await http.post("/api/v1/admin/users", json={"name": boss, "org": mine.name, "roles": ["admin"]},
                             headers=bearer(ADMIN_TOKEN)), 201)
    token = (await ok(await http.post("/api/v1/admin/tokens", json={"principal": f"user:{boss}"},
                                      headers=bearer(ADMIN_TOKEN)), 201))["token"]
    for body in ({"senders": ["*"]}, {"territory": None}, {"alerts_per_min": 0}, {"disabled": False}):
        refused = await http.patch(f"/api/v1/admin/orgs/{mine.name}", json=body, headers=bearer(token))
        assert refused.status_code == 403 and refused.json()["code"] == "auth.role-required", body
    proposed = await http.patch(f"/api/v1/admin/orgs/{mine.name}", json={"approval": {"mode": "none"}},
                                headers=bearer(token))
    assert proposed.status_code == 202


async def test_the_api_cannot_lock_the_deployment_out(http: httpx.AsyncClient) -> None:
    admin = bearer(ADMIN_TOKEN)
    for method, path, body in (
        ("PATCH", "/api/v1/admin/orgs/admin", {"disabled": True}),
        ("PATCH", "/api/v1/admin/orgs/admin", {"alerts_per_min": 1}),
        ("POST", "/api/v1/admin/orgs/admin/disable", None),
        ("PATCH", "/api/v1/admin/users/admin", {"roles": ["author"]}),
        ("POST", "/api/v1/admin/users/admin/disable", None),
    ):
        refused = await http.request(method, path, json=body, headers=admin)
        assert refused.status_code == 422 and refused.json()["code"] == "accounts.invalid", (path, refused.text)
    assert (await http.get("/api/v1/admin/orgs", headers=admin)).status_code == 200


async def test_a_name_no_bucket_can_hold_is_unknown_at_once(http: httpx.AsyncClient) -> None:
    # An empty token inside a key ("org..0"): the bucket server never answers a read of it, so
    # before the key check each request below waited out the read retries and said 503.
    for name in (".0", "a..b", "%2E%2E", "0."):
        answer = await http.post(f"/api/v1/admin/orgs/{name}/disable", headers=bearer(ADMIN_TOKEN), timeout=3)
        assert answer.status_code == 404 and answer.json()["code"] == "accounts.unknown", (name, answer.text)
        answer = await http.get(f"/api/v1/admin/users/{name}", headers=bearer(ADMIN_TOKEN), timeout=3)
        assert answer.status_code == 404, (name, answer.text)

"""Account records decode fail-closed: hand-written hostile records never widen rights.

These tests write the bucket directly on purpose (what a bad migration, a bug or an
attacker with bucket access could leave there); provisioning goes through the API.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.accounts.conftest import bearer, fresh, post_alert
from tests.samples import PARIS_BOX
from tests.waiting import until
from tocsin.accounts.model import org_key, principal_key, token_digest, token_key
from tocsin.app import Node

NOW = datetime.now(UTC).isoformat()


def good_org(name: str, sender: str) -> dict[str, Any]:
    return {"name": name, "senders": [sender], "statuses": ["Actual", "Exercise", "Test"],
            "severities": ["Extreme", "Severe", "Moderate", "Minor", "Unknown"], "approval": {"mode": "none"},
            "territory": None, "limits": {}, "alerts_per_min": 0, "delegated": [], "admin": False,
            "probe": False, "state": "active", "created": NOW}


def good_token(digest: str, org: str, principal: str) -> dict[str, Any]:
    return {"digest": digest, "org": org, "principal": principal, "roles": [], "created": NOW,
            "expires": None, "revoked": None, "label": ""}


async def plant(node: Node, *, org: dict[str, Any] | None = None, principal: dict[str, Any] | None = None,
                token: dict[str, Any] | None = None) -> tuple[str, str]:
    """Write one organisation, user and token, each changed by the given fields; returns
    (the token, the sender)."""
    name, user = fresh("hostile-"), f"user:{fresh('h-')}"
    secret = f"tck_{fresh('secret-')}"
    digest = token_digest(secret)
    sender = f"s@{name}"
    records = node.services.store.accounts
    await records.put(org_key(name), {**good_org(name, sender), **(org or {})})
    await records.put(principal_key(user), {"id": user, "org": name, "roles": ["author"], "state": "active",
                                            "created": NOW, **(principal or {})})
    await records.put(token_key(digest), {**good_token(digest, name, user), **(token or {})})
    return secret, sender


async def test_the_good_record_works(node: Node, http: httpx.AsyncClient) -> None:
    secret, sender = await plant(node)
    assert (await post_alert(http, secret, sender)).status_code == 201


@pytest.mark.parametrize(("change", "code"), [
    ({"token": {"revoked": "yes"}}, "auth.token-revoked"),
    ({"token": {"revoked": False}}, "auth.token-revoked"),
    ({"token": {"expires": "never"}}, "auth.token-expired"),
    ({"token": {"expires": 4102444800}}, "auth.token-expired"),
    ({"token": {"principal": None}}, "auth.unknown-token"),
    ({"token": {"digest": "0" * 64}}, "auth.unknown-token"),
    ({"org": {"state": "enabled"}}, "auth.account-disabled"),
    ({"org": {"state": None}}, "auth.account-disabled"),
    ({"principal": {"state": True}}, "auth.account-disabled"),
    ({"principal": {"org": "another-org"}}, "auth.unknown-token"),
    ({"principal": {"id": "user:someone-else"}}, "auth.unknown-token"),
    ({"org": {"name": "admin"}}, "auth.unknown-token"),
    ({"org": {"senders": "*"}}, "policy.sender-not-allowed"),
    ({"org": {"senders": ["*", 1]}}, "policy.sender-not-allowed"),
    ({"org": {"statuses": "Actual"}}, "policy.status-not-allowed"),
    ({"org": {"severities": None}}, "policy.severity-not-allowed"),
    ({"org": {"territory": "anywhere"}}, "policy.outside-territory"),
    ({"org": {"territory": {"polygons": ["not a polygon"]}}}, "policy.outside-territory"),
    ({"org": {"territory": {"polygons": [], "everywhere": True}}}, "policy.outside-territory"),
])
async def test_a_malformed_field_refuses(node: Node, http: httpx.AsyncClient, change: dict[str, Any], code: str) -> None:
    secret, sender = await plant(node, **change)
    refused = await post_alert(http, secret, sender, polygon=PARIS_BOX)
    assert refused.json()["code"] == code, refused.text


async def test_a_missing_field_refuses(node: Node, http: httpx.AsyncClient) -> None:
    for kind, field, code in (("token", "revoked", "auth.token-revoked"), ("token", "expires", "auth.token-expired"),
                              ("org", "state", "auth.account-disabled"), ("principal", "state", "auth.account-disabled"),
                              ("org", "senders", "policy.sender-not-allowed"),
                              ("org", "territory", "policy.outside-territory")):
        secret, sender = await plant(node)
        records = node.services.store.accounts
        key = {"token": token_key(token_digest(secret))}.get(kind)
        if key is None:
            found = await records.get(token_key(token_digest(secret)))
            assert found is not None
            key = org_key(found["org"]) if kind == "org" else principal_key(found["principal"])
        record = await records.get(key)
        assert record is not None
        del record[field]
        await records.put(key, record)
        await _mirrored(node, key, record)
        refused = await post_alert(http, secret, sender)
        assert refused.json()["code"] == code, (kind, field, refused.text)


async def test_unknown_fields_and_roles_grant_nothing(node: Node, http: httpx.AsyncClient) -> None:
    secret, sender = await plant(node, org={"admin": "true", "superuser": True},
                                 principal={"roles": ["author", "Admin", "root"], "admin": True})
    refused = await http.get("/api/v1/admin/orgs", headers=bearer(secret))
    assert refused.status_code == 403 and refused.json()["code"] == "auth.role-required"
    other = await post_alert(http, secret, "someone-else@example.org")
    assert other.status_code == 403 and other.json()["code"] == "policy.sender-not-allowed"


async def test_an_unreadable_rate_falls_back_to_the_default(node: Node, http: httpx.AsyncClient) -> None:
    secret, sender = await plant(node, org={"alerts_per_min": "1000000000"})
    issuer = await node.services.accounts.resolve(token_digest(secret), datetime.now(UTC))
    assert issuer.alerts_per_min == 600


async def _mirrored(node: Node, key: str, record: dict[str, Any]) -> None:
    assert await node.services.accounts.mirror.seen(key, record)


async def test_a_record_overwritten_with_no_json_grants_nothing(node: Node, http: httpx.AsyncClient) -> None:
    # The mirror must not keep the readable version it replaced (an active token).
    secret, sender = await plant(node)
    assert (await post_alert(http, secret, sender)).status_code == 201
    key = token_key(token_digest(secret))
    await node.services.store.accounts.put_raw(key, b"{not json")  # type: ignore[attr-defined]
    await until(lambda: key not in node.services.accounts.mirror)
    refused = await post_alert(http, secret, sender)
    assert refused.status_code in (401, 403, 503), refused.text

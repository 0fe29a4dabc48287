"""Accounts through the admin API of real nodes on the session's nats-server.

Every node of the session shares one accounts bucket: each test makes organisations and
users of its own (unique names) and never revokes the shared admin token.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import unique_name
from tests.e2e.conftest import ADMIN_TOKEN, http, node  # noqa: F401 - fixtures
from tests.samples import alert_xml
from tocsin.app import Node

CAP = {"Content-Type": "application/cap+xml"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def fresh(prefix: str) -> str:
    return f"{unique_name(prefix)}-{secrets.token_hex(3)}"


@dataclass(slots=True)
class Org:
    name: str
    sender: str
    author: str  # the token of user:<author name>, role author
    user: str


async def ok(response: httpx.Response, *status: int) -> dict[str, Any]:
    assert response.status_code in (status or (200, 201)), (response.status_code, response.text)
    body: dict[str, Any] = response.json()
    return body


async def new_admin(http: httpx.AsyncClient) -> str:
    """A second deployment admin (user:<name> in the deployment's organisation) and its token."""
    name = fresh("admin2-")
    await ok(await http.post("/api/v1/admin/users", json={"name": name, "org": "admin", "roles": ["admin"]},
                             headers=bearer(ADMIN_TOKEN)), 201)
    made = await ok(await http.post("/api/v1/admin/tokens", json={"principal": f"user:{name}"},
                                    headers=bearer(ADMIN_TOKEN)), 201)
    return str(made["token"])


async def new_org(http: httpx.AsyncClient, *, automated: bool = True, **fields: Any) -> Org:
    """An organisation with one author; `automated`: approval none, confirmed by a second admin
    (so that its alerts are published at once)."""
    name = fresh("org-")
    sender = f"alerts@{name}.example.org"
    body = {"name": name, "senders": [sender], "statuses": ["Actual", "Exercise", "Test"], **fields}
    await ok(await http.post("/api/v1/admin/orgs", json=body, headers=bearer(ADMIN_TOKEN)), 201)
    if automated:
        changed = await http.patch(f"/api/v1/admin/orgs/{name}", json={"approval": {"mode": "none"}},
                                   headers=bearer(ADMIN_TOKEN))
        await ok(changed, 202)
        second = await new_admin(http)
        await ok(await http.post(f"/api/v1/admin/orgs/{name}/policy/confirm", json={}, headers=bearer(second)))
    user = fresh("author-")
    await ok(await http.post("/api/v1/admin/users", json={"name": user, "org": name, "roles": ["author"]},
                             headers=bearer(ADMIN_TOKEN)), 201)
    made = await ok(await http.post("/api/v1/admin/tokens", json={"principal": f"user:{user}"},
                                    headers=bearer(ADMIN_TOKEN)), 201)
    return Org(name=name, sender=sender, author=str(made["token"]), user=f"user:{user}")


async def post_alert(http: httpx.AsyncClient, token: str, sender: str, **changes: Any) -> httpx.Response:
    return await http.post("/api/v1/alerts", content=alert_xml(sender=sender, **changes),
                           headers={**CAP, **bearer(token)})


@pytest.fixture
async def org(http: httpx.AsyncClient) -> AsyncIterator[Org]:
    yield await new_org(http)


__all__ = ["ADMIN_TOKEN", "Node", "http", "node"]

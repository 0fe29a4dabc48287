"""Real nodes with people: authors and approvers of two organisations, granted through
`tocsin.accounts.grant` (the accounts helper's storage stays behind it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tocsin.accounts import grant
from tocsin.app import Node
from tocsin.cluster.nats_server import NatsServer
from tocsin.policy import Issuer, Role

from tests.e2e.conftest import ADMIN_TOKEN, ISSUER_TOKEN, FakeClock, node, node_settings, start_node  # noqa: F401

ORG = "prefecture-75"
PEOPLE = {
    "alice": (ORG, frozenset({Role.AUTHOR, Role.APPROVER})),  # may approve others' alerts, not her own
    "bob": (ORG, frozenset({Role.APPROVER})),
    "carol": (ORG, frozenset({Role.APPROVER})),
    "dave": (ORG, frozenset({Role.AUTHOR})),  # no approver role
    "erin": ("prefecture-69", frozenset({Role.AUTHOR, Role.APPROVER})),  # another organisation
}
XML = "application/cap+xml"


def token_of(name: str) -> str:
    return f"tcu_test-{name}"


def as_(name: str, content_type: str = XML) -> dict[str, str]:
    """Headers for a person's requests (ADMIN and ISSUER for the admin and the automated source)."""
    token = {"admin": ADMIN_TOKEN, "issuer": ISSUER_TOKEN}.get(name) or token_of(name)
    return {"Authorization": f"Bearer {token}", "Content-Type": content_type}


async def grant_people(node: Node) -> None:
    for name, (org, roles) in PEOPLE.items():
        await grant(node.services.store, token_of(name), Issuer(name=org, principal=f"user:{name}", roles=roles))


async def running(tmp_path: Path, nats_server: NatsServer, clock: FakeClock | None = None,
                  **changes: Any) -> tuple[Node, Any, Any]:
    started = await start_node(node_settings(tmp_path, nats_server, **changes), clock=clock)
    await grant_people(started[0])
    return started


@pytest.fixture
async def http(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the `node` fixture's node, once the people are granted on it."""
    await grant_people(node)
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
        yield client


async def audit_of(http: httpx.AsyncClient, subject: str, who: str = "admin") -> list[dict[str, Any]]:
    response = await http.get("/api/v1/audit", params={"subject": subject}, headers=as_(who))
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["entries"]
    return entries

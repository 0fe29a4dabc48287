"""A revoked token is refused on every node within a second; the bootstrap admin rotates."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.accounts.conftest import bearer, fresh, new_org, ok, post_alert
from tests.e2e.conftest import node_settings, start_node, stop_node
from tests.waiting import until_async
from tocsin.app import Node
from tocsin.cluster.nats_server import NatsServer


@pytest.fixture
async def two_nodes(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[tuple[Node, Node]]:
    stream = fresh("ALERTS_R")
    first = await start_node(node_settings(tmp_path / "a", nats_server, stream=stream))
    try:
        second = await start_node(node_settings(tmp_path / "b", nats_server, stream=stream))
        try:
            yield first[0], second[0]
        finally:
            await stop_node(*second)
    finally:
        await stop_node(*first)


async def test_a_token_revoked_on_one_node_is_refused_on_the_other_within_a_second(
    two_nodes: tuple[Node, Node],
) -> None:
    a, b = two_nodes
    async with httpx.AsyncClient(base_url=a.url, timeout=10) as on_a, httpx.AsyncClient(base_url=b.url, timeout=10) as on_b:
        org = await new_org(on_a)
        assert (await post_alert(on_b, org.author, org.sender)).status_code == 201
        listed = await ok(await on_a.get("/api/v1/admin/tokens", params={"principal": org.user},
                                         headers=bearer(a.settings.admin_token)))
        token_id = listed["tokens"][0]["id"]
        await ok(await on_a.post(f"/api/v1/admin/tokens/{token_id}/revoke", headers=bearer(a.settings.admin_token)))
        revoked_at = time.monotonic()

        async def refused_on_b() -> bool:
            answer = await on_b.get(f"/api/v1/admin/tokens", headers=bearer(org.author))
            return answer.status_code == 401 and answer.json()["code"] == "auth.token-revoked"

        await until_async(refused_on_b, timeout_s=1.0, every_s=0.005)
        elapsed_s = time.monotonic() - revoked_at
        print(f"revoked on {a.settings.node_name}, refused on {b.settings.node_name} after {1000 * elapsed_s:.1f} ms")
        assert elapsed_s < 1.0
        refused = await post_alert(on_b, org.author, org.sender)
        assert refused.status_code == 401 and refused.json()["code"] == "auth.token-revoked"


async def test_the_bootstrap_admin_rotates_and_its_old_token_stays_revoked_after_a_restart(
    tmp_path: Path, nats_server: NatsServer,
) -> None:
    token = f"tca_{fresh('boot-')}"
    settings = node_settings(tmp_path, nats_server, admin_token=token)
    running = await start_node(settings)
    try:
        async with httpx.AsyncClient(base_url=running[0].url, timeout=10) as http:
            rotated = await ok(await http.post("/api/v1/admin/tokens/self/rotate", headers=bearer(token)), 201)
            assert rotated["principal"] == "user:admin" and rotated["org"] == "admin"
            new = rotated["token"]
            refused = await http.get("/api/v1/admin/orgs", headers=bearer(token))
            assert refused.status_code == 401 and refused.json()["code"] == "auth.token-revoked"
            assert (await http.get("/api/v1/admin/orgs", headers=bearer(new))).status_code == 200
    finally:
        await stop_node(*running)
    running = await start_node(settings)  # the same TOCSIN_ADMIN_TOKEN again
    try:
        async with httpx.AsyncClient(base_url=running[0].url, timeout=10) as http:
            still = await http.get("/api/v1/admin/orgs", headers=bearer(token))
            assert still.status_code == 401 and still.json()["code"] == "auth.token-revoked"
            await ok(await http.post("/api/v1/admin/tokens/self/revoke", headers=bearer(new)))
            gone = await http.get("/api/v1/admin/orgs", headers=bearer(new))
            assert gone.status_code == 401 and gone.json()["code"] == "auth.token-revoked"
    finally:
        await stop_node(*running)


async def test_a_first_start_without_an_admin_token_makes_one_once(tmp_path: Path) -> None:
    own = NatsServer(store_dir=tmp_path / "nats", name="accounts-nats")  # an empty accounts bucket
    await own.start()
    try:
        settings = node_settings(tmp_path / "node", own, admin_token="")
        running = await start_node(settings)
        try:
            made = running[0].admin_token
            assert made is not None and made.startswith("tca_")
            async with httpx.AsyncClient(base_url=running[0].url, timeout=10) as http:
                listed = await ok(await http.get("/api/v1/admin/tokens", params={"principal": "user:admin"},
                                                 headers=bearer(made)))
                assert [t["label"] for t in listed["tokens"]] == ["bootstrap admin"]
        finally:
            await stop_node(*running)
        again = await start_node(settings)
        try:
            assert again[0].admin_token is None  # shown once: a restart makes none
        finally:
            await stop_node(*again)
    finally:
        await own.stop()

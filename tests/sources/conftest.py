"""A real node (real nats-server) polling feeds a local publisher serves over real HTTP,
and the helpers the source tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import unique_name
from tests.e2e.conftest import ADMIN_TOKEN, node_settings, running_node
from tests.sources.feeds import Publisher, publisher
from tests.waiting import until_async
from tocsin.app import Node
from tocsin.cluster.nats_server import NatsServer
from tocsin.settings import Settings

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def source_settings(tmp_path: Path, nats_server: NatsServer, **changes: Any) -> Settings:
    """Short timeouts and backoff, a breaker that opens after three failures, its own buckets."""
    base: dict[str, Any] = dict(
        sources_bucket=unique_name("SOURCES_T"), source_fetch_timeout_s=2.0, source_poll_deadline_s=8.0,
        source_backoff_base_s=0.1, source_backoff_max_s=2.0, source_breaker_errors=3, source_breaker_open_s=600.0,
        source_max_feed_bytes=256 * 1024,
    )
    return node_settings(tmp_path, nats_server, **{**base, **changes})


@pytest.fixture
async def feeds() -> AsyncIterator[Publisher]:
    async with publisher() as found:
        yield found


@pytest.fixture
async def node(tmp_path: Path, nats_server: NatsServer, feeds: Publisher) -> AsyncIterator[Node]:
    async with running_node(source_settings(tmp_path, nats_server)) as started:
        yield started


@pytest.fixture
async def http(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
        yield client


async def add_source(http: httpx.AsyncClient, name: str, url: str, **fields: Any) -> dict[str, Any]:
    response = await http.put(f"/api/v1/admin/sources/{name}", json={"url": url, "interval_s": 1, **fields},
                              headers=ADMIN)
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


async def status_of(http: httpx.AsyncClient, name: str) -> dict[str, Any]:
    response = await http.get(f"/api/v1/admin/sources/{name}", headers=ADMIN)
    assert response.status_code == 200, response.text
    status: dict[str, Any] = response.json()["status"]
    return status


async def wait_status(http: httpx.AsyncClient, name: str, check: Any, timeout_s: float = 15.0) -> dict[str, Any]:
    """The source's status once `check(status)` holds."""
    seen: dict[str, Any] = {}

    async def holds() -> bool:
        seen.update(await status_of(http, name))
        return bool(check(seen))

    try:
        await until_async(holds, timeout_s=timeout_s, every_s=0.1)
    except TimeoutError:
        raise AssertionError(f"source {name}: status never matched; last {seen}") from None
    return seen

"""Real nodes on the session's nats-server, each test with an areas bucket of its own (an
import in one test is never in another's gazetteer)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import unique_name
from tests.e2e.conftest import ADMIN_TOKEN, node_settings, running_node
from tocsin.app import Node
from tocsin.cluster.nats_server import NatsServer

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# Around Nice and around Marseille: [lon, lat] GeoJSON rings.
NICE = [[7.15, 43.65], [7.35, 43.65], [7.35, 43.75], [7.15, 43.75], [7.15, 43.65]]
MARSEILLE = [[5.30, 43.25], [5.45, 43.25], [5.45, 43.35], [5.30, 43.35], [5.30, 43.25]]


def feature(code: object, ring: list[list[float]] | None = None, **properties: Any) -> dict[str, Any]:
    return {"type": "Feature", "properties": {"code": code, **properties},
            "geometry": {"type": "Polygon", "coordinates": [ring or NICE]}}


def collection(*features: dict[str, Any]) -> bytes:
    return json.dumps({"type": "FeatureCollection", "features": list(features)}).encode()


async def import_areas(http: httpx.AsyncClient, scheme: str, body: bytes, *, code_property: str = "code",
                       name_property: str | None = "nom", token: dict[str, str] = ADMIN) -> httpx.Response:
    params = {"code_property": code_property, **({"name_property": name_property} if name_property else {})}
    return await http.put(f"/api/v1/admin/areas/{scheme}", params=params, content=body,
                          headers={**token, "Content-Type": "application/geo+json"}, timeout=60)


def own_node(tmp_path: Path, nats_server: NatsServer, bucket: str, **changes: object) -> AbstractAsyncContextManager[Node]:
    """A serving node on this areas bucket."""
    return running_node(node_settings(tmp_path, nats_server, areas_bucket=bucket, **changes))


@pytest.fixture
def areas_bucket() -> str:
    return unique_name("AREAS_T")


@pytest.fixture
async def node(tmp_path: Path, nats_server: NatsServer, areas_bucket: str) -> AsyncIterator[Node]:
    async with own_node(tmp_path, nats_server, areas_bucket) as started:
        yield started


@pytest.fixture
async def http(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
        yield client

"""A real 3-node local cluster (nats-server + tocsin per node) for the module's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tocsin.cluster.local import LocalCluster


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalCluster]:
    local = LocalCluster(Path(tmp_path_factory.mktemp("cluster")), nodes=3)
    try:
        await local.start()
        yield local
    finally:
        await local.stop()

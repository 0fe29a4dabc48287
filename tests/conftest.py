"""Shared fixtures: a real nats-server for the session, and real tocsin nodes on port 0."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable

import pytest
import uvloop

from tocsin.cluster.nats_server import NatsServer

_names = itertools.count(1)


def unique_name(prefix: str = "T") -> str:
    return f"{prefix}{next(_names)}"


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Tests run on uvloop, as `tocsin serve` does: the fast paths depend on its transports."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
async def nats_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NatsServer]:
    """One real nats-server with JetStream (sync_interval: always) for many tests."""
    server = NatsServer(store_dir=tmp_path_factory.mktemp("nats"), name="test-nats")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()

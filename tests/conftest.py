"""Shared fixtures: a real nats-server for the session, and real tocsin nodes on port 0."""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvloop

from tocsin.cluster.nats_server import NatsServer

_names = itertools.count(1)


def unique_name(prefix: str = "T") -> str:
    return f"{prefix}{next(_names)}"


class _Loop(uvloop.Loop):  # type: ignore[misc]
    """uvloop, whose close cannot hang the run: closing a loop in which something still holds
    a listener (a node a failed test left running) waits for it forever; here the close is
    given CLOSE_S and then left behind, said on stderr, so the run ends with its report."""

    CLOSE_S = 30.0

    def close(self) -> None:
        closing = threading.Thread(target=super().close, name="loop-close", daemon=True)
        closing.start()
        closing.join(self.CLOSE_S)
        if closing.is_alive():
            sys.stderr.write(f"\ntests: the event loop did not close within {self.CLOSE_S:.0f} s "
                             "(a handle still open); left behind so that the run can end\n")


# An async test's own deadline, this much before its pytest-timeout: pytest-timeout's signal
# cannot stop a test awaiting in the loop (its exception lands in a loop callback and is
# dropped), so a stuck async test would hold the run until CI's limit, saying nothing.
DEADLINE_MARGIN_S = 10.0


def _timeout_of(item: pytest.Item) -> float | None:
    marker = item.get_closest_marker("timeout")
    if marker is not None:
        value = marker.args[0] if marker.args else marker.kwargs.get("timeout")
    else:
        value = item.config.getini("timeout")
    return float(value) if value else None


def _with_deadline(test: Callable[..., Awaitable[Any]], seconds: float) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(test)
    async def run(*args: Any, **kwargs: Any) -> Any:
        deadline = asyncio.timeout(seconds)
        try:
            async with deadline:
                return await test(*args, **kwargs)
        except TimeoutError as exc:
            if not deadline.expired():
                raise  # the test's own
            raise TimeoutError(f"the test did not finish within its deadline of {seconds:.0f} s "
                               "(its timeout less DEADLINE_MARGIN_S, tests/conftest.py)") from exc
    return run


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every async test runs under its own deadline (DEADLINE_MARGIN_S)."""
    for item in items:
        test = getattr(item, "obj", None)
        seconds = _timeout_of(item)
        if (isinstance(item, pytest.Function) and inspect.iscoroutinefunction(test)
                and not hasattr(test, "hypothesis") and seconds and seconds > 2 * DEADLINE_MARGIN_S):
            item.obj = _with_deadline(test, seconds - DEADLINE_MARGIN_S)


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Tests run on uvloop, as `tocsin serve` does: the fast paths depend on its transports."""
    return {"uvloop": _Loop}


@pytest.fixture(scope="session")
async def nats_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NatsServer]:
    """One real nats-server with JetStream (sync_interval: always) for many tests."""
    server = NatsServer(store_dir=tmp_path_factory.mktemp("nats"), name="test-nats")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(scope="session", autouse=True)
async def _no_node_outlives_the_session(nats_server: NatsServer) -> AsyncIterator[None]:
    """At the session's end, stop any node a failed test left running (tests/e2e/conftest.py),
    before the session's nats-server stops, and name them."""
    yield
    from tests.e2e.conftest import stop_leftover_nodes

    left = await stop_leftover_nodes()
    if left:
        sys.stderr.write(f"\ntests: {len(left)} node(s) left running by their tests were stopped: {', '.join(left)}\n")

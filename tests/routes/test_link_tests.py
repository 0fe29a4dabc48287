"""Link tests: a dead route is known before an alert needs it, named in /readyz and /status,
and the node stays ready (a downstream outage is not this node's failure)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import unique_name
from tests.health.conftest import fast_settings
from tests.routes.conftest import ADMIN, add_route, trust
from tests.routes.receiver import Receiver
from tests.e2e.conftest import running_node
from tests.fakes.tls import gateway_ca
from tests.waiting import until_async
from tocsin.app import Node
from tocsin.cluster.nats_server import NatsServer


@pytest.fixture
async def node(tmp_path: Path, nats_server: NatsServer, receiver: Receiver) -> AsyncIterator[Node]:
    settings = fast_settings(
        tmp_path, nats_server, deliveries_stream=unique_name("DELIV_L"), routes_bucket=unique_name("ROUTES_L"),
        push_ca_file=str(gateway_ca().ca_file), route_link_test_s=1.0, push_timeout_s=1.0,
    )
    async with running_node(settings) as started:
        trust(receiver, started)
        yield started


async def _readyz(http: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    response = await http.get("/readyz")
    return response.status_code, response.json()


async def test_a_dead_route_is_named_in_readyz_and_the_node_stays_ready(node: Node, receiver: Receiver) -> None:
    async with httpx.AsyncClient(base_url=node.url, timeout=5) as http:
        receiver.link_status = 503
        await add_route(http, "broadcaster", receiver.url)
        seen: dict[str, Any] = {}

        async def named_while_ready() -> bool:
            status, report = await _readyz(http)
            check = report["checks"].get("route:broadcaster")
            seen.update(status=status, report=report)
            return status == 200 and check is not None and not check["ok"]

        await until_async(named_while_ready, timeout_s=20, every_s=0.2)
        report = seen["report"]
        assert report["ready"] and "route:broadcaster" not in report["failing"]
        assert report["degraded"] == ["route:broadcaster"]
        assert "link test failed" in report["checks"]["route:broadcaster"]["detail"]
        assert "http-503" in report["checks"]["route:broadcaster"]["detail"]
        status = (await http.get("/status", params={"format": "json"})).json()
        assert not status["routes"]["broadcaster"]["ok"] and "route:broadcaster" in status["degraded"]
        link = receiver.links()[0]
        # What a downstream receives: a System message signed by the deployment, saying what it is.
        assert link.identifier.startswith("tocsin-link-test.broadcaster.")
        # (the receiver took it, so it is CAP 1.2 whose signature verifies with the deployment's key)
        assert link.cap_status == "System" and link.alert_id and not receiver.refusals

        # The downstream comes back: the next link test clears it.
        receiver.link_status = 200

        async def cleared() -> bool:
            _, report = await _readyz(http)
            return bool(report["checks"]["route:broadcaster"]["ok"])

        await until_async(cleared, timeout_s=10, every_s=0.2)
        answer = (await http.post("/api/v1/admin/routes/broadcaster/test", headers=ADMIN)).json()
        assert answer["link_test"]["ok"] and answer["link_test"]["status"] == 200


async def test_link_tests_come_from_one_node_at_a_time(node: Node, receiver: Receiver, tmp_path: Path,
                                                      nats_server: NatsServer) -> None:
    """Two nodes on the same buckets, each testing every second: the lease lets one test
    through per interval, not one per node."""
    second = node.settings.replace(data_dir=tmp_path / "second", node_name=unique_name("lnode"), listen="127.0.0.1:0")
    async with running_node(second) as other, httpx.AsyncClient(base_url=node.url, timeout=5) as http:
        # Its own data directory, so its own key: whichever node holds the lease, the
        # receiver must know its key (a test refused as unsigned is not a test that came).
        trust(receiver, other)
        await add_route(http, "single", receiver.url)
        await until_async(lambda: _links(receiver, 1), timeout_s=10)
        started = receiver.links()[0].at
        await until_async(lambda: _links(receiver, 5), timeout_s=15)
        # Five tests take four intervals (4 s) at one per interval; two nodes unleased, half that.
        assert receiver.links()[4].at - started >= 3.0


async def _links(receiver: Receiver, n: int) -> bool:
    return len(receiver.links()) >= n

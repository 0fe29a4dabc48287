"""A node that dies with a route's delivery in flight loses nothing: once the delivery's
ack_wait passes, another node posts it, and it is accepted once."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import unique_name
from tests.e2e.conftest import start_node, stop_node
from tests.routes.conftest import add_route, enqueue, issue, route_settings, trust
from tests.routes.receiver import Receiver
from tests.samples import alert_xml
from tests.waiting import until
from tocsin.cluster.nats_server import NatsServer


async def test_a_delivery_held_by_a_node_that_stops_is_posted_by_another(tmp_path: Path, nats_server: NatsServer,
                                                                         receiver: Receiver) -> None:
    # The hung request outlasts the node; ack_wait then hands the delivery to the other node.
    first = route_settings(tmp_path / "a", nats_server, push_timeout_s=3.0, delivery_ack_wait_s=6.0)
    second = first.replace(data_dir=tmp_path / "b", node_name=unique_name("fnode"))
    nodes = {}
    for settings in (first, second):
        started = await start_node(settings)
        nodes[started[0].settings.node_name] = started
    try:
        any_node = next(iter(nodes.values()))[0]
        trust(receiver, any_node)
        async with httpx.AsyncClient(base_url=any_node.url, timeout=10) as http:
            await add_route(http, "relay", receiver.url)
            for running in nodes.values():  # every node's worker has the route before the alert
                book = running[0].services.routes
                await until(lambda: "relay" in book)
            receiver.hang(1)
            issued = await issue(http, alert_xml(identifier="FAIL-1"))
        await enqueue(any_node, "relay", issued)
        await until(lambda: len(receiver.hanging) == 1, timeout_s=10)
        holder = receiver.hanging[0]
        await stop_node(*nodes.pop(holder))
        await until(lambda: len(receiver.accepted()) == 1, timeout_s=15)
        (survivor,) = nodes
        accepted = receiver.accepted()
        assert accepted[0].identifier == "FAIL-1" and accepted[0].node == survivor != holder
    finally:
        receiver.release()
        for running in nodes.values():
            await stop_node(*running)

"""The Web Push canary end to end on a real node: each probe goes through the planner, the
work queue, a dispatcher and the Web Push sender to the canary's loopback push service, is
decrypted and verified there, and `/readyz` names webpush when that link stops delivering."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import start_node, stop_node
from tests.waiting import until
from tests.health.conftest import GREEN_WITHIN_S, Readyz, fast_settings, red_then_green
from tocsin.app import Node
from tocsin.cluster.nats_server import NatsServer
from tocsin.prober.push_canary import WebPushCanary


@pytest.fixture
async def push_node(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[Node]:
    # A push service that failed is tried again soon (the breaker and the backoff are short),
    # so that the repaired link is green within the readiness deadline.
    settings = fast_settings(tmp_path, nats_server, breaker_open_s=0.5, delivery_backoff_base_s=0.1,
                             delivery_backoff_max_s=0.5)
    running = await start_node(settings)
    try:
        yield running[0]
    finally:
        await stop_node(*running)


def _canary(node: Node) -> WebPushCanary:
    prober = node.services.prober
    assert prober is not None
    canary = prober.canary("webpush")
    assert isinstance(canary, WebPushCanary)
    return canary


async def test_the_web_push_canary_is_fresh_and_red_names_webpush_when_its_link_breaks(
    push_node: Node, http: httpx.AsyncClient
) -> None:
    await Readyz(push_node.url).until(http, ready=True, within_s=GREEN_WITHIN_S)
    body = (await http.get(f"{push_node.url}/readyz")).json()
    assert body["checks"]["canary:webpush"]["ok"] and body["checks"]["canary:sse"]["ok"]
    canary = _canary(push_node)
    assert canary.displayed > 0 and canary.problems == {}  # decrypted and verified, nothing refused
    receiver = canary.receiver

    async def break_push_service() -> None:
        receiver.fail_with = 503

    async def repair_push_service() -> None:
        receiver.fail_with = None

    readyz = await red_then_green(http, push_node, break_push_service, repair_push_service)
    red = [s for s in readyz.since_fault() if s.status == 503]
    # The live channel delivered all along: only the Web Push canary was late.
    assert red and all(set(s.failing) <= {"canary", "canary:webpush"} for s in red), red
    assert any("canary:webpush" in s.failing for s in red)
    assert receiver.refused.get("told to fail with 503", 0) > 0


async def test_readyz_and_status_say_which_channel_is_late(push_node: Node, http: httpx.AsyncClient) -> None:
    await Readyz(push_node.url).until(http, ready=True, within_s=GREEN_WITHIN_S)
    _canary(push_node).receiver.fail_with = 500
    try:
        await Readyz(push_node.url).until(http, ready=False, within_s=10)
        readyz = (await http.get(f"{push_node.url}/readyz")).json()
        detail = readyz["checks"]["canary"]["detail"]
        assert detail.startswith("the webpush canary is late: ") and "sse" not in detail
        assert readyz["checks"]["canary"]["value"]["late"] == ["webpush"]
        status = (await http.get(f"{push_node.url}/status?format=json")).json()
        assert status["failing_details"]["canary:webpush"].startswith("the webpush canary is late: ")
        assert status["canary"]["channels"]["webpush"]["problems"]["told to fail with 500"] > 0
    finally:
        _canary(push_node).receiver.fail_with = None


async def test_each_node_alone_sends_to_its_own_web_push_canary(tmp_path: Path, nats_server: NatsServer) -> None:
    # Two nodes of one deployment: a canary's receiver listens on its node's loopback, which
    # on hosts apart only that node reaches. Probes reach both canaries; a delivery to one
    # that the other node's dispatcher pulled goes to its owner's lane, never to the gateway.
    first = fast_settings(tmp_path / "a", nats_server, webpush_vapid_key_file=str(tmp_path / "vapid.pem"))
    second = fast_settings(tmp_path / "b", nats_server, stream=first.stream,
                           webpush_vapid_key_file=first.webpush_vapid_key_file)
    nodes = [await start_node(first), await start_node(second)]
    try:
        a, b = nodes[0][0], nodes[1][0]

        def sent(node: Node) -> float:
            value: float = node.services.metrics.push_attempts.labels("webpush", "sent")._value.get()
            return value

        assert a.dispatcher is not None and b.dispatcher is not None
        dispatchers = (a.dispatcher, b.dispatcher)

        def settled() -> bool:
            # Which node's dispatcher pulls a delivery is the server's choice (about half go to
            # the other node; seen: none of the first six), so wait until one was handed over.
            taken = [_canary(n).receiver.taken for n in (a, b)]
            forwarded = sum(d.forwarded for d in dispatchers)
            return min(taken) >= 3 and forwarded > 0 and [sent(n) for n in (a, b)] == taken

        await until(settled, 30)
    finally:
        for running in reversed(nodes):
            await stop_node(*running)

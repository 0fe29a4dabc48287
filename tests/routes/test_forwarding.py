"""CAP forwarding against a real node, a real nats-server and a downstream receiver that
checks CAP 1.2 and the deployment's signature: order per route, retries, Retry-After,
refusals, expiry, removal."""

from __future__ import annotations

import time
from datetime import datetime

import httpx
import nats.js.errors

from tests.e2e.test_follow_ups import follow_up_xml
from tests.routes.conftest import ADMIN, add_route, enqueue, issue, route_record
from tests.routes.receiver import Receiver
from tests.samples import alert_xml
from tests.waiting import until
from tocsin.app import Node
from tocsin.delivery.queue import route_subject
from tocsin.delivery.routes import consumer_name
from tocsin.store.jetstream import JetStreamStore


async def test_a_cancel_goes_only_after_its_alert_was_accepted(node: Node, http: httpx.AsyncClient,
                                                               receiver: Receiver) -> None:
    await add_route(http, "gateway", receiver.url)
    receiver.answer(503, 3)
    alert = await issue(http, alert_xml(identifier="ORDER-1"))
    cancel = await issue(http, follow_up_xml("ORDER-1-cancel", "Cancel", "ORDER-1"))
    await enqueue(node, "gateway", alert)
    await enqueue(node, "gateway", cancel)
    await until(lambda: len(receiver.accepted()) == 2, timeout_s=15)
    seen = [(r.identifier, r.status) for r in receiver.alerts()]
    assert seen == [("ORDER-1", 503)] * 3 + [("ORDER-1", 200), ("ORDER-1-cancel", 200)]
    first = receiver.accepted()[0]
    assert first.alert_id == alert["id"] and first.seq == str(alert["seq"])
    await until(lambda: route_record(node, "gateway").get("counts", {}).get("sent") == 2)
    record = route_record(node, "gateway")
    assert record["counts"]["retry"] == 3 and record["last_success"]["alert_id"] == cancel["id"]


async def test_retry_after_is_honoured(node: Node, http: httpx.AsyncClient, receiver: Receiver) -> None:
    await add_route(http, "slow", receiver.url)
    receiver.answer(429, 1, retry_after="2")
    await enqueue(node, "slow", await issue(http, alert_xml(identifier="RA-1")))
    await until(lambda: len(receiver.accepted()) == 1, timeout_s=10)
    limited, accepted = receiver.alerts()
    assert limited.status == 429
    # The backoff alone is at most 0.2 s here: the 2 s wait is the Retry-After's.
    assert accepted.at - limited.at >= 1.9


async def test_a_refusal_is_not_retried_and_is_recorded(node: Node, http: httpx.AsyncClient,
                                                        receiver: Receiver) -> None:
    await add_route(http, "picky", receiver.url)
    receiver.answer(400, 1)
    refused = await issue(http, alert_xml(identifier="BAD-1"))
    await enqueue(node, "picky", refused)
    await enqueue(node, "picky", await issue(http, alert_xml(identifier="NEXT-1")))
    await until(lambda: route_record(node, "picky").get("counts", {}).get("sent") == 1, timeout_s=10)
    assert [(r.identifier, r.status) for r in receiver.alerts()] == [("BAD-1", 400), ("NEXT-1", 200)]
    failure = route_record(node, "picky")["last_failure"]
    assert failure["outcome"] == "refused" and failure["reason"] == "http-400" and failure["alert_id"] == refused["id"]
    answer = (await http.get("/api/v1/admin/routes/picky", headers=ADMIN)).json()
    assert answer["status"]["counts"] == {"refused": 1, "sent": 1}


async def test_nothing_is_posted_after_the_alert_expires(node: Node, http: httpx.AsyncClient,
                                                         receiver: Receiver) -> None:
    await add_route(http, "down", receiver.url)
    receiver.answer(503, 10_000)
    issued = await issue(http, alert_xml(identifier="EXP-1", expires_in_s=4))
    expires_at = datetime.fromisoformat(issued["expires"]).timestamp()
    await enqueue(node, "down", issued)
    await enqueue(node, "down", await issue(http, alert_xml(identifier="EXP-NEXT")))
    await until(lambda: route_record(node, "down").get("counts", {}).get("expired") == 1, timeout_s=10)
    assert time.time() < expires_at  # given up at the last attempt that could arrive in time
    receiver.planned.clear()
    await until(lambda: len(receiver.accepted()) == 1, timeout_s=10)
    first = [r for r in receiver.alerts() if r.identifier == "EXP-1"]
    assert len(first) >= 2  # it was retried until then
    assert all(r.at < expires_at for r in first)
    # What came after it waited until it was given up, then went.
    order = [r.identifier for r in receiver.alerts()]
    assert order[:len(first)] == ["EXP-1"] * len(first) and set(order[len(first):]) == {"EXP-NEXT"}


async def test_a_hung_downstream_is_retried(node: Node, http: httpx.AsyncClient, receiver: Receiver) -> None:
    await add_route(http, "hangs", receiver.url)
    receiver.hang(1)
    await enqueue(node, "hangs", await issue(http, alert_xml(identifier="HANG-1")))
    await until(lambda: len(receiver.accepted()) == 1, timeout_s=10)
    assert route_record(node, "hangs")["counts"]["retry"] == 1


async def test_a_removed_route_gets_nothing_more(node: Node, http: httpx.AsyncClient, receiver: Receiver) -> None:
    await add_route(http, "old", receiver.url)
    receiver.answer(503, 10_000)
    await enqueue(node, "old", await issue(http, alert_xml(identifier="GONE-1")))
    await enqueue(node, "old", await issue(http, alert_xml(identifier="GONE-2")))
    await until(lambda: len(receiver.alerts()) >= 1, timeout_s=10)
    assert (await http.delete("/api/v1/admin/routes/old", headers=ADMIN)).status_code == 200
    store = node.services.store
    assert isinstance(store, JetStreamStore)
    try:
        await store.jetstream.consumer_info(node.settings.deliveries_stream, consumer_name("old"))
        raise AssertionError("the consumer outlived its route")
    except nats.js.errors.NotFoundError:
        pass
    info = await store.jetstream.stream_info(node.settings.deliveries_stream,
                                             subjects_filter=route_subject(node.settings, "old"))
    assert not info.state.subjects  # what waited for it is gone
    # Added again under the same name: only what is enqueued from now on reaches it.
    receiver.planned.clear()
    await add_route(http, "old", receiver.url)
    await enqueue(node, "old", await issue(http, alert_xml(identifier="NEW-1")))
    await until(lambda: len(receiver.accepted()) == 1, timeout_s=10)
    assert receiver.accepted()[0].identifier == "NEW-1"
    assert "GONE-2" not in {r.identifier for r in receiver.alerts()}


async def test_a_disabled_route_is_planned_nothing_and_waits(node: Node, http: httpx.AsyncClient,
                                                             receiver: Receiver) -> None:
    await add_route(http, "paused", receiver.url, enabled=False)
    assert node.services.routes.names_for("Actual") == []
    answer = (await http.get("/api/v1/admin/routes/paused", headers=ADMIN)).json()
    assert answer["status"]["ok"] and answer["status"]["detail"].startswith("disabled")
    # What was queued anyway waits for it, and goes once it is enabled.
    await enqueue(node, "paused", await issue(http, alert_xml(identifier="WAIT-1")))
    await add_route(http, "paused", receiver.url)
    assert node.services.routes.names_for("Actual") == ["paused"]
    await until(lambda: len(receiver.accepted()) == 1, timeout_s=10)
    assert receiver.accepted()[0].identifier == "WAIT-1"

"""Many issuers at once (issue 11, part 7): what waits is fanned out Actual Extreme first,
and a device resuming mid-burst misses nothing and is sent nothing twice.

Deterministic: the follower is held, 50 issuers post, the test waits until the follower has
all 50 waiting, then releases it; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from tests.e2e.conftest import node  # noqa: F401 - fixture
from tests.e2e.devices import register, sse_device
from tests.samples import IN_PARIS, PARIS_BOX
from tests.waiting import until
from tocsin.accounts import grant
from tocsin.app import Node
from tocsin.cap.compose import simple_alert
from tocsin.cap.parse import parse_xml
from tocsin.pipeline.priority import fingerprint
from tocsin.pipeline.replay import burst_cursor, event_id, parse_cursor
from tocsin.policy import Approval, ApprovalMode, Issuer

ISSUERS = 50
EXTREME = {7, 23, 41}  # which issuers send an Actual Extreme alert; the others a Minor one


def burst_alert(n: int) -> bytes:
    return simple_alert(
        identifier=f"BURST-{n}", sender=f"org-{n}@example.org", polygon=PARIS_BOX,
        severity="Extreme" if n in EXTREME else "Minor", urgency="Immediate" if n in EXTREME else "Future",
        headline=f"burst {n}", description="Inondation.",
    )


async def burst(node: Node) -> dict[str, str]:  # noqa: F811
    """50 issuer organisations post at once, the follower held: alert id -> severity."""
    tokens = [f"tci_burst-{n}" for n in range(ISSUERS)]
    for n, token in enumerate(tokens):
        issuer = Issuer(name=f"org-{n}", approval=Approval(mode=ApprovalMode.NONE))
        await grant(node.services.store, token, issuer)
    async with httpx.AsyncClient(base_url=node.url, timeout=30) as http:

        async def post(n: int) -> tuple[str, str]:
            response = await http.post("/api/v1/alerts", content=burst_alert(n), headers={
                "Authorization": f"Bearer {tokens[n]}", "Content-Type": "application/cap+xml"})
            assert response.status_code == 201, response.text
            return str(response.json()["id"]), "Extreme" if n in EXTREME else "Minor"

        return dict(await asyncio.gather(*(post(n) for n in range(ISSUERS))))


async def test_a_burst_goes_out_extreme_first_and_resumes_without_gaps_or_repeats(node: Node) -> None:  # noqa: F811
    follower = node.services.pipeline.follower
    async with httpx.AsyncClient(base_url=node.url) as http:
        device = await register(http, *IN_PARIS)
    async with sse_device(node.url, device["token"]) as live:
        await live.next("synced")
        follower.hold = asyncio.Event()
        try:
            posted = await burst(node)
            await until(lambda: follower.waiting >= ISSUERS, timeout_s=10)
        finally:
            follower.hold.set()
            follower.hold = None
        arrived: list[tuple[str, str]] = []  # (alert id, event id) in order of arrival
        async with asyncio.timeout(20):
            while len(arrived) < ISSUERS:
                event = await live.next("alert")
                alert_id = json.loads(event.data)["id"]
                if alert_id in posted:
                    arrived.append((alert_id, event.last_event_id))
    order = [posted[alert_id] for alert_id, _ in arrived]
    assert order[: len(EXTREME)] == ["Extreme"] * len(EXTREME), order
    assert len({alert_id for alert_id, _ in arrived}) == ISSUERS

    # Resume from the cursor after each of several points in the burst: the replay holds
    # exactly what the device had not been sent yet.
    for k in (1, len(EXTREME), len(EXTREME) + 1, 10, 25, ISSUERS - 1):
        had = {alert_id for alert_id, _ in arrived[:k]}
        async with sse_device(node.url, device["token"], last_event_id=arrived[k - 1][1]) as resumed:
            replayed: list[str] = []
            async with asyncio.timeout(10):
                while (event := await resumed.events.get()).event != "synced":
                    if event.event == "alert":
                        replayed.append(json.loads(event.data)["id"])
        ours = [alert_id for alert_id in replayed if alert_id in posted]
        assert len(ours) == len(set(ours)), f"after {k}: sent twice"
        assert not had & set(ours), f"after {k}: replayed what it had"
        assert had | set(ours) == set(posted), f"after {k}: missed {set(posted) - had - set(ours)}"


def test_burst_cursors_name_a_floor_and_the_seqs_past_it() -> None:
    assert burst_cursor(4, "ab12cd34" + "0" * 24, [10, 7]) == "4.ab12cd34~7~10"
    assert parse_cursor("4.ab12cd34~7~10") == (4, "ab12cd34", frozenset({7, 10}))
    assert parse_cursor("12") == (12, None, frozenset())
    for bad in ("4~3", "4~4", "4~x", "4~", "4~7.ab12cd34", "4" + "~9" * 2, "4" + "".join(f"~{n}" for n in range(5, 80))):
        try:
            parse_cursor(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was accepted")


def same_message(identifier: str, sender: str, *, headline: str = "Crue de la Seine") -> bytes:
    return simple_alert(identifier=identifier, sender=sender, polygon=PARIS_BOX, headline=headline,
                        description="La Seine déborde.", severity="Severe")


def test_the_fingerprint_is_the_content_whoever_sent_it() -> None:
    one = parse_xml(same_message("A-1", "a@example.org"))
    assert fingerprint(one) == fingerprint(parse_xml(same_message("B-7", "b@example.org")))
    assert fingerprint(one) != fingerprint(parse_xml(same_message("B-7", "b@example.org", headline="Crue")))
    moved = simple_alert(identifier="C-1", sender="c@example.org", headline="Crue de la Seine",
                         description="La Seine déborde.", severity="Severe",
                         polygon="48.80,2.25 48.80,2.43 48.90,2.43 48.90,2.25 48.80,2.25")
    assert fingerprint(one) != fingerprint(parse_xml(moved))


async def test_the_same_message_from_another_issuer_is_flagged_and_still_delivered(node: Node) -> None:  # noqa: F811
    for org in ("org-a", "org-b"):
        await grant(node.services.store, f"tci_{org}", Issuer(name=org, approval=Approval(mode=ApprovalMode.NONE)))
    async with httpx.AsyncClient(base_url=node.url) as http:

        async def post(org: str, body: bytes) -> dict[str, Any]:
            response = await http.post("/api/v1/alerts", content=body, headers={
                "Authorization": f"Bearer tci_{org}", "Content-Type": "application/cap+xml"})
            assert response.status_code == 201, response.text
            answer: dict[str, Any] = response.json()
            return answer

        first = await post("org-a", same_message("DUP-1", "a@example.org"))
        second = await post("org-b", same_message("DUP-2", "b@example.org"))
        again = await post("org-a", same_message("DUP-3", "a@example.org"))  # its own repeat
        other = await post("org-b", same_message("DUP-4", "b@example.org", headline="Autre"))
    assert first["standing"]["duplicateOf"] is None
    assert second["standing"]["duplicateOf"] == {"id": first["id"], "issuer": "org-a"}
    assert again["standing"]["duplicateOf"] is None and other["standing"]["duplicateOf"] is None
    assert second["standing"]["published"] is True
    fan_out = second["standing"]["fanOut"]
    assert fan_out["node"] == node.settings.node_name and isinstance(fan_out["done"], bool)
    assert fan_out["done"] or fan_out["before"] >= 0
    await until(lambda: second["id"] in node.services.pipeline.fanout.offered)  # stored and fanned out


async def test_the_answer_says_how_far_this_node_is_from_fanning_it_out(node: Node) -> None:  # noqa: F811
    await grant(node.services.store, "tci_org-q", Issuer(name="org-q", approval=Approval(mode=ApprovalMode.NONE)))
    pipeline = node.services.pipeline
    pipeline.follower.hold = asyncio.Event()
    try:
        async with httpx.AsyncClient(base_url=node.url) as http:
            answers = []
            for n in range(3):
                response = await http.post("/api/v1/alerts", content=burst_alert(100 + n), headers={
                    "Authorization": "Bearer tci_org-q", "Content-Type": "application/cap+xml"})
                assert response.status_code == 201, response.text
                answers.append(response.json())
        taken = pipeline.index.last_seq  # at least what it was when each answer was made
        for answer in answers:
            assert answer["standing"]["fanOut"]["done"] is False  # held: nothing new goes out
            assert answer["seq"] - taken - 1 <= answer["standing"]["fanOut"]["before"] < answer["seq"]
        assert answers[2]["standing"]["fanOut"]["before"] >= 2  # the two before it wait too
    finally:
        pipeline.follower.hold.set()
        pipeline.follower.hold = None
    await until(lambda: all(a["id"] in pipeline.fanout.offered for a in answers))


async def test_a_device_resuming_on_a_node_behind_its_burst_cursor_misses_nothing(node: Node) -> None:  # noqa: F811
    """The cursor came from a node ahead of this one: this one fans the burst out in rank
    order, and the device's place must not skip the Extreme alert (it may get one again)."""
    await grant(node.services.store, "tci_org-r", Issuer(name="org-r", approval=Approval(mode=ApprovalMode.NONE)))
    pipeline = node.services.pipeline
    async with httpx.AsyncClient(base_url=node.url) as http:
        device = await register(http, *IN_PARIS)
        before = await http.post("/api/v1/alerts", content=burst_alert(199), headers={
            "Authorization": "Bearer tci_org-r", "Content-Type": "application/cap+xml"})
        await until(lambda: before.json()["id"] in pipeline.fanout.offered)
        pipeline.follower.hold = asyncio.Event()
        try:
            ids, seqs = [], []
            for n in (200, 201, min(EXTREME)):  # the last one Extreme: fanned out first here
                response = await http.post("/api/v1/alerts", content=burst_alert(n), headers={
                    "Authorization": "Bearer tci_org-r", "Content-Type": "application/cap+xml"})
                assert response.status_code == 201, response.text
                ids.append(response.json()["id"])
                seqs.append(response.json()["seq"])
            # The device had the first of the three, from a node that is ahead of this one.
            cursor = event_id(seqs[0], ids[0])
            async with sse_device(node.url, device["token"], last_event_id=cursor) as resumed:
                await resumed.next("synced")
                pipeline.follower.hold.set()
                got: set[str] = set()
                async with asyncio.timeout(10):
                    while not set(ids[1:]) <= got:
                        got.add(json.loads((await resumed.next("alert")).data)["id"])
        finally:
            pipeline.follower.hold.set()
            pipeline.follower.hold = None

"""The watcher against scripted nodes: verify, check, dedupe, resume, re-register."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tocsin.client.backoff import Backoff
from tocsin.client.node import RegistrationRefused
from tocsin.client.state import Standing, load_state
from tocsin.client.watch import Display, Watcher
from tocsin.geo.cells import cell_for_point
from tocsin.signing import SigningKey

from .cap_samples import LYON, NOW, PARIS, cap_xml
from .fake_node import FakeNode, Router, sse_alert, sse_synced

LYON_POLYGON = "45.70,4.75 45.70,4.95 45.82,4.95 45.82,4.75 45.70,4.75"


class Sleeps:
    """Records backoff delays instead of sleeping them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


def _now() -> datetime:
    return NOW + timedelta(seconds=2)


def watcher(transport: httpx.AsyncBaseTransport, *, urls: list[str] | None = None,
            state: Path | None = None, sleeps: Sleeps | None = None, **options: object) -> Watcher:
    if "keys" not in options:
        options.setdefault("trust_on_first_use", True)
    return Watcher(
        urls or ["http://a"], [PARIS], languages=("fr", "en"), state_path=state,
        transport=transport, now=_now, sleep=sleeps or Sleeps(),
        backoff=Backoff(rng=random.Random(0)), **options,  # type: ignore[arg-type]
    )


async def _next(w: Watcher) -> Display:
    async with asyncio.timeout(2):
        return await anext(aiter(w.displays()))


async def test_registers_verifies_checks_and_displays(tmp_path: Path) -> None:
    node = FakeNode()
    here = cap_xml(identifier="A-1", infos=(("en-US", "Flood"), ("fr-FR", "Crue")))
    elsewhere = cap_xml(identifier="A-2", polygon=LYON_POLYGON)
    node.scripts = [b": keepalive\n\n" + sse_alert(1, elsewhere, node.key) + sse_alert(2, here, node.key)
                    + sse_synced("n1", 2)]
    async with watcher(node.transport(), state=tmp_path / "s.json") as w:
        display = await _next(w)
        synced = await w.wait_synced()
    assert node.registrations == [{"cells": [cell_for_point(*PARIS)], "languages": ["fr", "en"], "tests": False}]
    assert (display.identifier, display.headline, display.language) == ("A-1", "Crue", "fr-FR")
    assert (display.seq, display.alert_id, display.node, display.status) == (2, "al_2", "http://a", "Actual")
    assert display.delay_s == pytest.approx(2.0)
    assert display.as_json()["msgType"] == "Alert"
    assert (synced.node, synced.seq) == ("n1", 2)
    assert w.stats.verdicts == {"out_of_area": 1, "show": 1}
    saved = load_state(tmp_path / "s.json")
    assert saved.last_seq == 2
    assert set(saved.shown) == {("prefecture@example.gouv.fr", "A-1")}
    assert set(saved.keys) == {node.key.kid}


async def test_alert_with_bad_signature_is_counted_and_never_shown() -> None:
    node = FakeNode()
    forger = SigningKey.generate()
    forged = cap_xml(identifier="FORGED")
    tampered = cap_xml(identifier="TAMPERED")
    node.scripts = [
        sse_alert(1, forged, node.key, sig=forger.sign(forged.encode()))
        + sse_alert(2, tampered, node.key, sig=node.key.sign(cap_xml(identifier="OTHER").encode()))
        + sse_alert(3, cap_xml(identifier="GOOD"), node.key)
    ]
    async with watcher(node.transport()) as w:
        display = await _next(w)
    assert display.identifier == "GOOD"
    assert w.stats.bad_signatures == 2


async def test_keys_given_by_the_caller_are_the_only_ones_trusted() -> None:
    node = FakeNode()
    other = SigningKey.generate()
    node.scripts = [sse_alert(1, cap_xml(identifier="X"), node.key) + sse_alert(2, cap_xml(identifier="Y"), other)]
    async with watcher(node.transport(), keys={other.kid: other.public_jwk()}) as w:
        display = await _next(w)
    assert display.identifier == "Y"
    assert w.stats.bad_signatures == 1


async def test_status_and_expiry_rules_apply() -> None:
    node = FakeNode()
    node.scripts = [
        sse_alert(1, cap_xml(identifier="T", status="Test"), node.key)
        + sse_alert(2, cap_xml(identifier="S", status="System"), node.key)
        + sse_alert(3, cap_xml(identifier="OLD", sent=NOW - timedelta(hours=3), expires=NOW), node.key)
        + sse_alert(4, cap_xml(identifier="REAL"), node.key)
    ]
    async with watcher(node.transport()) as w:
        display = await _next(w)
    assert display.identifier == "REAL"
    assert w.stats.verdicts == {"status": 2, "expired": 1, "show": 1}


async def test_opted_in_device_shows_tests() -> None:
    node = FakeNode()
    node.scripts = [sse_alert(1, cap_xml(identifier="T", status="Test"), node.key)]
    async with watcher(node.transport(), tests=True) as w:
        display = await _next(w)
    assert display.status == "Test"
    assert node.registrations[0]["tests"] is True


async def test_resumes_on_next_node_with_last_event_id_and_never_shows_twice() -> None:
    first, second = FakeNode(), FakeNode()
    second.key = first.key  # one deployment, one key
    alert = cap_xml(identifier="A-1")
    first.scripts = [sse_alert(5, alert, first.key), b""]
    # The second node replays the same alert under a later seq, then a new one.
    second.scripts = [sse_alert(6, alert, first.key) + sse_alert(7, cap_xml(identifier="A-2"), first.key)]
    sleeps = Sleeps()
    router = Router({"a": first, "b": second})
    async with watcher(router, urls=["http://a", "http://b"], sleeps=sleeps) as w:
        one, two = await _next(w), await _next(w)
    assert (one.identifier, one.node) == ("A-1", "http://a")
    assert (two.identifier, two.node) == ("A-2", "http://b")
    assert "last-event-id" not in first.streams[0].headers
    assert second.streams[0].headers["last-event-id"] == "5"
    assert second.streams[0].headers["authorization"] == "Bearer dev_1.secret"
    assert len(first.registrations) == 1 and second.registrations == []
    assert w.stats.verdicts["duplicate"] == 1
    assert len(sleeps.delays) == 1 and 0 <= sleeps.delays[0] <= 0.5


async def test_state_survives_a_restart(tmp_path: Path) -> None:
    node = FakeNode()
    state = tmp_path / "state.json"
    node.scripts = [sse_alert(1, cap_xml(identifier="A-1"), node.key)]
    async with watcher(node.transport(), state=state) as w:
        await _next(w)
    node.scripts = [sse_alert(1, cap_xml(identifier="A-1"), node.key)
                    + sse_alert(2, cap_xml(identifier="A-1"), node.key)
                    + sse_alert(3, cap_xml(identifier="A-3"), node.key)]
    async with watcher(node.transport(), state=state) as w:
        display = await _next(w)
    assert display.identifier == "A-3"
    assert len(node.registrations) == 1
    assert node.streams[-1].headers["last-event-id"] == "1"
    assert w.stats.verdicts == {"duplicate": 1, "show": 1}  # seq 1 skipped, 2 a duplicate


async def test_unknown_device_registers_again_and_starts_over() -> None:
    node = FakeNode()
    node.scripts = [sse_alert(9, cap_xml(identifier="A-1"), node.key), 401,
                    sse_alert(1, cap_xml(identifier="A-2"), node.key)]
    async with watcher(node.transport()) as w:
        await _next(w)
        display = await _next(w)
    assert display.identifier == "A-2" and display.seq == 1
    assert len(node.registrations) == 2
    assert node.streams[1].headers["authorization"] == "Bearer dev_1.secret"
    assert node.streams[2].headers["authorization"] == "Bearer dev_2.secret"
    assert "last-event-id" not in node.streams[2].headers


async def test_backoff_grows_while_nodes_fail_and_resets_after_a_connection() -> None:
    node = FakeNode()
    node.scripts = [503, 503, 503, 503, b"", sse_alert(1, cap_xml(), node.key)]
    sleeps = Sleeps()
    async with watcher(node.transport(), sleeps=sleeps) as w:
        await _next(w)
    ceilings = [0.5, 1.0, 2.0, 4.0, 0.5]
    assert len(sleeps.delays) == len(ceilings)
    assert all(0 <= d <= c for d, c in zip(sleeps.delays, ceilings))
    assert w.stats.connects == 2


async def test_registration_refused_for_good_stops_the_watcher() -> None:
    node = FakeNode(register_status=422)
    with pytest.raises(ExceptionGroup) as caught:
        async with watcher(node.transport()) as w:
            assert w._runner is not None
            # Wait for the watcher to stop on its own (the event), not for a fixed time.
            done, _ = await asyncio.wait([w._runner], timeout=5)
            assert done
    assert caught.group_contains(RegistrationRefused)
    assert w.stats.registrations == 0


async def test_display_callback_receives_displays() -> None:
    node = FakeNode()
    node.scripts = [sse_alert(1, cap_xml(identifier="CB"), node.key) + sse_synced("n", 1)]
    got: asyncio.Queue[Display] = asyncio.Queue()

    async def on_display(display: Display) -> None:
        got.put_nowait(display)

    async with watcher(node.transport(), on_display=on_display) as w:
        async with asyncio.timeout(2):
            display = await got.get()
            await w.wait_synced()
    assert display.identifier == "CB"
    assert json.loads(json.dumps(display.as_json()))["identifier"] == "CB"


def test_watcher_needs_a_place_and_a_url() -> None:
    with pytest.raises(ValueError):
        Watcher(["http://a"], [])
    with pytest.raises(ValueError):
        Watcher([], [LYON])


def _without_area(cap: str) -> str:
    start, end = cap.index("<area>"), cap.index("</area>") + len("</area>")
    return cap[:start] + cap[end:]


async def test_a_cancelled_alert_is_never_shown_again_even_if_an_old_node_replays_it(tmp_path: Path) -> None:
    node = FakeNode()
    refs = f"prefecture@example.gouv.fr,A-1,{NOW.isoformat()}"
    original = cap_xml(identifier="A-1")
    cancel = _without_area(cap_xml(identifier="A-1-c", msg_type="Cancel", references=refs, infos=(("fr-FR", "Fin"),)))
    node.scripts = [sse_alert(1, original, node.key) + sse_alert(2, cancel, node.key)
                    + sse_alert(3, original, node.key)  # an old node replays it under a later seq
                    + sse_alert(4, _without_area(cap_xml(identifier="A-1-u", msg_type="Update", references=refs)), node.key)
                    + sse_alert(5, cap_xml(identifier="NEXT"), node.key)]
    async with watcher(node.transport(), state=tmp_path / "s.json") as w:
        shown = [await _next(w) for _ in range(3)]
    assert [(d.identifier, d.kind) for d in shown] == [("A-1", "alert"), ("A-1-c", "cancel"), ("NEXT", "alert")]
    assert shown[1].headline == "Fin" and shown[1].replaces == (("prefecture@example.gouv.fr", "A-1"),)
    # The replay is a duplicate; an Update without area of what was cancelled concerns no one.
    assert (w.stats.verdicts["duplicate"], w.stats.verdicts["unrelated"]) == (1, 1)
    saved = load_state(tmp_path / "s.json").shown
    assert saved[("prefecture@example.gouv.fr", "A-1")].standing is Standing.CANCELLED


async def test_identical_messages_from_two_senders_are_shown_once_naming_both() -> None:
    node = FakeNode()
    first = cap_xml(identifier="A-1")
    second = cap_xml(identifier="B-1").replace("prefecture@example.gouv.fr", "zone-paris@example.gouv.fr")
    node.scripts = [sse_alert(1, first, node.key) + sse_alert(2, second, node.key)]
    async with watcher(node.transport()) as w:
        shown = [await _next(w), await _next(w)]
    assert [(d.identifier, d.kind) for d in shown] == [("A-1", "alert"), ("B-1", "also")]
    assert shown[1].senders == ("prefecture@example.gouv.fr", "zone-paris@example.gouv.fr")
    assert shown[1].replaces == (("prefecture@example.gouv.fr", "A-1"),)

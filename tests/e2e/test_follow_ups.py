"""Update and Cancel as devices see them, against a real node and real watchers.

An Update replaces and a Cancel retracts what a device showed: live, after being offline
(resumed from its cursor), and for a device connecting for the first time afterwards
(only the newest, or nothing). A correction reaches a device that moved away. References
name an alert of the same organisation, or are refused.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import httpx

from tests.e2e.conftest import ISSUER_TOKEN, node_settings, start_node, stop_node
from tests.e2e.devices import register, sse_device
from tests.e2e.test_watcher import LYON_BOX, XML, issue, next_display
from tests.samples import IN_LYON, IN_PARIS, PARIS_BOX, alert_xml
from tests.waiting import until
from tocsin.accounts import grant
from tocsin.app import Node
from tocsin.cap.compose import cap_time
from tocsin.client.decide import Kind
from tocsin.client.display import Display
from tocsin.client.watch import Watcher
from tocsin.cluster.nats_server import NatsServer
from tocsin.correction import CORRECTION_PARAMETER, CORRECTION_VALUE
from tocsin.policy import Approval, ApprovalMode, Issuer

SENDER = "prefecture-75@interieur.gouv.fr"
LYON_SENDER = "prefecture-69@interieur.gouv.fr"
ADMIN = {"Authorization": f"Bearer {ISSUER_TOKEN}"}  # an automated source: publishes at once
NEW_BOX = "48.84,2.30 48.84,2.40 48.88,2.40 48.88,2.30 48.84,2.30"


def follow_up_xml(identifier: str, msg_type: str, target: str, *, headline: str = "", polygon: str | None = None,
                  correction: bool = False, sender: str = SENDER) -> bytes:
    """An Update or Cancel of `target` (sent by SENDER) with one info, its own area only
    when `polygon` is given, marked as a correction when told."""
    now = datetime.now(UTC)
    parameter = (f"<parameter><valueName>{CORRECTION_PARAMETER}</valueName><value>{CORRECTION_VALUE}</value></parameter>"
                 if correction else "")
    area = f"<area><areaDesc>Paris</areaDesc><polygon>{polygon}</polygon></area>" if polygon else ""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>{identifier}</identifier>
<sender>{escape(sender)}</sender><sent>{cap_time(now)}</sent><status>Actual</status>
<msgType>{msg_type}</msgType><scope>Public</scope>
<references>{SENDER},{target},{cap_time(now)}</references>
<info><language>fr-FR</language><category>Met</category><event>Inondation</event>
<urgency>Immediate</urgency><severity>Severe</severity><certainty>Observed</certainty>
<headline>{escape(headline or msg_type)}</headline>{parameter}{area}</info></alert>""".encode()


def watching(node: Node, place: tuple[float, float], state: Path | None = None) -> Watcher:
    return Watcher([node.url], [place], state_path=state, trust_on_first_use=True)


async def replayed(node: Node, place: tuple[float, float], last_event_id: str | None = None) -> list[str]:
    """The CAP identifiers (barriers left out) a device registered here is replayed, up to `synced`."""
    async with httpx.AsyncClient(base_url=node.url) as http:
        device = await register(http, *place)
    found: list[str] = []
    async with sse_device(node.url, device["token"], last_event_id) as sse, asyncio.timeout(10):
        while (event := await sse.events.get()).event != "synced":
            if event.event == "alert":
                found.append(_identifier(json.loads(event.data)))
    return [identifier for identifier in found if not identifier.startswith("BARRIER-")]


def _identifier(body: dict[str, Any]) -> str:
    return str(body["cap"]).split("<identifier>", 1)[1].split("</identifier>", 1)[0]


async def shown_after(watcher: Watcher, http: httpx.AsyncClient, polygon: str = PARIS_BOX) -> list[Display]:
    """What the watcher shows until a barrier alert issued now over `polygon` (where the
    watcher is) comes; barriers left out."""
    barrier = f"BARRIER-{next(_barriers)}"
    await issue(http, ADMIN, alert_xml(identifier=barrier, headline="barrier", polygon=polygon))
    displays = watcher.displays()
    found: list[Display] = []
    while (display := await next_display(displays)).identifier != barrier:
        if not display.identifier.startswith("BARRIER-"):  # an earlier barrier, replayed
            found.append(display)
    return found


_barriers = itertools.count(1)


async def test_an_update_replaces_on_live_resumed_and_new_devices(node: Node, http: httpx.AsyncClient,
                                                                  tmp_path: Path) -> None:
    state = tmp_path / "offline.json"
    original = await issue(http, ADMIN, alert_xml(identifier="FR-UPD-1", headline="Crue"))
    async with watching(node, IN_PARIS, state) as offline:
        assert (await next_display(offline.displays())).identifier == original
    async with watching(node, IN_PARIS) as live:
        assert (await next_display(live.displays())).identifier == original
        update = follow_up_xml("FR-UPD-2", "Update", original, headline="Crue majeure", polygon=NEW_BOX)
        await issue(http, ADMIN, update)
        shown = await next_display(live.displays())
    assert (shown.identifier, shown.kind, shown.replaces, shown.headline) == (
        "FR-UPD-2", Kind.UPDATE, ((SENDER, original),), "Crue majeure")
    # Offline meanwhile: resumes from its cursor, shows the Update as an update, not the original.
    async with watching(node, IN_PARIS, state) as resumed:
        assert [(d.identifier, d.kind) for d in await shown_after(resumed, http)] == [("FR-UPD-2", Kind.UPDATE)]
    # First time afterwards: the node replays only the newest, shown as a new alert.
    assert await replayed(node, IN_PARIS) == ["FR-UPD-2"]
    async with watching(node, IN_PARIS) as fresh:
        assert [(d.identifier, d.kind) for d in await shown_after(fresh, http)] == [("FR-UPD-2", Kind.ALERT)]


async def test_a_cancel_with_info_but_no_area_retracts_on_live_and_resumed_devices_only(
    node: Node, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    state = tmp_path / "offline.json"
    original = await issue(http, ADMIN, alert_xml(identifier="FR-CAN-1"))
    async with watching(node, IN_PARIS, state) as offline:
        assert (await next_display(offline.displays())).identifier == original
        cursor = offline.state.cursor
    async with watching(node, IN_PARIS) as live:
        assert (await next_display(live.displays())).identifier == original
        await issue(http, ADMIN, follow_up_xml("FR-CAN-2", "Cancel", original, headline="Fin de l'alerte"))
        shown = await next_display(live.displays())
        assert (shown.identifier, shown.kind, shown.headline) == ("FR-CAN-2", Kind.CANCEL, "Fin de l'alerte")
        # The original is not current any more: the same identity never comes again.
        assert [d.identifier for d in await shown_after(live, http)] == []
    async with watching(node, IN_PARIS, state) as resumed:
        assert [(d.identifier, d.kind) for d in await shown_after(resumed, http)] == [("FR-CAN-2", Kind.CANCEL)]
    # The node replays the Cancel to a cursor from before it, and neither to a new device.
    assert await replayed(node, IN_PARIS, cursor) == ["FR-CAN-2"]
    assert await replayed(node, IN_PARIS) == []
    async with watching(node, IN_PARIS) as fresh:
        assert await shown_after(fresh, http) == []


async def test_a_correction_reaches_a_device_that_moved_away(node: Node, http: httpx.AsyncClient,
                                                             tmp_path: Path) -> None:
    live_state, offline_state = tmp_path / "live.json", tmp_path / "offline.json"
    original = await issue(http, ADMIN, alert_xml(identifier="FR-FALSE-1", headline="Missile"))
    for state in (live_state, offline_state):
        async with watching(node, IN_PARIS, state) as device:
            assert (await next_display(device.displays())).identifier == original
    async with watching(node, IN_LYON, live_state) as moved, watching(node, IN_LYON) as stranger:
        await moved.wait_synced()
        await stranger.wait_synced()
        assert moved.stats.registrations == 1  # its new cells are registered
        correction = follow_up_xml("FR-FALSE-2", "Cancel", original, headline="Fausse alerte", correction=True)
        await issue(http, ADMIN, correction)
        shown = await next_display(moved.displays())
        assert (shown.identifier, shown.kind, shown.replaces) == ("FR-FALSE-2", Kind.CORRECTION, ((SENDER, original),))
        # Delivered to every device, shown only where the original was.
        await until(lambda: stranger.stats.verdicts.get("unrelated") == 1)
    async with watching(node, IN_LYON, offline_state) as resumed:
        assert [(d.identifier, d.kind) for d in await shown_after(resumed, http, LYON_BOX)] == [
            ("FR-FALSE-2", Kind.CORRECTION)]


async def test_references_name_an_alert_of_the_same_organisation(node: Node, http: httpx.AsyncClient) -> None:
    automated = Approval(mode=ApprovalMode.NONE)
    await grant(node.services.store, "tok-75", Issuer(name="pref-75", senders=(SENDER,), approval=automated))
    await grant(node.services.store, "tok-69", Issuer(name="pref-69", senders=(LYON_SENDER,), approval=automated))
    await grant(node.services.store, "tok-zone", Issuer(name="zone", senders=(LYON_SENDER,), approval=automated,
                                                         delegated=("pref-75",)))

    async def post(token: str, xml: bytes) -> httpx.Response:
        return await http.post("/api/v1/alerts", content=xml, headers={"Authorization": f"Bearer {token}", **XML})

    original = (await post("tok-75", alert_xml(identifier="FR-REF-1"))).json()["identifier"]
    before = await node.services.store.last_seq()
    refused = await post("tok-69", follow_up_xml("FR-REF-X", "Cancel", original, sender=LYON_SENDER))
    assert (refused.status_code, refused.json()["code"]) == (422, "policy.reference-not-allowed")
    assert refused.headers["content-type"] == "application/problem+json"
    assert original in refused.json()["detail"]
    unknown = await post("tok-75", follow_up_xml("FR-REF-Y", "Cancel", "FR-NOWHERE"))
    assert (unknown.status_code, unknown.json()["code"]) == (422, "policy.reference-unknown")
    assert "FR-NOWHERE" in unknown.json()["detail"]
    assert await node.services.store.last_seq() == before  # nothing stored
    # Its own organisation's alert, or one it is delegated: accepted.
    assert (await post("tok-zone", follow_up_xml("FR-REF-2", "Update", original, sender=LYON_SENDER))).status_code == 201
    assert (await post("tok-75", follow_up_xml("FR-REF-3", "Cancel", original))).status_code == 201


async def test_a_restarted_node_keeps_the_supersession(tmp_path: Path, nats_server: NatsServer) -> None:
    settings = node_settings(tmp_path, nats_server)
    running = await start_node(settings)
    node = running[0]
    try:
        async with httpx.AsyncClient(base_url=node.url) as http:
            original = await issue(http, ADMIN, alert_xml(identifier="FR-RST-1"))
            updated = await issue(http, ADMIN, alert_xml(identifier="FR-RST-2"))
            await issue(http, ADMIN, follow_up_xml("FR-RST-3", "Update", updated, polygon=NEW_BOX))
            await issue(http, ADMIN, follow_up_xml("FR-RST-4", "Cancel", original))
        index = node.services.pipeline.index
        await until(lambda: len(index.superseded) == 2)
        cursor = next(a.event for a in index.active.values() if a.alert.identifier == "FR-RST-1").seq
        position = settings.data_dir / "follower-position.json"
        await until(lambda: position.exists() and len(json.loads(position.read_text())["superseded"]) == 2)
    finally:
        await stop_node(*running)
    running = await start_node(settings)
    node = running[0]
    try:
        assert node.services.pipeline.checkpoint is not None and node.services.pipeline.checkpoint.restored_from
        assert await replayed(node, IN_PARIS) == ["FR-RST-3"]
        assert await replayed(node, IN_PARIS, str(cursor)) == ["FR-RST-3", "FR-RST-4"]
    finally:
        await stop_node(*running)


async def test_an_update_naming_more_references_than_allowed_is_refused_before_any_lookup(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    running = await start_node(node_settings(tmp_path, nats_server, max_alert_references=2))
    try:
        async with httpx.AsyncClient(base_url=running[0].url) as http:
            original = await issue(http, ADMIN, alert_xml(identifier="FR-MANY-1"))
            now = cap_time(datetime.now(UTC))
            many = " ".join(f"{SENDER},FR-MANY-{n},{now}" for n in range(1, 4))
            xml = alert_xml(identifier="FR-MANY-U", msg_type="Update", references=many)
            response = await http.post("/api/v1/alerts", content=xml, headers={**ADMIN, **XML})
            assert (response.status_code, response.json()["code"]) == (422, "policy.too-many-references")
            # The same reference twice counts once.
            twice = alert_xml(identifier="FR-MANY-V", msg_type="Update",
                              references=f"{SENDER},{original},{now} {SENDER},{original},{now} ")
            assert (await http.post("/api/v1/alerts", content=twice, headers={**ADMIN, **XML})).status_code == 201
    finally:
        await stop_node(*running)


async def test_an_update_that_moves_the_area_reaches_who_showed_the_original(node: Node, http: httpx.AsyncClient) -> None:
    original = await issue(http, ADMIN, alert_xml(identifier="FR-MOVE-1"))
    async with watching(node, IN_PARIS) as paris, watching(node, IN_LYON) as lyon:
        assert (await next_display(paris.displays())).identifier == original
        await lyon.wait_synced()
        await issue(http, ADMIN, follow_up_xml("FR-MOVE-2", "Update", original, headline="vers Lyon", polygon=LYON_BOX))
        shown = await next_display(paris.displays())
        assert (shown.identifier, shown.kind, shown.headline) == ("FR-MOVE-2", Kind.UPDATE, "vers Lyon")
        # In the new area, never having shown the original: a new alert.
        arrived = await next_display(lyon.displays())
        assert (arrived.identifier, arrived.kind) == ("FR-MOVE-2", Kind.ALERT)

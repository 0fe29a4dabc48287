"""Issuer API: the reach preview of a draft alert (POST /api/v1/alerts/preview), stored nowhere.

The draft goes through the checks issuing makes (Accept.vet, the references), so an author
learns of a refusal before submitting; then the node tells whom it would reach: its cover
(an Update or Cancel without areas goes where its references went, as the index sends it),
the registered devices by channel and language, the devices connected to this worker now,
the area in km², each info's text against each channel's budget, and warnings.

Nothing is published, recorded, submitted or audited: a preview changes nothing, and the
audit log is the permanent record of what changed (a flood of previews must not grow it).
It is bounded apart from alerts: TOCSIN_PREVIEWS_PER_ORG_PER_MIN per organisation and node,
and PREVIEWS_AT_ONCE per worker, since its cover goes to the child process that covers the
alerts being issued (geo/covering.py, one cover at a time): an alert being issued waits
behind at most that many previews' covers, each under the cover deadline.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime
from typing import Any

import h3
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tocsin.api.alerts import read_alert
from tocsin.api.auth import issuer_for, require, take_org_slot
from tocsin.api.device_records import Reach
from tocsin.api.services import Services
from tocsin.cap.model import Alert, Info, MsgType
from tocsin.cap.parse import parse_stored
from tocsin.cap.render import to_json
from tocsin.channels import budgets
from tocsin.correction import is_correction
from tocsin.errors import PREVIEW_BUSY, PREVIEW_RATE_LIMITED, AlertNotFound, Rejected
from tocsin.geo.cells import Cover
from tocsin.geo.gazetteer import Gazetteer
from tocsin.geo.measure import areas_km2, km2_text, shapes_km2
from tocsin.geo.territory import Territory
from tocsin.pipeline.accept import Vetted, identity_conflict
from tocsin.pipeline.encode import encode_event
from tocsin.policy import Issuer, Role
from tocsin.store.base import Envelope, Stored, alert_id_for

# Previews a worker computes at once; past it, 503 preview.busy (another node may answer).
PREVIEWS_AT_ONCE = 1
# An area this many times its issuer's territory is "much larger" (possible only within the
# territory margin, or for a territory smaller than the margin).
TERRITORY_RATIO_WARNING = 1.5
# The cover of a correction: every cell of the Earth (it reaches every device, correction.py).
EVERYWHERE = Cover(cells=frozenset(str(c) for c in h3.get_res0_cells()))


async def preview_alert(request: Request) -> Response:
    """Vet the draft as issuing would and answer whom it would reach (docs/api.md, "Reach preview")."""
    services: Services = request.app.state.services
    issuer = await issuer_for(request, services)
    require(issuer, Role.AUTHOR)
    take_preview_slot(issuer, services)
    alert, _ = await read_alert(request, services)
    now = services.clock()
    await services.accept.prepare(issuer)  # a large territory is built off the loop
    vetted = services.accept.vet(alert, issuer, now)
    referenced = await services.accept.check_references(vetted.alert, issuer)
    issued = await _already_issued(services, vetted)
    cover, source, measured = await _covered_and_measured(services, vetted.alert, referenced, now, issuer.territory)
    reach = services.device_cache.reach(cover, vetted.alert.status.value)
    answer = {
        "published": False,
        "id": alert_id_for(vetted.alert.sender, vetted.alert.identifier),
        "status": vetted.alert.status.value,
        "msgType": vetted.alert.msg_type.value,
        "alert": to_json(vetted.alert),
        "cover": {"from": source, "cells": len(cover.cells)},
        "reach": {**reach_json(reach), "connectedHere": connected_here(services, cover, vetted.alert.status.value)},
        **measured,
        "budgets": budgets_json(vetted.alert, push_bytes(services, vetted.payload, vetted.alert)),
    }
    answer["warnings"] = warnings(vetted.alert, answer, reach, issued_seq=issued.seq if issued else None)
    return JSONResponse(answer)


async def _covered_and_measured(services: Services, alert: Alert, referenced: list[Stored], now: datetime,
                                territory: Territory | None) -> tuple[Cover, str, dict[str, Any]]:
    """The cover and the km², at most PREVIEWS_AT_ONCE at a time on this worker.

    Raises:
        Rejected: 503 preview.busy; 422 policy.cover-too-slow, as issuing.
    """
    if services.previews_running >= PREVIEWS_AT_ONCE:
        raise Rejected(PREVIEW_BUSY, f"{services.previews_running} being computed", headers={"Retry-After": "1"})
    services.previews_running += 1
    try:
        cover, source = await reach_cover(services, alert, referenced, now)
        return cover, source, await asyncio.to_thread(measure, alert, territory, services.accept.gazetteer)
    finally:
        services.previews_running -= 1


async def _already_issued(services: Services, vetted: Vetted) -> Stored | None:
    """The stored alert of the same identity and content, None when none is stored.

    Raises:
        Rejected: 409 alert.identity-conflict, as issuing: another alert holds the identity.
    """
    try:
        stored = await services.store.get(alert_id_for(vetted.alert.sender, vetted.alert.identifier))
    except AlertNotFound:
        return None
    if stored.envelope.payload != vetted.payload:
        raise identity_conflict(vetted.alert, stored)
    return stored


def take_preview_slot(issuer: Issuer, services: Services) -> None:
    """Count one preview against its organisation's preview rate on this node (0: no limit).

    Raises:
        Rejected: 429 preview.rate-limited with Retry-After.
    """
    per_min = services.settings.previews_per_org_per_min
    take_org_slot(services.preview_rates, issuer.name, per_min, PREVIEW_RATE_LIMITED,
                  f"{issuer.name!r} may ask {per_min} previews a minute of this node")


async def reach_cover(services: Services, alert: Alert, referenced: list[Stored], now: datetime) -> tuple[Cover, str]:
    """The cells the alert would reach, and where they come from: its own areas, its
    references' (an Update or Cancel: added, as pipeline/index.py adds them), or everywhere
    (a correction). A reference's cover is this node's index's when it holds the alert, else
    the one stored with it; an expired reference reaches nobody, as in the index."""
    if is_correction(alert):
        return EVERYWHERE, "everywhere"
    own = await services.accept.cover(alert)
    cells: set[str] = set(own.cells) if own is not None else set()
    from_references = False
    if alert.msg_type in (MsgType.UPDATE, MsgType.CANCEL):
        for stored in referenced:
            found = await _referenced_cells(services, stored, now)
            from_references = from_references or bool(found)
            cells.update(found)
    source = "+".join(name for name, used in (("areas", own is not None), ("references", from_references)) if used)
    return Cover(cells=frozenset(cells)), source or "none"


async def _referenced_cells(services: Services, stored: Stored, now: datetime) -> frozenset[str]:
    env = stored.envelope
    active = services.pipeline.index.by_id.get(env.alert_id)
    if active is not None:
        return active.cover.cells
    if env.expires_at is not None and env.expires_at <= now:
        return frozenset()
    carried = Cover.carried(env.cover) if env.cover is not None else None
    if carried is not None:
        return carried.cells
    cover = await services.accept.cover(parse_stored(env.payload))  # stored before covers were carried
    return cover.cells if cover is not None else frozenset()


def reach_json(reach: Reach) -> dict[str, Any]:
    """Registered devices reached: in all, by channel, by preferred language ("" for none)."""
    return {"devices": reach.devices, "byChannel": dict(sorted(reach.by_channel.items())),
            "byLanguage": dict(sorted(reach.by_language.items()))}


def connected_here(services: Services, cover: Cover, status: str) -> dict[str, Any]:
    """Devices connected now to the worker that answered, by protocol, that the fan-out
    would offer the alert to (fanout.py: cover, then audience)."""
    touches = (lambda cell: True) if cover is EVERYWHERE else cover.touches
    by_protocol = Counter(c.protocol.value for c in services.live.matching(touches) if c.audience.receives(status))
    return {"node": services.settings.node_name, "devices": sum(by_protocol.values()),
            "sse": by_protocol.get("sse", 0), "ws": by_protocol.get("ws", 0)}


def measure(alert: Alert, territory: Territory | None, gazetteer: Gazetteer | None = None) -> dict[str, Any]:
    """The area per info and in all (overlaps once), and against the territory; in a thread."""
    total = areas_km2(area for info in alert.infos for area in info.areas)
    infos = [{"info": i, "language": info.language, "km2": round(areas_km2(info.areas), 3)}
             for i, info in enumerate(alert.infos)]
    measured: dict[str, Any] = {"area": {"km2": round(total, 3), "text": km2_text(total), "infos": infos},
                                "territory": None}
    if territory is not None:
        own = shapes_km2(*territory.shapes(gazetteer))
        measured["territory"] = {"km2": round(own, 3), "ratio": round(total / own, 4) if own > 0 else None}
    return measured


def push_bytes(services: Services, payload: bytes, alert: Alert) -> int:
    """The size of the SSE event data a device would be sent for this alert, signed (the
    next seq of this node's stream stands in for the one it would get)."""
    now = services.clock()
    envelope = Envelope(alert_id=alert_id_for(alert.sender, alert.identifier), payload=payload,
                        sig=services.signer.sign(payload), kid=services.signer.kid, issuer="", node="",
                        accepted_at=now)
    event = encode_event(Stored(seq=services.pipeline.index.last_seq + 1, envelope=envelope), alert.status.value)
    data = event.sse.split(b"\ndata: ", 1)[1]
    return len(data) - len(b"\n\n")


def budgets_json(alert: Alert, push_size: int) -> dict[str, Any]:
    """Each info's text against cell broadcast and WEA; the signed alert against a push payload."""
    return {
        "infos": [{"info": i, "language": info.language,
                   "cellBroadcast": budgets.cell_broadcast(budgets.screen_text(info)).as_json(),
                   "wea": budgets.wea(budgets.wea_text(info)).as_json()}
                  for i, info in enumerate(alert.infos)],
        "push": budgets.push(push_size).as_json(),
    }


def _primary(tag: str) -> str:
    return tag.lower().split("-", 1)[0]


def offered(infos: tuple[Info, ...], language: str) -> bool:
    """Whether a device preferring `language` gets an info in it, as the client picks one
    (client/decide.py pick_info: the same tag, else the same primary subtag, `fr` ~ `fr-FR`)."""
    return any(_primary(info.language) == _primary(language) for info in infos)


def warnings(alert: Alert, answer: dict[str, Any], reach: Reach, *, issued_seq: int | None = None,
             ) -> list[dict[str, Any]]:
    """What the author should look at before issuing, each with a stable code (docs/api.md)."""
    found: list[dict[str, Any]] = []
    if issued_seq is not None:
        found.append({"code": "already-issued", "seq": issued_seq, "detail": (
            f"this alert is stored as seq {issued_seq}; issuing it again returns it (200), nothing new")})
    territory = answer["territory"]
    if territory is not None and territory["ratio"] is not None and territory["ratio"] >= TERRITORY_RATIO_WARNING:
        found.append({"code": "area-larger-than-territory", "ratio": territory["ratio"],
                      "detail": f"the area is {territory['ratio']:.2f} times the organisation's territory "
                                f"({answer['area']['text']} against {km2_text(territory['km2'])})"})
    found += budget_warnings(answer["budgets"])
    for language, devices in sorted(reach.by_language.items()):
        if language and not offered(alert.infos, language):
            found.append({"code": "language-not-offered", "language": language, "devices": devices,
                          "detail": f"{devices} reached {'device prefers' if devices == 1 else 'devices prefer'} "
                                    f"{language!r}; no info is in it"})
    if reach.devices == 0:
        found.append({"code": "no-device-reached", "detail": "no registered device follows a cell of this area"})
    if alert.status.value == "Actual":
        found.append({"code": "actual-alert", "detail": "this is an Actual alert: issuing it alerts the public"})
    return found


def budget_warnings(used_budgets: dict[str, Any]) -> list[dict[str, Any]]:
    """`over-budget` for each info's text over a channel's budget, and for the push payload."""
    found: list[dict[str, Any]] = []
    for entry in used_budgets["infos"]:
        for channel in ("cellBroadcast", "wea"):
            used = entry[channel]
            if used["over"]:
                found.append({"code": "over-budget", "channel": channel, "info": entry["info"],
                              "detail": f"info[{entry['info']}] ({entry['language']}): {used['length']} "
                                        f"{used['unit']}, {channel} carries {used['budget']}"})
    push = used_budgets["push"]
    if push["over"]:
        found.append({"code": "over-budget", "channel": "push", "info": None,
                      "detail": f"the signed alert is {push['length']} bytes; a push payload carries {push['budget']}"})
    return found

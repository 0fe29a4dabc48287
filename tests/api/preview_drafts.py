"""For the reach preview tests: draft alerts (any infos, areas, polygons, circles, geocodes),
a node whose devices are the test's own, and the preview call."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import httpx

from tests.conftest import unique_name
from tests.e2e.conftest import ISSUER_TOKEN, node_settings, start_node, stop_node
from tocsin.app import Node
from tocsin.cap.compose import cap_time
from tocsin.cluster.nats_server import NatsServer

CAP = {"Content-Type": "application/cap+xml"}
ISSUER = {**CAP, "Authorization": f"Bearer {ISSUER_TOKEN}"}

_ids = itertools.count(1)
SENDER = "prefecture-75@interieur.gouv.fr"


@dataclass(frozen=True, slots=True, kw_only=True)
class Zone:
    """One <area>: its description, polygons ("lat,lon ..." closed), circles ("lat,lon km"), geocodes."""

    desc: str = "Zone"
    polygons: tuple[str, ...] = ()
    circles: tuple[str, ...] = ()
    geocodes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Text:
    """One <info>: its language, texts and areas."""

    language: str = "fr-FR"
    headline: str = "Inondation"
    description: str = ""
    instruction: str = ""
    zones: tuple[Zone, ...] = field(default_factory=tuple)
    parameters: tuple[tuple[str, str], ...] = ()


def square(lat: float, lon: float, side_deg: float) -> str:
    """A closed CAP polygon: the square from (lat, lon) going north and east."""
    north, east = lat + side_deg, lon + side_deg
    east = east - 360.0 if east > 180.0 else east
    return f"{lat},{lon} {lat},{east} {north},{east} {north},{lon} {lat},{lon}"


def draft(*texts: Text, identifier: str | None = None, sender: str = SENDER, status: str = "Actual",
          msg_type: str = "Alert", references: str | None = None) -> bytes:
    """A CAP 1.2 alert with these infos (one French info over Paris by default)."""
    sent = datetime.now(UTC).replace(microsecond=0)
    texts = texts or (Text(zones=(Zone(polygons=(square(48.8, 2.25, 0.1),)),)),)
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?><alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">',
        f"<identifier>{identifier or f'FR-PREVIEW-{next(_ids)}-{sent.timestamp():.0f}'}</identifier>",
        f"<sender>{sender}</sender><sent>{cap_time(sent)}</sent><status>{status}</status>",
        f"<msgType>{msg_type}</msgType><scope>Public</scope>",
        f"<references>{references}</references>" if references else "",
    ]
    for text in texts:
        parts += [
            f"<info><language>{text.language}</language><category>Met</category><event>Inondation</event>",
            "<urgency>Immediate</urgency><severity>Severe</severity><certainty>Observed</certainty>",
            f"<expires>{cap_time(sent + timedelta(hours=1))}</expires><headline>{escape(text.headline)}</headline>",
            f"<description>{escape(text.description)}</description>" if text.description else "",
            f"<instruction>{escape(text.instruction)}</instruction>" if text.instruction else "",
            *(f"<parameter><valueName>{n}</valueName><value>{escape(v)}</value></parameter>"
              for n, v in text.parameters),
        ]
        for zone in text.zones:
            parts.append(f"<area><areaDesc>{escape(zone.desc)}</areaDesc>")
            parts += [f"<polygon>{p}</polygon>" for p in zone.polygons]
            parts += [f"<circle>{c}</circle>" for c in zone.circles]
            parts += [f"<geocode><valueName>{n}</valueName><value>{v}</value></geocode>" for n, v in zone.geocodes]
            parts.append("</area>")
        parts.append("</info>")
    parts.append("</alert>")
    return "".join(parts).encode()


@contextlib.asynccontextmanager
async def node_alone(tmp_path: Path, nats_server: NatsServer, **changes: object) -> AsyncIterator[Node]:
    """A node with a device bucket of its own: its counts are the test's devices only."""
    running = await start_node(node_settings(tmp_path, nats_server, device_bucket=unique_name("DEV_P"), **changes))
    try:
        yield running[0]
    finally:
        await stop_node(*running)


async def preview(http: httpx.AsyncClient, body: bytes, headers: dict[str, str] = ISSUER) -> dict[str, Any]:
    """The 200 answer of a preview."""
    answered = await http.post("/api/v1/alerts/preview", content=body, headers=headers)
    assert answered.status_code == 200, answered.text
    got: dict[str, Any] = answered.json()
    return got

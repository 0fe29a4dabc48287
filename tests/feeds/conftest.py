"""A running node for the feed tests, and the alerts they issue (Alert, Update, Cancel)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ISSUER_TOKEN, FakeClock, node_settings, start_node, stop_node
from tests.samples import alert_xml
from tocsin.app import Node
from tocsin.cap.compose import cap_time
from tocsin.cluster.nats_server import NatsServer

SENDER = "prefecture-75@interieur.gouv.fr"
ISSUER = {"Authorization": f"Bearer {ISSUER_TOKEN}", "Content-Type": "application/cap+xml"}
# A box in Nice (département 06, région 93) and the Paris box of tests/samples.py (75, 11).
NICE_BOX = "43.68,7.22 43.68,7.30 43.73,7.30 43.73,7.22 43.68,7.22"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def node(tmp_path: Path, nats_server: NatsServer, clock: FakeClock) -> AsyncIterator[Node]:
    running = await start_node(node_settings(tmp_path, nats_server, feed_window_s=600.0), clock=clock)
    try:
        yield running[0]
    finally:
        await stop_node(*running)


@pytest.fixture
async def http(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
        yield client


class Issued:
    """An alert this test issued: its identity, as a reference names it."""

    def __init__(self, identifier: str, sent: datetime, alert_id: str) -> None:
        self.identifier, self.sent, self.alert_id = identifier, sent, alert_id

    @property
    def reference(self) -> str:
        return f"{SENDER},{self.identifier},{cap_time(self.sent)}"


async def issue(http: httpx.AsyncClient, identifier: str, *, msg_type: str = "Alert", status: str = "Actual",
                polygon: str | None = None, references: list[Issued] | None = None,
                expires_in_s: float = 3600, sent: datetime | None = None, drawn: bool = True) -> Issued:
    """Issue one alert through the issuer API; it must be stored (201). `drawn=False`: an
    Update or Cancel without an area of its own (it goes where what it references went)."""
    sent = (sent or datetime.now(UTC)).replace(microsecond=0)
    body = alert_xml(identifier=identifier, sender=SENDER, status=status, msg_type=msg_type, sent=sent,
                     polygon=polygon or "48.80,2.25 48.80,2.42 48.90,2.42 48.90,2.25 48.80,2.25",
                     expires_in_s=expires_in_s, headline=f"{msg_type} {identifier}",
                     references=" ".join(r.reference for r in references) if references else None)
    if not drawn:
        body = re.sub(rb"<area>.*?</area>", b"", body, flags=re.DOTALL)
    response = await http.post("/api/v1/alerts", content=body, headers=ISSUER)
    assert response.status_code == 201, response.text
    return Issued(identifier, sent, response.json()["id"])

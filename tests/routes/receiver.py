"""A downstream CAP receiver, as a cell-broadcast gateway or aggregator would run one.

It checks what a real one would: the bearer token, the media type, the size, that the body
is CAP 1.2 XML (the OASIS XSD as referee, with a hardened parser) and that its signature
verifies with the deployment's key. A test tells it at run time to answer 503, 429 with
Retry-After, 400, or to hang, for a number of requests.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.cap.capdata import official_schema
from tocsin.signing import verify

CAP = "{urn:oasis:names:tc:emergency:cap:1.2}"
MAX_BODY_BYTES = 1_048_576


@dataclass(slots=True)
class Received:
    """One request that reached the receiver, with what it made of it."""

    at: float
    status: int  # what the receiver answered
    identifier: str
    msg_type: str
    cap_status: str
    alert_id: str
    seq: str
    node: str  # the tocsin node that posted it
    body: bytes


@dataclass(slots=True)
class Answer:
    status: int
    retry_after: str | None = None
    hang: bool = False


@dataclass
class Receiver:
    """The app and its state. `keys`: the deployment's JWKs by kid (the signature referee)."""

    keys: dict[str, dict[str, Any]]
    token: str = ""
    url: str = ""
    # What every link test (a System message) gets; planned answers are for alerts.
    link_status: int = 200
    requests: list[Received] = field(default_factory=list)
    planned: deque[Answer] = field(default_factory=deque)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    refusals: list[str] = field(default_factory=list)
    # The nodes whose requests are hanging now.
    hanging: list[str] = field(default_factory=list)

    def answer(self, status: int, times: int = 1, *, retry_after: str | None = None) -> None:
        """The next `times` requests get `status` (then 200 again)."""
        self.planned.extend(Answer(status, retry_after) for _ in range(times))

    def hang(self, times: int = 1) -> None:
        """The next `times` requests get no answer until `release()` (or the client gives up)."""
        self.released.clear()
        self.planned.extend(Answer(0, hang=True) for _ in range(times))

    def release(self) -> None:
        self.released.set()

    def alerts(self) -> list[Received]:
        """Every request but the link tests."""
        return [r for r in self.requests if r.cap_status != "System"]

    def accepted(self) -> list[Received]:
        """The alerts it accepted (2xx), in order."""
        return [r for r in self.alerts() if 200 <= r.status < 300]

    def links(self) -> list[Received]:
        return [r for r in self.requests if r.cap_status == "System"]

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/cap", self._post, methods=["POST"])])

    def _refuse(self, status: int, why: str) -> Response:
        self.refusals.append(why)
        return Response(why, status_code=status, media_type="text/plain")

    async def _post(self, request: Request) -> Response:
        arrived = time.time()
        if self.token and request.headers.get("authorization") != f"Bearer {self.token}":
            return self._refuse(401, "bad or missing bearer token")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/cap+xml":
            return self._refuse(415, "not application/cap+xml")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return self._refuse(413, "too large")
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
        try:
            root = etree.fromstring(body, parser)
        except etree.XMLSyntaxError:
            return self._refuse(400, "not XML")
        if root.tag != f"{CAP}alert" or not official_schema().validate(root):
            return self._refuse(400, "not CAP 1.2")
        sig, kid = request.headers.get("tocsin-signature", ""), request.headers.get("tocsin-key-id", "")
        if not verify(self.keys, kid, body, sig):
            return self._refuse(400, "signature does not verify")
        cap_status = root.findtext(f"{CAP}status") or ""
        if cap_status == "System":
            planned = Answer(self.link_status)
        else:
            planned = self.planned.popleft() if self.planned else Answer(200)
        if planned.hang:
            self.hanging.append(request.headers.get("tocsin-node", ""))
            await self.released.wait()
            planned = Answer(503)
        self.requests.append(Received(
            at=arrived, status=planned.status, identifier=root.findtext(f"{CAP}identifier") or "",
            msg_type=root.findtext(f"{CAP}msgType") or "", cap_status=cap_status,
            alert_id=request.headers.get("tocsin-alert-id", ""), seq=request.headers.get("tocsin-seq", ""),
            node=request.headers.get("tocsin-node", ""),
            body=body))
        headers = {"Retry-After": planned.retry_after} if planned.retry_after else {}
        return Response(b"", status_code=planned.status, headers=headers)

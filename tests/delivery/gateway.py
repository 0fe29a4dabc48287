"""A push gateway on loopback (HTTP/2 over TLS) and the Sender that posts to it.

The gateway checks what a push service checks of every request (a TTL, a Topic of at most
32 URL-safe characters, a body within 4096 bytes) and answers what the test tells it, per
token and in turn: "200", "500", "410", "429:<retry-after s>", "hang". The sender maps the
answers as a real channel does (2xx sent, 429 rate-limited with Retry-After, 5xx retry,
404/410 gone, other 4xx permanent); it also reads a registration's `token` (check_target),
the seam through which tests register push devices without configuring a real channel.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tocsin.delivery.http import gateway_client
from tocsin.delivery.model import FCM, Outcome, Push, Result
from tocsin.errors import PUSH_TARGET_INVALID, Rejected
from tocsin.settings import Settings

_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")


@dataclass(frozen=True, slots=True)
class Received:
    token: str
    node: str  # the sender's label (X-Node): which node's dispatcher sent it
    at: float  # time.time()
    answer: str
    topic: str
    ttl: int
    body: bytes


@dataclass
class Gateway:
    """What the fake received, and what it answers next."""

    received: list[Received] = field(default_factory=list)
    script: defaultdict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    default: str = "200"
    # Nodes (X-Node) whose requests hang, whatever the script says.
    hang_for: set[str] = field(default_factory=set)

    def answer_next(self, token: str) -> str:
        queued = self.script[token]
        return queued.pop(0) if queued else self.default

    def to(self, token: str) -> list[Received]:
        return [r for r in self.received if r.token == token]

    def to_node(self, node: str) -> list[Received]:
        return [r for r in self.received if r.node == node]

    def sent(self, token: str | None = None) -> list[Received]:
        return [r for r in self.received if r.answer == "200" and (token is None or r.token == token)]

    def app(self) -> Starlette:
        async def push(request: Request) -> Response:
            token = request.path_params["token"]
            body = await request.body()
            ttl, topic = request.headers.get("ttl", ""), request.headers.get("topic", "")
            if not ttl.isdigit() or not _TOPIC.fullmatch(topic) or len(body) > 4096:
                return JSONResponse({"error": "bad request"}, status_code=400)
            node = request.headers.get("x-node", "")
            answer = "hang" if node in self.hang_for else self.answer_next(token)
            self.received.append(Received(token, node, time.time(), answer, topic, int(ttl), body))
            if answer == "hang":
                await asyncio.sleep(3600)
            if answer.startswith("429"):
                return Response(status_code=429, headers={"Retry-After": answer.partition(":")[2] or "1"})
            return Response(status_code=int(answer))

        return Starlette(routes=[Route("/push/{token}", push, methods=["POST"])])


class GatewaySender:
    """Channel "fcm" through the fake gateway at `url`."""

    channel = FCM

    def __init__(self, url: str, settings: Settings, node: str = "") -> None:
        self._url = url
        self._node = node
        self._client = gateway_client(settings)

    def check_target(self, document: dict[str, Any], *, canary: bool) -> dict[str, Any]:
        token = document.get("token")
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise Rejected(PUSH_TARGET_INVALID, "token: 1 to 64 URL-safe characters")
        return {"token": token}

    def host(self, push: Push) -> str:
        return urlsplit(self._url).netloc

    async def send(self, push: Push) -> Result:
        headers = {"TTL": str(push.ttl_s), "Topic": push.topic, "Urgency": "high", "X-Node": self._node}
        try:
            response = await self._client.post(f"{self._url}/push/{push.target['token']}", content=push.payload,
                                               headers=headers)
        except httpx.TimeoutException:
            return Result(outcome=Outcome.RETRY, reason="timeout")
        except httpx.HTTPError as exc:
            return Result(outcome=Outcome.RETRY, reason=type(exc).__name__)
        status = response.status_code
        if 200 <= status < 300:
            return Result(outcome=Outcome.SENT, status=status)
        if status == 429:
            after = response.headers.get("retry-after", "")
            return Result(outcome=Outcome.RATE_LIMITED, reason="http-429", status=status,
                          retry_after_s=float(after) if after.isdigit() else None)
        if status >= 500:
            return Result(outcome=Outcome.RETRY, reason=f"http-{status}", status=status)
        if status in (404, 410):
            return Result(outcome=Outcome.GONE, reason=f"http-{status}", status=status)
        return Result(outcome=Outcome.PERMANENT, reason=f"http-{status}", status=status)

    async def aclose(self) -> None:
        await self._client.aclose()

"""A scripted tocsin node behind httpx.MockTransport: keys, registration and SSE streams."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from tocsin.geo.cells import CELL_RESOLUTION
from tocsin.signing import SigningKey


def sse_alert(seq: int, cap: str, key: SigningKey, *, sig: str | None = None, alert_id: str = "") -> bytes:
    """One `alert` event as the server writes it."""
    data = {"seq": seq, "id": alert_id or f"al_{seq}", "kid": key.kid,
            "sig": sig if sig is not None else key.sign(cap.encode("utf-8")), "cap": cap}
    return f"event: alert\nid: {seq}\ndata: {json.dumps(data)}\n\n".encode()


def sse_synced(node: str, seq: int) -> bytes:
    return f"event: synced\ndata: {json.dumps({'node': node, 'seq': seq})}\n\n".encode()


def problem(status: int, code: str) -> httpx.Response:
    body = {"type": "about:blank", "title": code, "status": status, "code": code, "detail": code, "errors": []}
    return httpx.Response(status, json=body, headers={"Content-Type": "application/problem+json"})


@dataclass
class FakeNode:
    """Answers like a node; each stream request takes the next script, then stays open."""

    key: SigningKey = field(default_factory=SigningKey.generate)
    # Per stream request: the body bytes, or a status code to refuse with.
    scripts: list[bytes | int] = field(default_factory=list)
    registrations: list[dict[str, Any]] = field(default_factory=list)
    streams: list[httpx.Request] = field(default_factory=list)
    register_status: int = 201
    chunk_size: int = 7
    # What the keys endpoint serves besides `key`: other keys, and key-set statements.
    extra_keys: list[dict[str, Any]] = field(default_factory=list)
    statements: list[dict[str, Any]] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/.well-known/tocsin/keys":
            keys = [self.key.public_jwk(), *self.extra_keys]
            return httpx.Response(200, json={"keys": keys, "statements": self.statements,
                                             "cell_resolution": CELL_RESOLUTION})
        if path == "/api/v1/devices" and request.method == "POST":
            return self._register(request)
        if path == "/api/v1/stream":
            self.streams.append(request)
            script = self.scripts.pop(0) if self.scripts else b""
            if isinstance(script, int):
                return problem(script, "device.unknown" if script == 401 else "server.internal")
            return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=self._body(script, hold=not self.scripts))
        return problem(404, "request.not-found")

    def _register(self, request: httpx.Request) -> httpx.Response:
        document = json.loads(request.content)
        if self.register_status != 201:
            return problem(self.register_status, "device.invalid")
        self.registrations.append(document)
        n = len(self.registrations)
        return httpx.Response(201, json={
            "id": f"dev_{n}", "token": f"dev_{n}.secret", "cells": document["cells"],
            "cell_resolution": CELL_RESOLUTION,
        })

    async def _body(self, script: bytes, *, hold: bool) -> AsyncIterator[bytes]:
        for i in range(0, len(script), self.chunk_size):
            yield script[i : i + self.chunk_size]
        if hold:
            await asyncio.Event().wait()  # the last script stays open, as a live stream does


class Router(httpx.AsyncBaseTransport):
    """Several fake nodes, by host."""

    def __init__(self, nodes: dict[str, FakeNode]) -> None:
        self.nodes = nodes
        self.hits: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        self.hits.append(host)
        return await self.nodes[host].handle(request)

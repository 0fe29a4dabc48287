"""A node on loopback with small edge limits, and raw-socket clients that misbehave on purpose."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import node_settings, start_node, stop_node
from tocsin.app import Node
from tocsin.cluster.nats_server import NatsServer

# What a node may grow by while an attack in these tests runs (a node at rest: ~100 MB).
RSS_GROWTH_BOUND_MB = 64


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def problem(self) -> dict[str, Any]:
        assert self.headers.get("content-type") == "application/problem+json", self.headers
        document: dict[str, Any] = json.loads(self.body)
        return document


def parse(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return Answer(status, headers, body)


def port_of(url_or_listen: str) -> int:
    return int(url_or_listen.rsplit(":", 1)[1])


async def connect(port: int, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def exchange(port: int, data: bytes, *, source: str = "127.0.0.1", timeout_s: float = 5.0) -> Answer:
    """Send `data`, read to the end of the connection (or of one Content-Length answer)."""
    reader, writer = await connect(port, source)
    try:
        writer.write(data)
        async with asyncio.timeout(timeout_s):
            return await read_answer(reader)
    finally:
        writer.close()


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    head = await reader.readuntil(b"\r\n\r\n")
    answer = parse(head)
    length = answer.headers.get("content-length")
    answer.body = await reader.readexactly(int(length)) if length is not None else await reader.read()
    return answer


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def served(http: httpx.AsyncClient, url: str) -> float:
    """A well-behaved client's request on a fresh connection: its time, asserting a 200."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with httpx.AsyncClient(timeout=3) as fresh:
        response = await fresh.get(f"{url}/livez")
    assert response.status_code == 200, response.text
    return loop.time() - started


@pytest.fixture
async def edge_node(tmp_path: Path, nats_server: NatsServer, request: pytest.FixtureRequest) -> AsyncIterator[Node]:
    """A node with the limits a test names (`@pytest.mark.parametrize("edge_node", [{...}], indirect=True)`)."""
    changes: dict[str, Any] = dict(getattr(request, "param", {}))
    running = await start_node(node_settings(tmp_path, nats_server, **changes))
    try:
        yield running[0]
    finally:
        await stop_node(*running)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client

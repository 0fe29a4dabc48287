"""The listener's limits: connections per node and per source, header size, count and deadline,
body size and deadline, checked in uvicorn's httptools protocol before any route runs.

uvicorn bounds none of these with httptools (its `limit_concurrency` counts tasks too and
answers plain text). `edge_protocols` makes subclasses of its HTTP and WebSocket protocols
that hold one `Edge`: a refusal here is a pre-built problem+json response written straight
to the socket, then the connection closes; the work it would have cost never starts.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn._types import ASGI3Application

from tocsin.api.problems import MEDIA_TYPE, problem_body
from tocsin.errors import (
    BAD_REQUEST, BODY_TIMEOUT, HEADER_TIMEOUT, HEADERS_TOO_LARGE, NODE_FULL, SOURCE_FULL, TOO_LARGE, Problem,
)
from tocsin.settings import Settings

# Open files a node needs besides its connections: NATS, the ledger, logs, the disk checks.
FD_RESERVE = 128
# How long a refused connection's late bytes are read and dropped before it closes.
LINGER_S = 0.5
# A node refused a connection for being full this recently still counts as at its limit.
FULL_FOR_S = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class EdgeLimits:
    """The bounds every request meets before a route sees it (Settings fields, same names)."""

    max_header_bytes: int
    max_headers: int
    header_timeout_s: float
    body_timeout_s: float
    max_body_bytes: int
    # GAZ: a gazetteer import (PUT under AREAS_IMPORT_PATH, deployment admins only, its route
    # checks the token before reading a byte) may carry a GeoJSON file up to this size.
    max_import_bytes: int = 0

    @classmethod
    def from_settings(cls, s: Settings) -> EdgeLimits:
        return cls(
            max_header_bytes=s.max_header_bytes, max_headers=s.max_headers, header_timeout_s=s.header_timeout_s,
            body_timeout_s=s.body_timeout_s, max_body_bytes=s.max_cap_bytes, max_import_bytes=s.max_areas_import_bytes,
        )

    def body_limit(self, target: bytes) -> int:
        """The largest body a request for `target` (its path and query) may carry."""
        if target.startswith(AREAS_IMPORT_PATH):
            return max(self.max_body_bytes, self.max_import_bytes)
        return self.max_body_bytes


AREAS_IMPORT_PATH = b"/api/v1/admin/areas/"


def open_file_budget(wanted: int) -> int:
    """`wanted` connections, or fewer when the process may not open that many files."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - FD_RESERVE))


@dataclass(slots=True)
class ConnectionGate:
    """Counts one listener's open connections, in all and per source address."""

    max_total: int
    max_per_source: int
    exempt: frozenset[str] = frozenset()  # trusted proxies: every client comes through them
    total: int = 0
    by_source: Counter[str] = field(default_factory=Counter)
    full_at: float = float("-inf")  # monotonic time of the last refusal for being full

    def admit(self, source: str) -> Problem | None:
        """Count the connection in, or the problem that refuses it (nothing counted)."""
        if self.total >= self.max_total:
            self.full_at = time.monotonic()
            return NODE_FULL
        if source not in self.exempt and self.by_source[source] >= self.max_per_source:
            return SOURCE_FULL
        self.total += 1
        self.by_source[source] += 1
        return None

    def release(self, source: str) -> None:
        self.total -= 1
        self.by_source[source] -= 1
        if self.by_source[source] <= 0:
            del self.by_source[source]

    @property
    def is_full(self) -> bool:
        """At its limit now, or refused a connection for it in the last few seconds."""
        return self.total >= self.max_total or time.monotonic() - self.full_at < FULL_FOR_S

    def as_json(self) -> dict[str, Any]:
        return {"open": self.total, "max": self.max_total, "sources": len(self.by_source), "full": self.is_full}


@dataclass(slots=True, kw_only=True)
class Edge:
    """The limits and the gates of a node's listeners, shared by every connection."""

    limits: EdgeLimits
    public: ConnectionGate
    issuer: ConnectionGate | None = None
    issuer_port: int | None = None  # connections to this local port use the issuer gate
    on_refused: Callable[[str], None] = lambda code: None

    @classmethod
    def from_settings(cls, s: Settings, on_refused: Callable[[str], None]) -> Edge:
        exempt = frozenset(a.strip() for a in s.trusted_proxies.split(",") if a.strip())
        budget = open_file_budget(s.max_connections + (s.max_issuer_connections if s.issuer_listen else 0))
        public = ConnectionGate(min(s.max_connections, budget), s.max_connections_per_source, exempt)
        issuer = ConnectionGate(s.max_issuer_connections, s.max_issuer_connections, exempt) if s.issuer_listen else None
        return cls(limits=EdgeLimits.from_settings(s), public=public, issuer=issuer, on_refused=on_refused)

    def gate_for(self, transport: asyncio.BaseTransport) -> ConnectionGate:
        sockname = transport.get_extra_info("sockname")
        port = sockname[1] if isinstance(sockname, tuple) and len(sockname) > 1 else None
        if self.issuer is not None and port is not None and port == self.issuer_port:
            return self.issuer
        return self.public


def refusal_bytes(problem: Problem, detail: str = "") -> bytes:
    """A whole HTTP/1.1 response carrying the problem; the connection closes after it."""
    body = json.dumps(problem_body(problem, detail)).encode()
    head = (
        f"HTTP/1.1 {problem.status} {HTTPStatus(problem.status).phrase}\r\n"
        f"content-type: {MEDIA_TYPE}\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class _Refusal(Exception):
    """Raised in a parser callback to stop parsing; data_received writes the problem."""

    def __init__(self, problem: Problem, detail: str) -> None:
        super().__init__(problem.code)
        self.problem = problem
        self.detail = detail


def _source(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


class EdgeHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the edge's limits (one instance per connection)."""

    edge: ClassVar[Edge]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gate: ConnectionGate | None = None  # set while this connection is counted
        self._source_addr = ""
        self._refused = False
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._body_limit = 0
        self._timer: asyncio.TimerHandle | None = None
        self._running: RequestResponseCycle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        gate, source = self.edge.gate_for(transport), _source(transport)
        problem = gate.admit(source)
        if problem is not None:
            self._refuse(problem, "")
            return
        self._gate, self._source_addr = gate, source
        self._arm(self.edge.limits.header_timeout_s, HEADER_TIMEOUT)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._gate is not None:
            self._gate.release(self._source_addr)
            self._gate = None
        # A pipelined request replaces `self.cycle`; the response still running (a device
        # stream) must hear of the disconnect too, or its device stays "connected" for ever.
        running = self._running
        if running is not None and running is not self.cycle and not running.response_complete:
            running.disconnected = True
            running.message_event.set()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:  # a callback's _Refusal arrives as its cause
            refusal = exc.__cause__ or exc.__context__
            if isinstance(refusal, _Refusal):
                self._refuse(refusal.problem, refusal.detail)
            else:
                self._refuse(BAD_REQUEST, "the request is not valid HTTP/1.1")
            return
        if self._in_head and self._head_bytes > self.edge.limits.max_header_bytes:
            self._refuse(HEADERS_TOO_LARGE, f"more than {self.edge.limits.max_header_bytes} bytes of headers")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0
        if self._timer is None:
            self._arm(self.edge.limits.header_timeout_s, HEADER_TIMEOUT)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.edge.limits.max_headers:
            raise _Refusal(HEADERS_TOO_LARGE, f"more than {self.edge.limits.max_headers} headers")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        self._in_head = False
        declared = dict(self.headers).get(b"content-length", b"0")
        limit = self._body_limit = self.edge.limits.body_limit(bytes(self.url))
        if declared.isdigit() and int(declared) > limit:
            raise _Refusal(TOO_LARGE, f"{int(declared)} bytes; the limit is {limit}")
        super().on_headers_complete()
        self._arm(self.edge.limits.body_timeout_s, BODY_TIMEOUT)

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if cycle is not None and len(cycle.body) + len(body) > self._body_limit:
            raise _Refusal(TOO_LARGE, f"more than {self._body_limit} bytes")
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_head, self._head_bytes = True, 0  # what follows is the next request's head
        super().on_message_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        self._running = cycle
        super()._start_asgi_task(cycle, app)

    def handle_websocket_upgrade(self) -> None:
        self._disarm()
        gate, self._gate = self._gate, None  # the WebSocket protocol releases it when it ends
        super().handle_websocket_upgrade()
        protocol = self.transport.get_protocol()
        if isinstance(protocol, EdgeWsProtocol) and gate is not None:
            protocol.counted = (gate, self._source_addr)
        elif gate is not None:
            gate.release(self._source_addr)

    def _arm(self, delay_s: float, problem: Problem) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay_s, self._timed_out, problem)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self, problem: Problem) -> None:
        self._timer = None
        running = self._running
        if running is not None and running.response_started and not running.response_complete:
            # A response is on the wire (a stream with pipelined bytes after it): no room
            # for a problem; the connection just closes.
            self.edge.on_refused(problem.code)
            self._refused = True
            self.transport.close()
            return
        self._refuse(problem, "")

    def _refuse(self, problem: Problem, detail: str) -> None:
        """Write the problem, close, and count it; reading stops at once."""
        self._refused = True
        self._disarm()
        self.edge.on_refused(problem.code)
        if self.cycle is not None:
            self.cycle.disconnected = True  # an app still reading the body hears the end
            self.cycle.message_event.set()
        if not self.transport.is_closing():
            self.transport.write(refusal_bytes(problem, detail))
            # Closing with unread bytes in the socket resets it, and the client may lose the
            # answer: end our side, drop what still comes (data_received), close a moment later.
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)


class EdgeWsProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol; gives back the connection's place in its gate."""

    counted: tuple[ConnectionGate, str] | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.counted is not None:
            gate, source = self.counted
            self.counted = None
            gate.release(source)
        super().connection_lost(exc)


def edge_protocols(edge: Edge) -> tuple[type[EdgeHttpProtocol], type[EdgeWsProtocol]]:
    """Protocol classes for uvicorn.Config(http=..., ws=...) bound to this node's `edge`."""
    http = type("NodeHttpProtocol", (EdgeHttpProtocol,), {"edge": edge})
    ws = type("NodeWsProtocol", (EdgeWsProtocol,), {})
    return http, ws

"""The Web Push canary's push service: a loopback HTTP/1.1 server that takes what this node's
Web Push sender posts, and checks it as a push service would (RFC 8030, RFC 8292 VAPID,
RFC 8291 `aes128gcm`), before the canary decrypts it like a browser.

It listens on 127.0.0.1 on a port the system chooses, under a random path: only this node's
sender is given the endpoint (in the canary's registration), and nothing else on the machine
can guess it. Each request is bounded (head, headers, body, time) and refused with the status
a push service answers: 404 another path, 411 no length, 413 over 4096 bytes, 400 not
aes128gcm or no TTL, 401/403 no or a bad VAPID token. `fail_with` makes it answer every push
with that status (a push service that is down), for tests and drills.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tocsin.channels.webpush_crypto import load_public
from tocsin.delivery.jws import b64url_decode

log = logging.getLogger(__name__)

# RFC 8030 §7.2: a push service takes at least 4096 bytes of payload; this one no more.
MAX_PUSH_BYTES = 4096
MAX_HEAD_BYTES = 8192
MAX_HEADERS = 64
REQUEST_TIMEOUT_S = 10.0
# RFC 8292 §2: a token valid for more than 24 hours is refused.
MAX_VAPID_LIFETIME_S = 86400
_REASONS = {201: "Created", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            410: "Gone", 411: "Length Required", 413: "Payload Too Large", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def check_vapid(authorization: str, audience: str, now: float) -> None:
    """RFC 8292: `vapid t=<ES256 JWT>, k=<P-256 public key>`, the JWT for this push service.

    Raises:
        Refused: 401 no token, 403 a token this push service does not take.
    """
    scheme, _, params = authorization.partition(" ")
    if scheme.lower() != "vapid":
        raise Refused(401, "no vapid authorization")
    fields = dict(part.strip().partition("=")[::2] for part in params.split(","))
    token, key = fields.get("t", ""), fields.get("k", "")
    try:
        header_b64, claims_b64, sig_b64 = token.split(".")
        header = json.loads(b64url_decode(header_b64))
        claims = json.loads(b64url_decode(claims_b64))
        signature = b64url_decode(sig_b64)
        public = load_public(b64url_decode(key))
    except ValueError as exc:
        raise Refused(403, f"unreadable vapid token: {exc}") from None
    if not isinstance(header, dict) or header.get("alg") != "ES256" or len(signature) != 64:
        raise Refused(403, "the vapid token is not ES256")
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        public.verify(der, f"{header_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise Refused(403, "the vapid signature does not match its key") from None
    if not isinstance(claims, dict) or claims.get("aud") != audience:
        raise Refused(403, f"the vapid audience is not {audience}")
    exp = claims.get("exp")
    if not isinstance(exp, int) or not now < exp <= now + MAX_VAPID_LIFETIME_S:
        raise Refused(403, "the vapid token is expired or valid for more than 24 hours")
    if not isinstance(claims.get("sub"), str) or not claims["sub"].startswith(("mailto:", "https:")):
        raise Refused(403, "the vapid token has no contact (sub)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class PushReceiver:
    """Takes pushes on 127.0.0.1; each one checked is handed to `on_push(body, headers)`."""

    on_push: Callable[[bytes, dict[str, str]], None]
    fail_with: int | None = None
    wall: Callable[[], float] = time.time
    path: str = field(default_factory=lambda: f"/push/{secrets.token_urlsafe(18)}")
    taken: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    _server: asyncio.Server | None = None
    port: int = 0

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        return self.origin + self.path

    @property
    def serving(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", self.port, limit=MAX_HEAD_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT_S):
                        request = await _read_request(reader)
                except Refused as exc:
                    self._count(exc.reason)
                    await _answer(writer, exc.status, close=True)
                    return
                if request is None:
                    return
                status = self._judge(request)
                await _answer(writer, status, location=f"{self.path}/m/{self.taken}" if status == 201 else None)
                if status == 201:
                    self.on_push(request.body, request.headers)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def _judge(self, request: Request) -> int:
        try:
            self._check(request)
        except Refused as exc:
            self._count(exc.reason)
            return exc.status
        if self.fail_with is not None:
            self._count(f"told to fail with {self.fail_with}")
            return self.fail_with
        self.taken += 1
        return 201

    def _check(self, request: Request) -> None:
        if request.path != self.path:
            raise Refused(404, "no such subscription")
        if request.method != "POST":
            raise Refused(404, "pushes are POSTs")
        check_vapid(request.headers.get("authorization", ""), self.origin, self.wall())
        if request.headers.get("content-encoding", "").lower() != "aes128gcm":
            raise Refused(400, "the payload is not aes128gcm")
        if not request.headers.get("ttl", "").isdigit():
            raise Refused(400, "no TTL header")

    def _count(self, reason: str) -> None:
        if len(self.refused) < 32 or reason in self.refused:
            self.refused[reason] = self.refused.get(reason, 0) + 1
        log.debug("push refused", extra={"reason": reason[:200]})


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    """One request, or None at a clean end of the connection.

    Raises:
        Refused: a head or body this push service does not take.
    """
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    except asyncio.LimitOverrunError:
        raise Refused(400, "the request head is too large") from None
    lines = head.decode("latin-1").split("\r\n")[:-2]
    parts = lines[0].split(" ")
    if len(parts) != 3 or len(lines) - 1 > MAX_HEADERS:
        raise Refused(400, "not an HTTP/1.1 request")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise Refused(400, "a header line without a colon")
        headers[name.strip().lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise Refused(411, "a push has a Content-Length")
    length = headers.get("content-length", "0")
    if not length.isdigit():
        raise Refused(411, "no Content-Length")
    if int(length) > MAX_PUSH_BYTES:
        raise Refused(413, f"{length} bytes; a push holds at most {MAX_PUSH_BYTES}")
    body = await reader.readexactly(int(length))
    return Request(method=parts[0], path=parts[1], headers=headers, body=body)


async def _answer(writer: asyncio.StreamWriter, status: int, *, location: str | None = None, close: bool = False) -> None:
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", "content-length: 0"]
    if location is not None:
        head.append(f"location: {location}")
    if close:
        head.append("connection: close")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
    await writer.drain()

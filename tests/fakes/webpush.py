"""A Web Push service and the browsers behind it, for tests and for the fault suite.

The push service side checks what a real one checks (RFC 8030, RFC 8292) and answers as
the real ones do; the browser side decrypts each message with http_ece (an implementation
independent of tocsin's) and keeps what the browser holds.

In a test (same event loop, HTTP/2 over TLS with the test CA of tests/fakes/tls.py):

    async with webpush_fake() as fake:
        subscription = fake.subscribe(server_key=vapid_public_b64)  # what toJSON() gives
        fake.fail("429", times=1, retry_after="7")                  # or for one subscription
        ... fake.subscription(id).held ...

POST /push/<id> is checked in this order: an unknown or unsubscribed id -> 410; a failure
told at run time (400, 429 with Retry-After, 500, 503, 410, 413, or hang: no answer until the
fake stops); Authorization `vapid t=<JWT>, k=<key>` missing or unreadable -> 401, the JWT
not ES256-signed by k, its aud not this origin, exp past or more than 24 h away, sub not
mailto: or https: -> 401, k not the key the subscription was made with -> 403; TTL not a
non-negative integer, Urgency not very-low/low/normal/high, Topic over 32 base64url
characters, Content-Encoding not aes128gcm -> 400; a body over 4096 bytes -> 413; else
201 with a Location. An accepted body the browser cannot decrypt is counted in
`undecryptable` (a real service cannot know; the browser drops it).

Plain UnifiedPush endpoints (the FPAS API's `UNIFIED_PUSH`, docs/fpas.md) come from
`subscribe_plain()`: POST /up/<id> takes the body as the message itself (no keys, no
VAPID, as a distributor's push server does): over 4096 bytes 413, an unknown endpoint 404,
one unsubscribed 410, a failure told at run time, else 201.

As a process, for the fault suite:

    python -m tests.fakes.webpush --port P --state FILE [--ca-dir DIR]

prints one JSON line on stdout once it listens: {"url": "https://127.0.0.1:P", "ca_file":
PATH} (the node trusts it through TOCSIN_PUSH_CA_FILE, and needs
TOCSIN_WEBPUSH_HOSTS=127.0.0.1). With --ca-dir, the TLS files are DIR/ca.pem, server.pem and
server-key.pem, written there by the first fake that finds none (start the fakes one after
the other): every fake of a run then shares one CA, the one file a node trusts. FILE gets
one JSON line per event, flushed at once:
  {"event": "ready", "url": ..., "ca_file": ...}
  {"event": "message", "subscription": ID, "topic": T, "alert_id": ID|null, "seq": N|null,
   "sha256": HEX of the plaintext, "at": UNIX}
  {"event": "undecryptable", "subscription": ID, "at": UNIX}
The control API on the same port (JSON bodies):
  POST /control/subscribe {"server_key": B64URL|null} -> the subscription JSON plus "id"
  POST /control/unsubscribe {"id": ID}
  POST /control/fail {"mode": "400"|"429"|"500"|"503"|"410"|"413"|"hang"|"slow", "subscription": ID|null,
                      "times": N|null (null: until cleared), "retry_after": "S"|HTTP-date|null,
                      "delay_s": S (slow: the push is taken at once, its 201 comes S later)}
  POST /control/clear                         every failure mode off
  GET  /control/state -> {"requests": N, "subscriptions": {ID: {"requests": N,
                          "received": N, "held": [{"topic", "alert_id", "sha256"}...]}}}
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import http_ece
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.h2 import h2_server
from tests.fakes.tls import GatewayCa, gateway_ca

MAX_BODY = 4096
URGENCIES = ("very-low", "low", "normal", "high")
_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")
_AUTH = re.compile(r"vapid\s+t=([A-Za-z0-9_.-]+)\s*,\s*k=([A-Za-z0-9_=-]+)\s*")
MODES = ("400", "429", "500", "503", "410", "413", "hang", "slow")
# The longest a "slow" answer may be told to wait.
MAX_DELAY_S = 60.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(slots=True)
class Message:
    """One push the browser decrypted."""

    topic: str | None
    urgency: str | None
    ttl: int
    payload: bytes
    headers: dict[str, str]

    @property
    def document(self) -> Any:
        return json.loads(self.payload)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.payload).hexdigest()


@dataclass(slots=True)
class Subscription:
    """A browser's subscription: its keys, and what it received and holds."""

    id: str
    endpoint: str
    private: ec.EllipticCurvePrivateKey
    auth: bytes
    server_key: str | None
    active: bool = True
    requests: int = 0
    received: list[Message] = field(default_factory=list)
    # What the user sees: a message with the Topic of one held replaces it.
    held: list[Message] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """What PushSubscription.toJSON() gives."""
        public = self.private.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        return {"endpoint": self.endpoint, "expirationTime": None,
                "keys": {"p256dh": _b64(public), "auth": _b64(self.auth)}}

    def take(self, message: Message) -> None:
        self.received.append(message)
        if message.topic is not None:
            self.held = [m for m in self.held if m.topic != message.topic]
        self.held.append(message)


@dataclass(slots=True)
class Failure:
    mode: str
    subscription: str | None
    remaining: int | None  # None: until cleared
    retry_after: str | None
    delay_s: float = 0.0  # "slow": the message is taken at once, its 201 comes this late


class FakePushService:
    """The push service (an ASGI app) and its browsers."""

    def __init__(self, *, on_event: Callable[[dict[str, Any]], None] = lambda event: None) -> None:
        self.url = ""  # set once served: https://127.0.0.1:PORT
        self.subscriptions: dict[str, Subscription] = {}
        self.failures: list[Failure] = []
        self.requests = 0
        self.answers: list[int] = []
        self.undecryptable = 0
        self.hanging = 0
        self._released = asyncio.Event()
        self._on_event = on_event
        self.app = Starlette(routes=[
            Route("/push/{sub_id}", self._push, methods=["POST"]),
            # A plain UnifiedPush endpoint (unifiedpush.org/developers/spec/server/): what
            # a distributor's push server takes from an application server.
            Route("/up/{sub_id}", self._push_plain, methods=["POST"]),
            Route("/control/subscribe", self._control_subscribe, methods=["POST"]),
            Route("/control/unsubscribe", self._control_unsubscribe, methods=["POST"]),
            Route("/control/fail", self._control_fail, methods=["POST"]),
            Route("/control/clear", self._control_clear, methods=["POST"]),
            Route("/control/state", self._control_state, methods=["GET"]),
        ])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    # -- the browser side, and telling it to fail ----------------------------------------

    def subscribe(self, *, server_key: str | None = None) -> dict[str, Any]:
        """A new browser subscription (made with the applicationServerKey `server_key`, if
        given: a push signed with another key is then refused 403); its toJSON() form."""
        sub_id = uuid.uuid4().hex
        sub = Subscription(id=sub_id, endpoint=f"{self.url}/push/{sub_id}", private=ec.generate_private_key(
            ec.SECP256R1()), auth=os.urandom(16), server_key=server_key)
        self.subscriptions[sub_id] = sub
        return sub.as_json()

    def subscribe_plain(self) -> str:
        """A plain UnifiedPush endpoint (no keys: the message is posted as it is)."""
        sub_id = uuid.uuid4().hex
        self.subscriptions[sub_id] = Subscription(id=sub_id, endpoint=f"{self.url}/up/{sub_id}",
                                                  private=ec.generate_private_key(ec.SECP256R1()), auth=b"",
                                                  server_key=None)
        return self.subscriptions[sub_id].endpoint

    def subscription(self, endpoint_or_id: str) -> Subscription:
        return self.subscriptions[endpoint_or_id.rsplit("/", 1)[-1]]

    def unsubscribe(self, endpoint_or_id: str) -> None:
        self.subscription(endpoint_or_id).active = False

    def fail(self, mode: str, *, subscription: str | None = None, times: int | None = None,
             retry_after: str | None = None, delay_s: float = 0.0) -> None:
        """Answer `mode` (one of MODES) to the pushes of one subscription or of all, `times`
        times or until `clear`. "slow" is no failure: the push is checked and taken (the
        browser has it) and the 201 comes `delay_s` later, as from a loaded service; a sender
        that dies meanwhile never learns it was taken (the fault suite's repeats)."""
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {MODES}")
        if not 0.0 <= delay_s <= MAX_DELAY_S:
            raise ValueError(f"delay_s must be within 0..{MAX_DELAY_S}")
        sub_id = subscription.rsplit("/", 1)[-1] if subscription else None
        self.failures.append(Failure(mode, sub_id, times, retry_after, delay_s))

    def clear(self) -> None:
        self.failures.clear()

    def release(self) -> None:
        """Let every hanging request end (the fake is stopping)."""
        self._released.set()

    # -- the push service -------------------------------------------------------------

    def _failure_for(self, sub_id: str) -> Failure | None:
        ordered = [f for f in self.failures if f.subscription == sub_id] + [
            f for f in self.failures if f.subscription is None]
        if not ordered:
            return None
        found = ordered[0]
        if found.remaining is not None:
            found.remaining -= 1
            if found.remaining <= 0:
                self.failures.remove(found)
        return found

    async def _push(self, request: Request) -> Response:
        self.requests += 1
        response = await self._answer(request)
        self.answers.append(response.status_code)
        return response

    async def _answer(self, request: Request) -> Response:
        # The body is read (bounded) before any answer: an HTTP/2 stream answered while the
        # client still sends takes the server's connection down with it (hypercorn).
        body = await _bounded_body(request)
        sub = self.subscriptions.get(request.path_params["sub_id"])
        if sub is None or not sub.active:
            return _error(410, "push subscription has unsubscribed or expired")
        sub.requests += 1
        failure = self._failure_for(sub.id)
        if failure is not None and failure.mode != "slow":
            return await self._failed(failure)
        refused = self._check_vapid(request, sub) or self._check_headers(request)
        if refused is not None:
            return refused
        if body is None:
            return _error(413, f"payload over {MAX_BODY} bytes")
        self._deliver(sub, request, body)
        if failure is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), failure.delay_s)
        return Response(status_code=201, headers={"Location": f"{self.url}/message/{uuid.uuid4().hex}",
                                                  "TTL": request.headers["ttl"]})

    async def _push_plain(self, request: Request) -> Response:
        """POST /up/<id>: the UnifiedPush server spec's checks, in this order: the body read
        (over 4096 bytes: 413), an unknown endpoint 404 (one unsubscribed: 410), a failure
        told at run time, then 201; the body is the message the app receives."""
        self.requests += 1
        body = await _bounded_body(request)
        sub = self.subscriptions.get(request.path_params["sub_id"])
        response: Response
        if sub is None or not sub.endpoint.endswith(f"/up/{sub.id}"):
            response = _error(404, "no such endpoint")
        elif not sub.active:
            response = _error(410, "endpoint unregistered")
        elif body is None:
            response = _error(413, f"message over {MAX_BODY} bytes")
        else:
            sub.requests += 1
            failure = self._failure_for(sub.id)
            if failure is not None and failure.mode != "slow":
                response = await self._failed(failure)
            else:
                ttl = request.headers.get("ttl", "0")
                sub.take(Message(topic=None, urgency=request.headers.get("urgency"),
                                 ttl=int(ttl) if ttl.isdigit() else 0, payload=body, headers={}))
                response = Response(status_code=201)
        self.answers.append(response.status_code)
        return response

    async def _failed(self, failure: Failure) -> Response:
        if failure.mode == "hang":
            self.hanging += 1
            try:
                await self._released.wait()
            finally:
                self.hanging -= 1
            return _error(503, "stopping")
        status = int(failure.mode)
        headers = {"Retry-After": failure.retry_after} if failure.retry_after else None
        return _error(status, f"told to answer {status}", headers)

    def _check_vapid(self, request: Request, sub: Subscription) -> Response | None:
        match = _AUTH.fullmatch(request.headers.get("authorization", ""))
        if match is None:
            return _error(401, "Authorization must be vapid t=<JWT>, k=<key>")
        token, key_text = match.groups()
        try:
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _unb64(key_text))
            claims = jwt.decode(token, key=public, algorithms=["ES256"], audience=self.url,
                                options={"require": ["aud", "exp", "sub"]})
        except (ValueError, jwt.PyJWTError) as exc:
            return _error(401, f"VAPID token refused: {exc}")
        if claims["exp"] > time.time() + 24 * 3600:
            return _error(401, "VAPID token expires more than 24 hours from now")
        if not isinstance(claims["sub"], str) or not claims["sub"].startswith(("mailto:", "https:")):
            return _error(401, "VAPID sub must be a mailto: or https: URL")
        if sub.server_key is not None and key_text.rstrip("=") != sub.server_key.rstrip("="):
            return _error(403, "the VAPID key is not the one the subscription was made with")
        return None

    def _check_headers(self, request: Request) -> Response | None:
        ttl = request.headers.get("ttl")
        if ttl is None or not ttl.isdigit():
            return _error(400, "TTL must be a non-negative integer")
        urgency = request.headers.get("urgency")
        if urgency is not None and urgency not in URGENCIES:
            return _error(400, f"Urgency must be one of {URGENCIES}")
        topic = request.headers.get("topic")
        if topic is not None and not _TOPIC.fullmatch(topic):
            return _error(400, "Topic must be at most 32 base64url characters")
        if request.headers.get("content-encoding") != "aes128gcm":
            return _error(400, "Content-Encoding must be aes128gcm")
        return None

    def _deliver(self, sub: Subscription, request: Request, body: bytes) -> None:
        """What the browser does with an accepted message: decrypt, show."""
        try:
            payload = http_ece.decrypt(body, private_key=sub.private, auth_secret=sub.auth, version="aes128gcm")
        except Exception:  # http_ece raises its own and cryptography's errors
            self.undecryptable += 1
            self._on_event({"event": "undecryptable", "subscription": sub.id, "at": time.time()})
            return
        headers = {k: v for k, v in request.headers.items() if k in ("ttl", "urgency", "topic", "content-encoding",
                                                                     "content-type", "authorization")}
        message = Message(topic=request.headers.get("topic"), urgency=request.headers.get("urgency"),
                          ttl=int(request.headers["ttl"]), payload=payload, headers=headers)
        sub.take(message)
        self._on_event({"event": "message", "subscription": sub.id, "topic": message.topic,
                        **_alert_of(payload), "sha256": message.sha256, "at": time.time()})

    # -- the control API (the fault suite's process) -------------------------------------

    async def _control_subscribe(self, request: Request) -> Response:
        body = await _json_body(request)
        server_key = body.get("server_key")
        subscription = self.subscribe(server_key=server_key if isinstance(server_key, str) else None)
        return JSONResponse({**subscription, "id": subscription["endpoint"].rsplit("/", 1)[-1]})

    async def _control_unsubscribe(self, request: Request) -> Response:
        body = await _json_body(request)
        try:
            self.unsubscribe(str(body["id"]))
        except KeyError:
            return _error(404, "no such subscription")
        return JSONResponse({"ok": True})

    async def _control_fail(self, request: Request) -> Response:
        body = await _json_body(request)
        times = body.get("times")
        try:
            self.fail(str(body.get("mode")), subscription=body.get("subscription") or None,
                      times=int(times) if times is not None else None,
                      retry_after=str(body["retry_after"]) if body.get("retry_after") is not None else None,
                      delay_s=float(body.get("delay_s") or 0.0))
        except (ValueError, TypeError) as exc:
            return _error(400, str(exc))
        return JSONResponse({"ok": True})

    async def _control_clear(self, request: Request) -> Response:
        self.clear()
        return JSONResponse({"ok": True})

    async def _control_state(self, request: Request) -> Response:
        return JSONResponse({"requests": self.requests, "undecryptable": self.undecryptable, "subscriptions": {
            sub.id: {"active": sub.active, "requests": sub.requests, "received": len(sub.received),
                     "held": [{"topic": m.topic, **_alert_of(m.payload), "sha256": m.sha256} for m in sub.held]}
            for sub in self.subscriptions.values()}})


def _alert_of(payload: bytes) -> dict[str, Any]:
    """The alert id and seq of a tocsin payload (the event or a pointer); None otherwise."""
    try:
        document = json.loads(payload)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        return {"alert_id": None, "seq": None}
    return {"alert_id": document.get("id"), "seq": document.get("seq")}


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    # Push services answer errors with a small JSON body (autopush: code, errno, message).
    return JSONResponse({"code": status, "message": detail}, status_code=status, headers=headers)


# What the fake reads of a body at most; a longer one is answered without reading the rest.
MAX_READ = 1024 * 1024


async def _bounded_body(request: Request) -> bytes | None:
    """The body, or None when it is over MAX_BODY (read on to MAX_READ, then dropped)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_READ:
            return None
        if size <= MAX_BODY:
            chunks.append(chunk)
    return b"".join(chunks) if size <= MAX_BODY else None


async def _json_body(request: Request) -> dict[str, Any]:
    body = await _bounded_body(request)
    try:
        found = json.loads(body or b"{}")
    except ValueError:
        found = {}
    return found if isinstance(found, dict) else {}


@asynccontextmanager
async def webpush_fake(*, port: int = 0, on_event: Callable[[dict[str, Any]], None] = lambda e: None,
                       ca: GatewayCa | None = None) -> AsyncIterator[FakePushService]:
    """The fake served over HTTP/2 and TLS on loopback until the block ends."""
    fake = FakePushService(on_event=on_event)
    async with h2_server(fake, port=port, ca=ca) as url:
        fake.url = url
        try:
            yield fake
        finally:
            fake.release()


def shared_ca(directory: Path) -> GatewayCa:
    """The test CA kept in `directory`: the one found there, else this process's copied there."""
    found = GatewayCa(ca_file=directory / "ca.pem", cert_file=directory / "server.pem",
                      key_file=directory / "server-key.pem")
    if not all(path.exists() for path in (found.ca_file, found.cert_file, found.key_file)):
        directory.mkdir(parents=True, exist_ok=True)
        made = gateway_ca()
        for source, target in ((made.cert_file, found.cert_file), (made.key_file, found.key_file),
                               (made.ca_file, found.ca_file)):  # ca.pem last: its presence says all are
            shutil.copyfile(source, target)
    return found


async def _main(port: int, state: Path, ca_dir: Path | None) -> None:
    # A push service keeps a sender's HTTP/2 connection as long as it is used; hypercorn ends
    # one after 1,000 requests, with the answers of the streams in flight lost although their
    # pushes were taken: a fault run's dispatchers would see repeats no real service causes.
    from hypercorn.config import Config

    Config.keep_alive_max_requests = 10**9
    ca = shared_ca(ca_dir) if ca_dir else gateway_ca()
    with state.open("a", encoding="utf-8") as out:
        def write(event: dict[str, Any]) -> None:
            out.write(json.dumps(event, separators=(",", ":")) + "\n")
            out.flush()

        async with webpush_fake(port=port, on_event=write, ca=ca) as fake:
            ready = {"url": fake.url, "ca_file": str(ca.ca_file)}
            write({"event": "ready", **ready})
            print(json.dumps(ready), flush=True)
            await asyncio.Event().wait()  # until the process is stopped


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.webpush", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--ca-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        asyncio.run(_main(args.port, args.state, args.ca_dir))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()

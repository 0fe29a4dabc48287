"""A fake APNs provider API (`POST /3/device/{token}`), HTTP/2 only as Apple's is, checking
what Apple checks and answering its documented `{"reason": ...}` errors:

- the provider token: ES256 signed by the team's .p8 key (verified with pyjwt against its
  public part), `kid` the key id, `iss` the team, `iat` not older than an hour
  (ExpiredProviderToken), and not replaced on a connection within 20 minutes of the
  token it used before (TooManyProviderTokenUpdates);
- the headers: apns-topic the app's bundle id, apns-push-type, apns-priority,
  apns-expiration, apns-collapse-id of at most 64 bytes, apns-id a UUID;
- the body: not empty, at most 4096 bytes (413 PayloadTooLarge), a JSON object with `aps`.

Each device's notifications are kept, and what its user sees (one per collapse id). Told
at run time (`fail`): "429" (TooManyRequests), "500", "503", "Unregistered",
"BadDeviceToken", "hang".

As a process, for the fault suite (tests/fakes/gateway_faults.py has the control API):

    python -m tests.fakes.apns --port P --state FILE --dir DIR [--ca-dir DIR]
"""

from __future__ import annotations

import json
import re
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.fakes.gateway_faults import FakeClock, FakeGateway

MAX_PAYLOAD_BYTES = 4096
PUSH_TYPES = {"alert", "background", "location", "voip", "complication", "fileprovider", "mdm", "liveactivity",
              "pushtotalk", "widgets", "controls"}
_TOKEN = re.compile(r"[0-9a-f]{64,200}")
_FAULTS = {"429": (429, "TooManyRequests"), "500": (500, "InternalServerError"), "503": (503, "ServiceUnavailable"),
           "Unregistered": (410, "Unregistered"), "BadDeviceToken": (400, "BadDeviceToken")}


def reason(status: int, text: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"reason": text, **extra}, status_code=status)


def write_p8(key: PrivateKeyTypes, path: Path) -> Path:
    """A key file as Apple hands it out: PKCS#8 PEM."""
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


class FakeApns(FakeGateway):
    kinds = frozenset({*_FAULTS, "hang"})

    def __init__(self, *, team_id: str = "TEAM123456", key_id: str = "KEY1234567", topic: str = "org.example.tocsin",
                 clock: FakeClock | None = None) -> None:
        super().__init__(clock)
        self.team_id, self.key_id, self.topic = team_id, key_id, topic
        self.key = ec.generate_private_key(ec.SECP256R1())
        # The provider tokens accepted, in order (a new one is a refresh).
        self.provider_tokens: list[str] = []
        self._last_iat = 0.0
        # Per connection, the token it last used and its iat: Apple counts updates per connection.
        self._connection_tokens: dict[Any, tuple[str, float]] = {}
        self._expired_through = -1.0  # tokens made at or before this are refused as expired
        self.received: dict[str, list[dict[str, Any]]] = defaultdict(list)  # {"headers", "body"}
        # Per device, by collapse id: the tocsin payload its user sees (JSON text).
        self.shown: dict[str, dict[str, str]] = defaultdict(dict)
        self.app = Starlette(routes=[Route("/3/device/{token}", self._push, methods=["POST", "GET", "PUT", "DELETE"]),
                                     *self.control_routes()])

    def key_file(self, folder: Path) -> Path:
        return write_p8(self.key, folder / f"AuthKey_{self.key_id}.p8")

    def received_by(self, token: str) -> list[Any]:
        return self.received.get(token, [])

    def node_settings(self, folder: Path) -> dict[str, Any]:
        """The Settings fields that point a node at this fake."""
        return {"apns_key_file": str(self.key_file(folder)), "apns_key_id": self.key_id, "apns_team_id": self.team_id,
                "apns_topic": self.topic, "apns_url": self.url}

    def expire_provider_tokens(self) -> None:
        """Refuse every provider token accepted so far as ExpiredProviderToken (as Apple does
        with a token its clock finds over an hour old)."""
        self._expired_through = self._last_iat

    def _provider_problem(self, authorization: str, connection: Any) -> JSONResponse | None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return reason(403, "MissingProviderToken")
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, self.key.public_key(), algorithms=["ES256"],
                                options={"verify_exp": False, "verify_iat": False, "require": ["iss", "iat"]})
        except jwt.InvalidTokenError:
            return reason(403, "InvalidProviderToken")
        if header.get("kid") != self.key_id or claims["iss"] != self.team_id or not isinstance(claims["iat"], int):
            return reason(403, "InvalidProviderToken")
        if self.clock() - claims["iat"] > 3600 or claims["iat"] <= self._expired_through:
            return reason(403, "ExpiredProviderToken")
        if claims["iat"] > self.clock() + 60:
            return reason(403, "InvalidProviderToken")
        last_token, last_iat = self._connection_tokens.get(connection, ("", 0.0))
        if token != last_token:
            if last_token and claims["iat"] - last_iat < 20 * 60:
                return reason(429, "TooManyProviderTokenUpdates")
            self._connection_tokens[connection] = (token, claims["iat"])
            if token not in self.provider_tokens:
                self.provider_tokens.append(token)
            self._last_iat = max(self._last_iat, claims["iat"])
        return None

    def _header_problem(self, request: Request) -> JSONResponse | None:
        headers = request.headers
        if "apns-topic" not in headers:
            return reason(400, "MissingTopic")
        if headers["apns-topic"] != self.topic:
            return reason(400, "DeviceTokenNotForTopic")
        if headers.get("apns-push-type", "alert") not in PUSH_TYPES:
            return reason(400, "InvalidPushType")
        if headers.get("apns-priority", "10") not in ("1", "5", "10"):
            return reason(400, "BadPriority")
        if not headers.get("apns-expiration", "0").isdigit():
            return reason(400, "BadExpirationDate")
        if len(headers.get("apns-collapse-id", "").encode()) > 64:
            return reason(400, "BadCollapseId")
        try:
            uuid.UUID(headers.get("apns-id", str(uuid.uuid4())))
        except ValueError:
            return reason(400, "BadMessageId")
        return None

    async def _push(self, request: Request) -> Response:
        if request.scope.get("http_version") != "2":
            return PlainTextResponse("HTTP/2 required", status_code=505)
        self.requests += 1
        body = await request.body()  # before any answer (hypercorn's HTTP/2 needs it)
        if request.method != "POST":
            return reason(405, "MethodNotAllowed")
        device = request.path_params["token"]
        problem = (self._provider_problem(request.headers.get("authorization", ""), request.scope.get("client"))
                   or self._header_problem(request))
        if problem is not None:
            return problem
        if not _TOKEN.fullmatch(device):
            return reason(400, "BadDeviceToken")
        if not body:
            return reason(400, "PayloadEmpty")
        if len(body) > MAX_PAYLOAD_BYTES:
            return reason(413, "PayloadTooLarge")
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if not isinstance(document, dict) or not isinstance(document.get("aps"), dict):
            # Apple documents no reason for this; the request is refused as malformed.
            return reason(400, "BadPayload")
        fault = self.faults.take(device)
        if fault is not None and fault.kind == "hang":
            await self.faults.hang()
            return reason(503, "ServiceUnavailable")
        if fault is not None:
            status, text = _FAULTS[fault.kind]
            return reason(status, text, **({"timestamp": int(self.clock() * 1000)} if status == 410 else {}))
        apns_id = request.headers.get("apns-id") or str(uuid.uuid4())
        self.received[device].append({"headers": dict(request.headers), "body": document})
        self.shown_to(device, request.headers.get("apns-collapse-id") or apns_id, json.dumps(document.get("tocsin")))
        return Response(status_code=200, headers={"apns-id": apns_id})


if __name__ == "__main__":
    from tests.fakes.gateway_faults import process_main

    fake = FakeApns()
    process_main("python -m tests.fakes.apns", __doc__ or "", fake, fake.node_settings)

"""A fake FCM: Google's OAuth2 token endpoint and the HTTP v1 messages:send method, over
HTTP/2 with TLS (tests/fakes/h2.py), checking what the real ones check and answering
their documented error bodies.

- `POST /token`: a jwt-bearer grant whose RS256 assertion is verified (pyjwt) against the
  service account's public key, with its iss, scope, aud and a short, current lifetime;
  answers an access token that expires.
- `POST /v1/projects/{project}/messages:send`: the bearer token must be one issued here and
  unexpired, the project this account's, the message well formed (proto JSON: unknown
  fields refused), data values strings, data at most 4096 bytes, android priority, ttl and
  collapse_key valid. Each device's messages are kept, and what its user sees (one per
  collapse key).

Told at run time (`fail`): "429" (QUOTA_EXCEEDED with Retry-After), "500" (INTERNAL),
"503" (UNAVAILABLE), "UNREGISTERED", "INVALID_TOKEN", "SENDER_ID_MISMATCH",
"THIRD_PARTY_AUTH_ERROR", "hang".

As a process, for the fault suite (tests/fakes/gateway_faults.py has the control API):

    python -m tests.fakes.fcm --port P --state FILE --dir DIR [--ca-dir DIR]
"""

from __future__ import annotations

import functools
import json
import re
import secrets
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.gateway_faults import FakeClock, FakeGateway

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
MAX_DATA_BYTES = 4096
_MESSAGE_FIELDS = {"name", "data", "notification", "android", "webpush", "apns", "fcm_options", "token", "topic",
                   "condition"}
_ANDROID_FIELDS = {"collapse_key", "priority", "ttl", "restricted_package_name", "data", "notification",
                   "fcm_options", "direct_boot_ok"}
_TTL = re.compile(r"(\d+)(\.\d{1,9})?s")
_TOKEN = re.compile(r"[A-Za-z0-9_:-]{1,4096}")


@functools.cache
def _account_key() -> rsa.RSAPrivateKey:
    """One RSA key per test process (making one costs ~100 ms)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def google_error(status: int, canonical: str, message: str, code: str | None = None, *,
                 field: str = "", headers: dict[str, str] | None = None) -> JSONResponse:
    """Google's error body: an FcmError detail when FCM names its own code, a BadRequest
    detail when it names the field at fault."""
    details: list[dict[str, Any]] = [{"@type": FCM_ERROR, "errorCode": code}] if code else []
    if field:
        details.append({"@type": "type.googleapis.com/google.rpc.BadRequest",
                        "fieldViolations": [{"field": field, "description": message}]})
    return JSONResponse({"error": {"code": status, "message": message, "status": canonical, "details": details}},
                        status_code=status, headers=headers)


def _fault_answer(kind: str, retry_after_s: int | None) -> Response:
    later = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else {}
    answers = {
        "429": lambda: google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for this device.", "QUOTA_EXCEEDED",
                                    headers=later),
        "500": lambda: google_error(500, "INTERNAL", "Internal error.", "INTERNAL"),
        "503": lambda: google_error(503, "UNAVAILABLE", "The service is overloaded.", "UNAVAILABLE", headers=later),
        "UNREGISTERED": lambda: google_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED"),
        "INVALID_TOKEN": lambda: google_error(400, "INVALID_ARGUMENT",
                                              "The registration token is not a valid FCM registration token",
                                              "INVALID_ARGUMENT"),
        "SENDER_ID_MISMATCH": lambda: google_error(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH"),
        "THIRD_PARTY_AUTH_ERROR": lambda: google_error(401, "UNAUTHENTICATED", "The APNs credential was refused.",
                                                       "THIRD_PARTY_AUTH_ERROR"),
    }
    return answers[kind]()


class FakeFcm(FakeGateway):
    kinds = frozenset({"429", "500", "503", "UNREGISTERED", "INVALID_TOKEN", "SENDER_ID_MISMATCH",
                       "THIRD_PARTY_AUTH_ERROR", "hang"})

    def __init__(self, *, project_id: str = "tocsin-test", clock: FakeClock | None = None,
                 token_lifetime_s: int = 3600) -> None:
        super().__init__(clock)
        self.project_id = project_id
        self.client_email = f"tocsin-push@{project_id}.iam.gserviceaccount.com"
        self.key = _account_key()
        self.token_lifetime_s = token_lifetime_s
        self.token_requests = 0
        # Per registration token: each message received, in order; what the user sees.
        self.received: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.shown: dict[str, dict[str, str]] = defaultdict(dict)
        self._tokens: dict[str, float] = {}  # access token -> expiry (fake clock)
        self.app = Starlette(routes=[
            Route("/token", self._grant, methods=["POST"]),
            Route("/v1/projects/{project}/messages:send", self._send, methods=["POST"]),
            *self.control_routes(),
        ])

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def service_account_file(self, folder: Path, **changes: Any) -> Path:
        """A service-account JSON for this fake (a field given None is left out)."""
        pem = self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()
        account: dict[str, Any] = {
            "type": "service_account", "project_id": self.project_id, "private_key_id": secrets.token_hex(20),
            "private_key": pem, "client_email": self.client_email, "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": self.token_uri,
        }
        account.update(changes)
        path = folder / "fcm-service-account.json"
        path.write_text(json.dumps({k: v for k, v in account.items() if v is not None}))
        return path

    def received_by(self, token: str) -> list[Any]:
        return self.received.get(token, [])

    def node_settings(self, folder: Path) -> dict[str, Any]:
        """The Settings fields that point a node at this fake (its service account written in `folder`)."""
        return {"fcm_service_account_file": str(self.service_account_file(folder)), "fcm_url": self.url}

    def expire_access_tokens(self) -> None:
        """Every access token issued so far is refused from now on (as when revoked)."""
        self._tokens.clear()

    # -- the token endpoint -------------------------------------------------------------

    async def _grant(self, request: Request) -> Response:
        self.token_requests += 1
        form = parse_qs((await request.body())[:16384].decode("utf-8", "replace"))
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return JSONResponse({"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}, 400)
        problem = self._assertion_problem((form.get("assertion") or [""])[0])
        if problem:
            return JSONResponse({"error": "invalid_grant", "error_description": problem}, 400)
        token = "ya29.fake-" + secrets.token_urlsafe(32)
        self._tokens[token] = self.clock() + self.token_lifetime_s
        return JSONResponse({"access_token": token, "expires_in": self.token_lifetime_s - 1, "token_type": "Bearer"})

    def _assertion_problem(self, assertion: str) -> str:
        try:
            if jwt.get_unverified_header(assertion).get("alg") != "RS256":
                return "Invalid JWT: the algorithm must be RS256"
            claims = jwt.decode(assertion, self.key.public_key(), algorithms=["RS256"], audience=self.token_uri,
                                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False,
                                         "require": ["iss", "scope", "aud", "iat", "exp"]})
        except jwt.InvalidTokenError as exc:
            return f"Invalid JWT: {exc}"
        now = self.clock()
        if claims["iss"] != self.client_email:
            return "Invalid JWT: the issuer is not this service account"
        if SCOPE not in str(claims["scope"]).split():
            return "Invalid JWT: the scope does not include firebase.messaging"
        if not (claims["exp"] - claims["iat"] <= 3600 and claims["iat"] - 300 <= now <= claims["exp"]):
            return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe"
        return ""

    # -- messages:send ------------------------------------------------------------------

    def _authenticated(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme == "Bearer" and self._tokens.get(token, 0.0) > self.clock()

    async def _send(self, request: Request) -> Response:
        self.requests += 1
        # Read before any answer: hypercorn's HTTP/2 breaks on body frames of a stream it
        # has already answered.
        body = await request.body()
        if not self._authenticated(request):
            return google_error(401, "UNAUTHENTICATED", "Request had no valid OAuth 2 access token.")
        if request.path_params["project"] != self.project_id:
            return google_error(403, "PERMISSION_DENIED", "The caller may not send messages for this project.")
        try:
            message = json.loads(body)["message"]
        except (ValueError, KeyError, TypeError):
            return google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        problem = _message_problem(message)
        if problem:
            return problem
        fault = self.faults.take(message["token"])
        if fault is not None and fault.kind == "hang":
            await self.faults.hang()
            return google_error(503, "UNAVAILABLE", "The service is overloaded.", "UNAVAILABLE")
        if fault is not None:
            return _fault_answer(fault.kind, fault.retry_after_s)
        name = f"projects/{self.project_id}/messages/{secrets.token_hex(8)}"
        self.received[message["token"]].append(message)
        data = message.get("data", {})
        self.shown_to(message["token"], message.get("android", {}).get("collapse_key") or name, data.get("tocsin", ""))
        return JSONResponse({"name": name})


def _message_problem(message: Any) -> Response | None:
    """What FCM refuses in a message, as FCM answers it."""
    def invalid(text: str, field: str = "") -> Response:
        return google_error(400, "INVALID_ARGUMENT", text, None if field else "INVALID_ARGUMENT", field=field)

    if not isinstance(message, dict) or set(message) - _MESSAGE_FIELDS:
        return invalid("Invalid JSON payload received. Unknown name in message.")
    if not isinstance(message.get("token"), str) or not _TOKEN.fullmatch(message["token"]):
        return invalid("The registration token is not a valid FCM registration token")
    data = message.get("data", {})
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        return invalid("Invalid value at 'message.data[0].value' (TYPE_STRING)", "message.data")
    if any(k in ("from", "gcm", "message_type") or k.startswith("google") for k in data):
        return invalid("Invalid data payload key")
    if sum(len(k.encode()) + len(v.encode()) for k, v in data.items()) > MAX_DATA_BYTES:
        return invalid("Android message is too big")
    android = message.get("android", {})
    if not isinstance(android, dict) or set(android) - _ANDROID_FIELDS:
        return invalid("Invalid JSON payload received. Unknown name in message.android.")
    if android.get("priority", "NORMAL") not in ("NORMAL", "HIGH"):
        return invalid("Invalid value at 'message.android.priority'", "message.android.priority")
    ttl = _TTL.fullmatch(str(android.get("ttl", "0s")))
    if ttl is None or int(ttl.group(1)) > 2_419_200:
        return invalid("Invalid value at 'message.android.ttl'", "message.android.ttl")
    if not isinstance(android.get("collapse_key", ""), str):
        return invalid("Invalid value at 'message.android.collapse_key'", "message.android.collapse_key")
    return None


if __name__ == "__main__":
    from tests.fakes.gateway_faults import process_main

    fake = FakeFcm()
    process_main("python -m tests.fakes.fcm", __doc__ or "", fake, fake.node_settings)

"""What the FCM and APNs senders share: one HTTP/2 client to one gateway for the life of
the node, one deadline per send, the device token checked again before it goes into a
request, and the gateway's answer read without trusting it (the body only up to a bound,
`Retry-After` in both of its forms and capped, link failures turned into a `Result`)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from tocsin.channels import webpush
from tocsin.delivery.http import gateway_client
from tocsin.delivery.model import Outcome, Push, Result
from tocsin.errors import PUSH_TARGET_INVALID, Rejected, Violation
from tocsin.settings import Settings

# A gateway's error answer is a small JSON object; anything past this is not read.
MAX_REPLY_BYTES = 16 * 1024


def registered_token(document: dict[str, Any], pattern: re.Pattern[str], what: str) -> str:
    """The registration's `token`, whole and matching `pattern`.

    Raises:
        Rejected: 422 device.push-target-invalid naming `token` and saying `what` it must be.
    """
    token = document.get("token")
    if not isinstance(token, str) or not pattern.fullmatch(token):
        raise Rejected(PUSH_TARGET_INVALID, f"token: {what}",
                       violations=(Violation(problem=PUSH_TARGET_INVALID, path="token", detail=what),))
    return token


async def read_bounded(response: httpx.Response, limit: int = MAX_REPLY_BYTES) -> bytes:
    """The start of a streamed response's body, at most `limit` bytes; the rest is dropped
    (the stream is closed by the caller's `async with`)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk[: limit - size])
        size += len(chunks[-1])
        if size >= limit:
            break
    return b"".join(chunks)


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or {} for anything else (an HTML error page, garbage)."""
    try:
        found = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}
    return found if isinstance(found, dict) else {}


def retry_after_s(headers: httpx.Headers) -> float | None:
    """The answer's Retry-After in seconds, read as the Web Push sender reads it (either
    form, capped), or None."""
    return webpush.retry_after_s(headers.get("retry-after"))


async def guarded(attempt: Callable[[], Awaitable[Result]], timeout_s: float) -> Result:
    """`attempt()` under one deadline for all its requests (a token fetch, the send and a
    send again after a refresh): a hung gateway or link is a retry, never a stuck sender."""
    try:
        async with asyncio.timeout(timeout_s):
            return await attempt()
    except (TimeoutError, httpx.TimeoutException):
        return Result(outcome=Outcome.RETRY, reason="timeout")
    except httpx.TransportError as exc:
        return Result(outcome=Outcome.RETRY, reason=f"link: {type(exc).__name__}")



Classify = Callable[[int, dict[str, Any], httpx.Headers], Result]


class GatewaySender:
    """A `Sender` (delivery/model.py) but for `_send`, which a channel provides."""

    channel: str

    def __init__(self, settings: Settings, base_url: str, token: re.Pattern[str]) -> None:
        self._settings, self._token = settings, token
        self._client = gateway_client(settings)
        self._host = urlsplit(base_url).hostname or base_url

    def host(self, push: Push) -> str:
        return self._host

    async def send(self, push: Push) -> Result:
        if not self._token.fullmatch(str(push.target.get("token", ""))):
            # A record this node did not write as check_target does: never put in a request.
            return Result(outcome=Outcome.PERMANENT, reason="bad-target")
        return await guarded(lambda: self._send(push), self._settings.push_timeout_s)

    async def _send(self, push: Push) -> Result:
        raise NotImplementedError

    async def _exchange(self, url: str, classify: Classify, *, content: bytes, headers: dict[str, str]) -> Result:
        """POST one request and classify the answer, its body read up to MAX_REPLY_BYTES."""
        async with self._client.stream("POST", url, content=content, headers=headers) as response:
            reply = json_object(await read_bounded(response))
        return classify(response.status_code, reply, response.headers)

    async def aclose(self) -> None:
        await self._client.aclose()

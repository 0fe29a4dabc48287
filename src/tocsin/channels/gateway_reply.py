"""Reading a push gateway's answer without trusting it: the body read only up to a bound,
`Retry-After` read in both of its forms and bounded, and the link failures every gateway
sender meets turned into a `Result`. Shared by the FCM and APNs senders."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from tocsin.delivery.model import Outcome, Result

# A gateway's error answer is a small JSON object; anything past this is not read.
MAX_REPLY_BYTES = 16 * 1024
# A Retry-After further off than this is taken as this (an alert cannot wait a day).
MAX_RETRY_AFTER_S = 3600.0


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


def retry_after_s(headers: httpx.Headers, *, now: float | None = None) -> float | None:
    """RFC 9110 §10.2.3: delay-seconds or an HTTP-date; None when absent or unreadable."""
    raw = headers.get("retry-after", "").strip()[:64]
    if not raw:
        return None
    if raw.isdigit():
        return min(float(raw), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(0.0, when.timestamp() - (time.time() if now is None else now)), MAX_RETRY_AFTER_S)


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


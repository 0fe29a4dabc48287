"""One bounded GET of a source's feed or of a CAP it links: conditional, cut off when slow
or large.

Everything a source sends is outside input: the whole exchange (connection to last byte)
runs under one deadline, the body is read in pieces and dropped as soon as it passes its
bound (a `Content-Length` over it is refused unread), and every failure becomes a
`FetchFailed` with a stable reason for the source's status.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

CAP_ACCEPT = "application/cap+xml, application/xml;q=0.9, text/xml;q=0.8"
FEED_ACCEPT = "application/atom+xml, application/rss+xml, application/xml;q=0.9, text/xml;q=0.8"


class FetchFailed(Exception):
    """A GET that brought nothing usable; `reason` is a stable word (timeout, unreachable,
    http-<status>, too-large)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True, kw_only=True)
class Fetched:
    """A 200's body and its validators, or a 304 (`not_modified`, no body)."""

    body: bytes = b""
    not_modified: bool = False
    etag: str = ""
    last_modified: str = ""


def source_client() -> httpx.AsyncClient:
    """One client for every source a node polls. Redirects are followed a few times (feeds
    move from http to https); proxy variables are ignored; timeouts are the callers'."""
    return httpx.AsyncClient(
        follow_redirects=True, max_redirects=3, trust_env=False, timeout=None,
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=16, keepalive_expiry=60.0),
        headers={"User-Agent": "tocsin-sources/1"},
    )


def _validator(raw: str | None) -> str:
    """An ETag or Last-Modified value fit to send back (printable ASCII, bounded)."""
    value = (raw or "").strip()
    return value if len(value) <= 256 and value.isascii() and value.isprintable() else ""


async def _read(response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchFailed("too-large", f"Content-Length {declared}; the limit is {max_bytes} bytes")
    body = bytearray()
    async for piece in response.aiter_bytes():
        body += piece
        if len(body) > max_bytes:
            raise FetchFailed("too-large", f"more than {max_bytes} bytes; cut off")
    return bytes(body)


async def fetch(client: httpx.AsyncClient, url: str, *, timeout_s: float, max_bytes: int, accept: str,
                etag: str = "", last_modified: str = "") -> Fetched:
    """GET `url`, conditionally when validators are given.

    Raises:
        FetchFailed: a timeout, no connection, an answer other than 200 or 304, or too large.
    """
    headers = {"Accept": accept}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        async with asyncio.timeout(timeout_s), client.stream("GET", url, headers=headers) as response:
            if response.status_code == 304 and (etag or last_modified):
                return Fetched(not_modified=True, etag=etag, last_modified=last_modified)
            if response.status_code != 200:
                raise FetchFailed(f"http-{response.status_code}", f"{url[:200]} answered {response.status_code}")
            body = await _read(response, max_bytes)
            return Fetched(body=body, etag=_validator(response.headers.get("etag")),
                           last_modified=_validator(response.headers.get("last-modified")))
    except TimeoutError:
        raise FetchFailed("timeout", f"no full answer within {timeout_s:g} s") from None
    except httpx.TooManyRedirects:
        raise FetchFailed("too-many-redirects", url[:200]) from None
    except (httpx.HTTPError, OSError) as exc:
        raise FetchFailed("unreachable", f"{type(exc).__name__}: {str(exc)[:200]}") from None

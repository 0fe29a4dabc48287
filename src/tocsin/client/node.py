"""Talking to one tocsin node as a device: its keys, registration, and its refusals."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import httpx

from tocsin.client.state import Registration
from tocsin.errors import TocsinError
from tocsin.geo.cells import CELL_RESOLUTION

log = logging.getLogger(__name__)

KEYS_PATH = "/.well-known/tocsin/keys"
DEVICES_PATH = "/api/v1/devices"
STREAM_PATH = "/api/v1/stream"
WS_PATH = "/api/v1/ws"


class NodeRefused(TocsinError):
    """A node answered with an error status (a problem+json document when it could)."""

    def __init__(self, url: str, status: int, code: str = "", detail: str = "") -> None:
        super().__init__(f"{url} answered {status} {code}: {detail}".rstrip(": "))
        self.url = url
        self.status = status
        self.code = code
        self.detail = detail

    @property
    def is_retryable(self) -> bool:
        """Whether asking again (later, or another node) may work."""
        return self.status >= 500 or self.status in (404, 408, 425, 429)


class DeviceUnknown(NodeRefused):
    """The node does not know this device's token: register again (problem device.unknown)."""


class RegistrationRefused(NodeRefused):
    """A node refused to register the device for a reason that retrying cannot fix."""


class NodeIncompatible(TocsinError):
    """The node speaks a protocol this client cannot follow (e.g. another cell resolution)."""


def refusal(url: str, response: httpx.Response) -> NodeRefused:
    """The error for a non-2xx response whose body has been read."""
    code, detail = "", response.reason_phrase
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if isinstance(problem, dict):
        code = str(problem.get("code", ""))
        detail = str(problem.get("detail") or problem.get("title") or detail)
    if response.status_code == 401 and code in ("", "device.unknown"):
        return DeviceUnknown(url, 401, code, detail)
    return NodeRefused(url, response.status_code, code, detail)


def _json_object(url: str, response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise NodeRefused(url, response.status_code, "", "response is not JSON") from exc
    if not isinstance(body, dict):
        raise NodeRefused(url, response.status_code, "", "response is not a JSON object")
    return body


def _check_resolution(url: str, body: dict[str, Any]) -> None:
    resolution = body.get("cell_resolution", CELL_RESOLUTION)
    if resolution != CELL_RESOLUTION:
        raise NodeIncompatible(
            f"{url} uses cell resolution {resolution}, this client {CELL_RESOLUTION}"
        )


async def fetch_key_set(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """The node's key-set document: its keys and key-set statements, as served (untrusted).

    Raises:
        NodeRefused: the node answered an error or something that is not a JSON object.
        NodeIncompatible: the node uses another cell resolution.
    """
    response = await http.get(url + KEYS_PATH)
    if response.status_code != 200:
        raise refusal(url, response)
    body = _json_object(url, response)
    _check_resolution(url, body)
    return body


async def register(
    http: httpx.AsyncClient,
    url: str,
    *,
    cells: Sequence[str],
    languages: Sequence[str],
    tests: bool,
    canary: bool = False,
    issuer_token: str | None = None,
) -> Registration:
    """Register a device for `cells` on the node at `url`; a canary needs an issuer token.

    Raises:
        NodeRefused: the node refused for now; try again later or elsewhere.
        RegistrationRefused: the node refused for a reason that retrying cannot fix.
        NodeIncompatible: the node uses another cell resolution.
    """
    body: dict[str, Any] = {"cells": list(cells), "languages": list(languages), "tests": tests}
    headers: dict[str, str] = {}
    if canary:
        body["canary"] = True
        if issuer_token:
            headers["Authorization"] = f"Bearer {issuer_token}"
    response = await http.post(url + DEVICES_PATH, json=body, headers=headers)
    if response.status_code not in (200, 201):
        refused = refusal(url, response)
        if refused.is_retryable:
            raise refused
        raise RegistrationRefused(url, refused.status, refused.code, refused.detail)
    answer = _json_object(url, response)
    _check_resolution(url, answer)
    device_id, token = answer.get("id"), answer.get("token")
    if not isinstance(device_id, str) or not isinstance(token, str):
        raise NodeRefused(url, response.status_code, "", "registration lacks id or token")
    log.info("device registered", extra={"device_id": device_id, "url": url, "cells": len(cells)})
    return Registration(
        device_id=device_id,
        token=token,
        node=url,
        cells=tuple(cells),
        languages=tuple(languages),
        tests=tests,
        canary=canary,
    )

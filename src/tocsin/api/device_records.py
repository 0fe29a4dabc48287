"""Device records: their stored JSON, the compact copy every node mirrors, expiry and renewal.

The bucket holds one JSON record per device (`record_json`). Every node keeps all of them in
memory (`DeviceMirror`), so that a device moving over from a lost node is authenticated
without a bucket read; the mirror holds each record as one packed bytes value and a shared
tuple of languages, about 300 bytes a device (docs/operations.md, "Memory").
"""

from __future__ import annotations

import logging
import struct
import sys
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tocsin.audience import Audience
from tocsin.errors import RecordsFull, StoreUnavailable
from tocsin.geo.cells import Cover
from tocsin.settings import Settings
from tocsin.store.base import Records

log = logging.getLogger(__name__)

_TESTS, _CANARY = 1, 2
# created, renewed (Unix seconds), flags, the secret's SHA-256; then one uint64 per cell.
_HEAD = struct.Struct("<IIB32s")
# Distinct language lists shared between records; past this many, a list is kept per record.
_MAX_SHARED_LANGUAGES = 4096


def record_json(
    *, cells: Sequence[str], languages: Sequence[str], tests: bool, canary: bool,
    secret_sha256: str, created: datetime, renewed: datetime,
) -> dict[str, Any]:
    """The canonical stored form of a device: cells already canonical and unique."""
    return {
        "cells": list(cells),
        "languages": list(languages),
        "tests": tests,
        "canary": canary,
        "secret_sha256": secret_sha256,
        "created": created.isoformat(),
        "renewed": renewed.isoformat(),
    }


def _epoch(raw: object) -> int:
    try:
        return max(0, int(datetime.fromisoformat(str(raw)).timestamp()))
    except (ValueError, OverflowError):
        return 0


def _when(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class DeviceMirror(MutableMapping[str, dict[str, Any]]):
    """Device records by id, kept packed; reading one gives its JSON form back.

    Raises ValueError on a record it cannot pack (the bucket mirror skips it).
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[bytes, tuple[str, ...]]] = {}
        self._languages: dict[tuple[str, ...], tuple[str, ...]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __delitem__(self, key: str) -> None:
        del self._entries[key]

    def __setitem__(self, key: str, record: dict[str, Any]) -> None:
        try:
            cells = [int(cell, 16) for cell in record["cells"]]
            digest = bytes.fromhex(record["secret_sha256"])
            languages = tuple(sys.intern(str(x)) for x in record.get("languages") or ())
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a device record: {exc!r}") from None
        created = _epoch(record.get("created"))
        renewed = _epoch(record.get("renewed")) or created
        flags = (_TESTS if record.get("tests") is True else 0) | (_CANARY if record.get("canary") is True else 0)
        try:
            packed = _HEAD.pack(created, renewed, flags, digest) + struct.pack(f"<{len(cells)}Q", *cells)
        except struct.error as exc:
            raise ValueError(f"not a device record: {exc}") from None
        shared = self._languages.get(languages)
        if shared is None and len(self._languages) < _MAX_SHARED_LANGUAGES:
            shared = self._languages[languages] = languages
        self._entries[key] = (packed, shared or languages)

    def reach(self, cover: Cover, status: str) -> Reach:
        """Registered devices `cover` reaches (see `reach`)."""
        return reach(self, cover, status)

    def __getitem__(self, key: str) -> dict[str, Any]:
        packed, languages = self._entries[key]
        created, renewed, flags, digest = _HEAD.unpack_from(packed)
        cells = struct.unpack_from(f"<{(len(packed) - _HEAD.size) // 8}Q", packed, _HEAD.size)
        return record_json(
            cells=[format(cell, "x") for cell in cells], languages=languages,
            tests=bool(flags & _TESTS), canary=bool(flags & _CANARY), secret_sha256=digest.hex(),
            created=_when(created), renewed=_when(renewed),
        )


# The channel of a record without one: it receives over SSE or WebSocket when connected.
LIVE = "live"


@dataclass(frozen=True, slots=True, kw_only=True)
class Reach:
    """Registered devices an alert's cover reaches (each device once, however many of its
    cells the cover touches): in all, by channel, and by the language each prefers (the
    first of its list; "" for a device that gave none)."""

    devices: int = 0
    by_channel: dict[str, int] = field(default_factory=dict)
    by_language: dict[str, int] = field(default_factory=dict)


def reach(mirror: DeviceMirror, cover: Cover, status: str) -> Reach:
    """The devices of `mirror` whose cells `cover` touches and whose audience receives
    `status`; expired records count until the bucket drops them."""
    devices = 0
    by_channel: dict[str, int] = {}
    by_language: dict[str, int] = {}
    for key in mirror:
        record = mirror[key]
        audience = Audience(tests=record["tests"], canary=record["canary"])
        if not audience.receives(status) or not any(cover.touches(cell) for cell in record["cells"]):
            continue
        devices += 1
        channel = str(record.get("channel") or LIVE)
        by_channel[channel] = by_channel.get(channel, 0) + 1
        language = record["languages"][0] if record["languages"] else ""
        by_language[language] = by_language.get(language, 0) + 1
    return Reach(devices=devices, by_channel=by_channel, by_language=by_language)


def renewed_at(record: dict[str, Any]) -> datetime:
    """When the record was last written (registered or renewed); the epoch if unreadable."""
    return _when(_epoch(record.get("renewed")) or _epoch(record.get("created")))


def is_expired(record: dict[str, Any], now: datetime, settings: Settings) -> bool:
    """Past its TTL: the bucket drops it by age, a node refuses it already."""
    return now - renewed_at(record) > timedelta(seconds=settings.device_ttl_s)


async def renew_if_due(
    bucket: Records, mirror: MutableMapping[str, dict[str, Any]], device_id: str,
    record: dict[str, Any], now: datetime, settings: Settings,
) -> None:
    """Write the record again once it is older than the renewal share of its TTL.

    Younger records are left alone, so a reconnect storm costs no writes. A failed
    renewal does not refuse the connect: the device renews at a later one.
    """
    if now - renewed_at(record) < timedelta(seconds=settings.device_ttl_s * settings.device_renew_fraction):
        return
    # The mirror first: connects that arrive during the write see a fresh record, so a
    # storm of one device's reconnects writes once.
    mirror[device_id] = {**record, "renewed": now.isoformat()}
    try:
        await bucket.put(device_id, mirror[device_id])
    except (StoreUnavailable, RecordsFull) as exc:
        mirror[device_id] = record  # due again at the next connect
        log.warning("device renewal failed", extra={"error": str(exc)[:200]})

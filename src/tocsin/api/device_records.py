"""Device records: their stored JSON, what an audience count returns, expiry and renewal.

The bucket holds one JSON record per device (`record_json`). Every node keeps all of them in
memory in the audience index (api/device_index.py), so that a device moving over from a lost
node is authenticated without a bucket read and a preview counts an audience at once.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tocsin.errors import RecordsFull, StoreUnavailable
from tocsin.settings import Settings
from tocsin.store.base import Records

log = logging.getLogger(__name__)


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


def epoch(raw: object) -> int:
    """Unix seconds of an ISO 8601 date as records hold it; 0 when unreadable."""
    try:
        return max(0, int(datetime.fromisoformat(str(raw)).timestamp()))
    except (ValueError, OverflowError):
        return 0


def _when(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


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


def renewed_at(record: dict[str, Any]) -> datetime:
    """When the record was last written (registered or renewed); the epoch if unreadable."""
    return _when(epoch(record.get("renewed")) or epoch(record.get("created")))


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
        written = mirror[device_id]
        if record.get("channel", LIVE) != LIVE:
            # The index keeps no push fields (subscription, token): the bucket's record does.
            stored = await bucket.get(device_id)
            if stored is None:
                return  # deleted meanwhile (a 410 from its gateway): nothing to renew
            written = {**stored, "renewed": now.isoformat()}
        await bucket.put(device_id, written)
    except (StoreUnavailable, RecordsFull) as exc:
        mirror[device_id] = record  # due again at the next connect
        log.warning("device renewal failed", extra={"error": str(exc)[:200]})

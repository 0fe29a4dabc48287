"""Memory per mirrored device: 10,000 records as the bucket mirror stores them (docs/operations.md)."""

from __future__ import annotations

import gc
import json
import secrets
import tracemalloc
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

import h3
import pytest

from tocsin.api.device_records import DeviceMirror, record_json

DEVICES = 10_000


def _bucket_values(cells_per_device: int) -> list[bytes]:
    """What the bucket holds: one JSON record per device, cells around Paris."""
    now = datetime.now(UTC)
    ring = sorted(h3.grid_disk(h3.latlng_to_cell(48.8566, 2.3522, 6), 5))
    values = []
    for i in range(DEVICES):
        cells = [ring[(i + k) % len(ring)] for k in range(cells_per_device)]
        record = record_json(cells=cells, languages=["fr", "en"], tests=False, canary=False,
                             secret_sha256=secrets.token_hex(32), created=now, renewed=now)
        values.append(json.dumps(record).encode())
    return values


def _bytes_per_device(into: MutableMapping[str, dict[str, Any]], values: list[bytes]) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for value in values:
        into[f"dev_{secrets.token_hex(12)}"] = json.loads(value)  # as KvRecords.mirror does
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return held / len(values)


@pytest.mark.parametrize(("cells", "bound"), [(1, 400), (8, 500), (64, 1000)])
def test_a_mirrored_device_holds_a_few_hundred_bytes(cells: int, bound: int) -> None:
    values = _bucket_values(cells)
    # Counted: the key, the mirror's table entry and the record; not the shared language tuple.
    packed = _bytes_per_device(DeviceMirror(), values)
    plain = _bytes_per_device({}, values)
    print(f"{cells} cell(s): {packed:.0f} bytes per device packed, {plain:.0f} as JSON dicts")
    assert packed < bound
    assert packed < plain / 3

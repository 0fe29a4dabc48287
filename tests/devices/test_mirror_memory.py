"""Memory per indexed device: 10,000 records as the audience index holds them (docs/operations.md).

bench/audience_bench.py measures the node's RSS at a million; this bounds the index alone.
"""

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

from tocsin.api.device_index import DeviceIndex
from tocsin.api.device_records import record_json

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
        into[f"dev_{secrets.token_hex(12)}"] = json.loads(value)  # as the device feed does
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return held / len(values)


@pytest.mark.parametrize(("cells", "bound"), [(1, 300), (8, 450), (64, 1600)])
def test_a_mirrored_device_holds_a_few_hundred_bytes(cells: int, bound: int) -> None:
    values = _bucket_values(cells)
    # Counted: the key (kept until the next merge of ids), the columns, the cells and their
    # postings (16 bytes a cell: the device's cell and the cell's entry for the device).
    packed = _bytes_per_device(DeviceIndex(), values)
    plain = _bytes_per_device({}, values)
    print(f"{cells} cell(s): {packed:.0f} bytes per device packed, {plain:.0f} as JSON dicts")
    assert packed < bound
    assert packed < plain / 3

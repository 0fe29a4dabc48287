"""The history of a fault run: one JSON object per line, each with a wall-clock `t` and a `k`ind.

Kinds written by the harness: `issue` (an attempt: node, outcome, status, seq), `acked`,
`gave_up`, `ready` (a /readyz sample), `fault` and `heal`, `note`, `final` (the cluster's
final state). The fleet writes `d` (an event a device received: display or not, and why)
and `conn` (a device connected or lost its connection). Lines from both are merged by `t`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


class History:
    """Appends records to a JSON-lines file; the file is flushed at least once a second."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._out: IO[str] = path.open("a", encoding="utf-8")
        self._flushed = time.monotonic()

    def record(self, kind: str, **fields: Any) -> dict[str, Any]:
        entry = {"t": round(time.time(), 4), "k": kind, **fields}
        self._out.write(json.dumps(entry, separators=(",", ":"), default=str) + "\n")
        if time.monotonic() - self._flushed > 1.0:
            self.flush()
        return entry

    def flush(self) -> None:
        self._out.flush()
        self._flushed = time.monotonic()

    def close(self) -> None:
        if not self._out.closed:
            self._out.flush()
            self._out.close()


def read(*paths: Path) -> list[dict[str, Any]]:
    """Every record of these files, in time order (a torn last line is skipped)."""
    entries: list[dict[str, Any]] = []
    for path in paths:
        if path.exists():
            entries.extend(_lines(path))
    entries.sort(key=lambda e: e["t"])
    return entries


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            try:
                yield json.loads(line)
            except ValueError:
                continue

"""The areas bucket as a node's Gazetteer sees it: imported named areas, kept by a watch.

Every node mirrors the whole bucket (`Records.mirror`, the same watch as the accounts and
device mirrors) into `AreasMirror`, which decodes each record fail-closed into the node's
Gazetteer (`Accept.gazetteer`): geocodes resolve and territories by code hold on every node
from memory, milliseconds after an import on any node. A record that cannot be read, is
stored under another area's key, names a built-in scheme, or would take the imported areas
past MAX_IMPORTED_POINTS is skipped and logged, and the area it replaces leaves the
gazetteer (a code whose record is unreadable holds nothing).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, MutableMapping
from typing import Any

from tocsin.geo.gazetteer import MAX_IMPORTED_POINTS, Gazetteer, GazetteerInvalid, NamedArea, key_for
from tocsin.store.base import Records

log = logging.getLogger(__name__)


def decode(key: str, value: object, gazetteer: Gazetteer) -> NamedArea:
    """The named area a bucket record holds, if this node may use it.

    Raises:
        GazetteerInvalid: unreadable, past a bound, under another area's key, or of a
            scheme this node holds built in.
    """
    area = NamedArea.from_json(value)
    if key_for(area.scheme, area.code) != key:
        raise GazetteerInvalid(f"{area.scheme} {area.code} is stored under the key of another area")
    if area.scheme in gazetteer.builtin_schemes:
        raise GazetteerInvalid(f"{area.scheme} is built into this node; its imported areas are not used")
    return area


class AreasMirror(MutableMapping[str, dict[str, Any]]):
    """What `Records.mirror` writes, decoded into a Gazetteer; a writer may wait for it."""

    def __init__(self, gazetteer: Gazetteer) -> None:
        self.gazetteer = gazetteer
        self._keys: dict[str, tuple[str, str]] = {}  # bucket key -> (scheme, code) held
        self.points = 0  # of the areas held from the bucket
        self._changed = asyncio.Event()

    def __setitem__(self, key: str, value: dict[str, Any]) -> None:
        try:
            area = decode(key, value, self.gazetteer)
            self.__delitem__(key)
            if self.points + area.points > MAX_IMPORTED_POINTS:
                raise GazetteerInvalid(f"the imported areas would hold more than {MAX_IMPORTED_POINTS} points")
        except GazetteerInvalid as exc:
            log.warning("areas mirror skipped a record", extra={"key": key[:140], "error": str(exc)[:300]})
            self.__delitem__(key)
            return
        self._keys[key] = (area.scheme, area.code)
        self.gazetteer.put(area)
        self.points += area.points
        self._wake()

    def __delitem__(self, key: str) -> None:
        held = self._keys.pop(key, None)
        if held is not None:
            area = self.gazetteer.lookup(*held)
            self.points -= area.points if area is not None else 0
            self.gazetteer.remove(*held)
            self._wake()

    def __getitem__(self, key: str) -> dict[str, Any]:
        held = self._keys[key]
        area = self.gazetteer.lookup(*held)
        if area is None:
            raise KeyError(key)
        return area.as_json()

    def pop(self, key: str, default: Any = None) -> Any:
        """Drop the key (the mirror's delete); no record is rebuilt to be returned."""
        present = key in self._keys
        self.__delitem__(key)
        return True if present else default

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._keys))

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def until(self, holds: Any, timeout_s: float) -> bool:
        """Wait (bounded) until `holds()` is true after the mirror's changes; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not holds():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
            except TimeoutError:
                return bool(holds())
        return True

    async def holds(self, records: Records, scheme: str, code: str) -> bool:
        """Whether the area exists: in this node's gazetteer, or in the bucket (an import on
        another node a moment ago, or before this node's mirror read it)."""
        if self.gazetteer.lookup(scheme, code) is not None:
            return True
        if scheme in self.gazetteer.builtin_schemes:
            return False
        key = key_for(scheme, code)
        raw = await records.get(key)
        if raw is None:
            return False
        try:
            decode(key, raw, self.gazetteer)
        except GazetteerInvalid:
            return False
        return True

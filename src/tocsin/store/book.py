"""A bucket's records as a node's mirror holds them, each also read into its value type.

The bucket mirror (`KvRecords.mirror`) writes the raw records in; readers ask for the
parsed values. Reading is fail-closed: a record that does not parse, or whose name is not
its key, is kept raw but stands for nothing (a route that routes nothing, a source that is
never polled).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Book(MutableMapping[str, dict[str, Any]], Generic[T]):
    """Raw records by key, and beside them the values they parse into."""

    def __init__(self, parse: Callable[[dict[str, Any]], T | None], name_of: Callable[[T], str]) -> None:
        self._parse = parse
        self._name_of = name_of
        self._records: dict[str, dict[str, Any]] = {}
        self._values: dict[str, T] = {}

    def __getitem__(self, key: str) -> dict[str, Any]:
        return self._records[key]

    def __setitem__(self, key: str, value: dict[str, Any]) -> None:
        self._records[key] = value
        parsed = self._parse(value) if isinstance(value, dict) else None
        if parsed is not None and self._name_of(parsed) == key:
            self._values[key] = parsed
        else:
            self._values.pop(key, None)

    def __delitem__(self, key: str) -> None:
        del self._records[key]
        self._values.pop(key, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def value(self, key: str) -> T | None:
        return self._values.get(key)

    def values_by_name(self) -> list[T]:
        """Every readable value, in the order of their names."""
        return [self._values[key] for key in sorted(self._values)]

    def items_parsed(self) -> Iterator[tuple[str, T]]:
        return iter(self._values.items())

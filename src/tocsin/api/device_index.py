"""The audience index: every registered device in columns, and which devices follow which cells.

Every node holds all of the device bucket (a million devices is the aim), so that a device
that moves over from a lost node is authenticated from memory and a preview counts an
alert's audience without reading the bucket. Nothing here is a Python object per device:

- a device is a *slot*, an integer; its fields are columns (numpy arrays grown by half
  again when full): the secret's digest, created/renewed seconds, flags, a language-list id,
  a channel id, a generation, and where its cells sit in one shared pool of uint64 cells;
- ids of the form the API gives (`dev_` + 24 hex digits) map to slots through a sorted pair
  of arrays (96 bits of the id) plus a small dict of the latest ids, merged in when it holds
  `_MERGE_AT`; other ids (none the API makes) through a plain dict;
- the inverted index is one `array('Q')` per cell (a few tens of thousands of cells for
  France), each entry `generation << 32 | slot`. Deleting or re-celling a device bumps its
  generation instead of searching lists: older entries stop counting at once and are
  dropped, with dead slots and unused pool cells, by `compact()` once they outweigh the live.

About 155-160 bytes a device for the index, 180-187 of a node's RSS, at a million devices
with 1-8 places (bench/audience_bench.py; docs/performance.md, "Audience index").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import sys
import time
import zipfile
from array import array
from collections.abc import Collection, Iterator, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h3.api.basic_int as h3int
import numpy as np
import numpy.typing as npt

from tocsin.api.device_records import LIVE, Reach, epoch, record_json
from tocsin.audience import Audience
from tocsin.geo.cells import CELL_RESOLUTION, Cover
from tocsin.store.base import StreamPosition

_TESTS, _CANARY, _SEEN, _USED, _ODD = 1, 2, 4, 8, 16
_MIN_CAPACITY = 1024
# Slots a snapshot copies with the event loop held (each a few ms at a million devices).
_SNAPSHOT_CHUNK = 32768
_MERGE_AT = 65536
# Compact once dead slots, stale postings or unused pool cells outnumber this and the live.
_COMPACT_MIN = 65536
# Language lists kept as given; past this many distinct ones, a device keeps its first only.
_MAX_LANGUAGE_LISTS = 65536
_MAX_CHANNELS = 255
_MAX_CELLS = 255
_CANONICAL_ID = re.compile(r"dev_[0-9a-f]{24}")
_LOW32 = np.uint64(0xFFFFFFFF)
# A record exactly as json.dumps(record_json(...)) writes it, with an optional channel last.
_RECORD = re.compile(
    rb'\{"cells": \[((?:"[0-9a-f]{15}"(?:, "[0-9a-f]{15}")*)?)\], '
    rb'"languages": \[((?:"[A-Za-z0-9-]{1,80}"(?:, "[A-Za-z0-9-]{1,80}")*)?)\], '
    rb'"tests": (true|false), "canary": (true|false), "secret_sha256": "([0-9a-f]{64})", '
    rb'"created": "([0-9T:.+-]{1,40})", "renewed": "([0-9T:.+-]{1,40})"(?:, "channel": "([A-Za-z0-9_.-]{1,64})")?\}'
)

Column = npt.NDArray[Any]
# A record as the columns hold it: digest, created, renewed, flags, language list, channel, cells.
Row = tuple[bytes, int, int, int, int, int, list[int]]


@functools.lru_cache(maxsize=1024)  # a batch asks twice (its slots, then its fresh ids)
def _id_bits(key: str) -> tuple[int, int] | None:
    """The 96 bits of an id the API made (high 64, low 32), or None for any other id."""
    if len(key) != 28 or not _CANONICAL_ID.fullmatch(key):
        return None
    return int(key[4:20], 16), int(key[20:], 16)


def _seconds(raw: object) -> int:
    """`epoch` without its str(): records hold their dates as text."""
    if isinstance(raw, str):
        try:
            return max(0, int(datetime.fromisoformat(raw).timestamp()))
        except (ValueError, OverflowError):
            return 0
    return epoch(raw)


def _loads(payload: bytes) -> Any:
    """A value as JSON, or None (which `_row` refuses) when it is not."""
    try:
        return json.loads(payload)
    except ValueError:
        return None


def _grown(column: Column, capacity: int) -> Column:
    bigger = np.zeros((capacity, *column.shape[1:]), column.dtype)
    bigger[: len(column)] = column
    return bigger


class DeviceIndex(MutableMapping[str, dict[str, Any]]):
    """Device records by id (reading one gives its JSON form back), and `reach`.

    Keeps what authentication and audiences need: cells, languages, flags, the secret's
    digest, created/renewed (whole seconds) and the channel; other fields of a record are
    not kept. Raises ValueError on a record it cannot hold (the bucket feed skips it).
    `loaded` turns true once the bucket feed finished its first pass (/readyz waits for it).
    """

    def __init__(self) -> None:
        self.loaded = False
        # Complete up to this message of the bucket's stream; None during a full pass (its
        # messages come by subject, not in order). The feed sets it, a snapshot records it.
        self.position: StreamPosition | None = None
        self._compactions = 0
        self._size = 0  # slots handed out, dead ones included
        self._live = 0
        self._dead = 0
        self._stale = 0  # postings of dead or re-celled slots
        capacity = _MIN_CAPACITY
        self._digest = np.zeros((capacity, 32), np.uint8)
        self._created = np.zeros(capacity, np.uint32)
        self._renewed = np.zeros(capacity, np.uint32)
        self._flags = np.zeros(capacity, np.uint8)
        self._language = np.zeros(capacity, np.uint32)
        self._channel = np.zeros(capacity, np.uint8)
        self._gen = np.zeros(capacity, np.uint32)
        self._cell_at = np.zeros(capacity, np.uint32)
        self._cell_n = np.zeros(capacity, np.uint8)
        self._id_hi = np.zeros(capacity, np.uint64)
        self._id_lo = np.zeros(capacity, np.uint32)
        self._pool = np.zeros(2 * capacity, np.uint64)
        self._pool_used = 0
        self._pool_unused = 0
        self._postings: dict[int, array[int]] = {}
        self._sorted_hi = np.zeros(0, np.uint64)
        self._sorted_lo = np.zeros(0, np.uint32)
        self._sorted_slot = np.zeros(0, np.int32)  # -1: deleted since the last merge
        self._recent: dict[str, int] = {}
        self._odd: dict[str, int] = {}
        self._odd_names: dict[int, str] = {}
        self._languages: list[tuple[str, ...]] = [()]
        self._language_ids: dict[tuple[str, ...], int] = {(): 0}
        self._channels: list[str] = [LIVE]
        self._channel_ids: dict[str, int] = {LIVE: 0}

    # -- the mapping ---------------------------------------------------------------------

    def __len__(self) -> int:
        return self._live

    def __iter__(self) -> Iterator[str]:
        for slot in np.flatnonzero(self._flags[: self._size] & _USED).tolist():
            yield self._name(slot)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._slot(key) >= 0

    def __getitem__(self, key: str) -> dict[str, Any]:
        slot = self._slot(key)
        if slot < 0:
            raise KeyError(key)
        flags = int(self._flags[slot])
        at, n = int(self._cell_at[slot]), int(self._cell_n[slot])
        record = record_json(
            cells=[format(cell, "x") for cell in self._pool[at: at + n].tolist()],
            languages=self._languages[int(self._language[slot])],
            tests=bool(flags & _TESTS), canary=bool(flags & _CANARY),
            secret_sha256=self._digest[slot].tobytes().hex(),
            created=datetime.fromtimestamp(int(self._created[slot]), UTC),
            renewed=datetime.fromtimestamp(int(self._renewed[slot]), UTC),
        )
        channel = self._channels[int(self._channel[slot])]
        if channel != LIVE:
            record["channel"] = channel
        return record

    def __setitem__(self, key: str, record: dict[str, Any]) -> None:
        row = self._row(record)
        slot = self._slot(key)
        self._write(self._new_slot(key) if slot < 0 else slot, row)

    def _write(self, slot: int, row: Row) -> None:
        digest, created, renewed, flags, language, channel, cells = row
        self._set_cells(slot, cells)
        self._digest[slot] = np.frombuffer(digest, np.uint8)
        self._created[slot] = created
        self._renewed[slot] = renewed
        self._flags[slot] = flags | _USED | _SEEN | (int(self._flags[slot]) & _ODD)
        self._language[slot] = language
        self._channel[slot] = channel

    def __delitem__(self, key: str) -> None:
        slot = self._slot(key)
        if slot < 0:
            raise KeyError(key)
        self._forget_id(key)
        self._retire(slot)
        self._compact_if_due()

    def put_many(self, items: list[tuple[str, bytes]]) -> int:
        """Put many JSON records at once (the bucket feed's path, about 11-13 µs a record
        on a 2-vCPU Xeon):
        new ids fill a block of fresh slots with one numpy write per column. Returns how
        many values were left out as unreadable (a read of that key finds the same)."""
        rows: list[tuple[str, Row]] = []
        for key, payload in items:
            try:
                canonical = _RECORD.fullmatch(payload)
                rows.append((key, self._canonical_row(canonical) if canonical else self._row(_loads(payload))))
            except (ValueError, TypeError, AttributeError):
                pass
        fresh: dict[str, int] = {}
        again: list[int] = []
        for i, slot in enumerate(self._slots([key for key, _ in rows])):
            if slot >= 0 or rows[i][0] in fresh:
                again.append(i)
            else:
                fresh[rows[i][0]] = i
        if fresh:
            self._put_fresh([rows[i] for i in fresh.values()])
        for i in again:
            self._write(self._slot(rows[i][0]), rows[i][1])
        return len(items) - len(rows)

    def _slots(self, keys: list[str]) -> list[int]:
        """`_slot` for many keys: one searchsorted for the ids the API made."""
        found = [self._recent.get(key, -1) for key in keys]
        sought: list[tuple[int, tuple[int, int]]] = []
        for i, key in enumerate(keys):
            if found[i] < 0:
                bits = _id_bits(key)
                if bits is None:
                    found[i] = self._odd.get(key, -1)
                else:
                    sought.append((i, bits))
        if not sought or not len(self._sorted_hi):
            return found
        hi = np.fromiter((bits[0] for _, bits in sought), np.uint64, len(sought))
        lo = np.fromiter((bits[1] for _, bits in sought), np.uint32, len(sought))
        at = np.minimum(np.searchsorted(self._sorted_hi, hi), len(self._sorted_hi) - 1)
        same_hi = self._sorted_hi[at] == hi
        match = same_hi & (self._sorted_lo[at] == lo)
        slots = np.where(match, self._sorted_slot[at], -1).tolist()
        for (i, bits), slot, unsure in zip(sought, slots, (same_hi & ~match).tolist()):
            found[i] = self._slot(keys[i]) if unsure else slot  # 64 equal bits: look further
        return found

    def _put_fresh(self, rows: list[tuple[str, Row]]) -> None:
        """New ids, each once: slots size..size+n, written column by column."""
        start, n = self._size, len(rows)
        if start + n > len(self._flags):
            self._grow(max(len(self._flags) + len(self._flags) // 2, start + n))
        cells_of = [row[6] for _, row in rows]
        counts = np.fromiter((len(c) for c in cells_of), np.int64, n)
        cells = np.fromiter((c for group in cells_of for c in group), np.uint64, int(counts.sum()))
        if self._pool_used + len(cells) > len(self._pool):
            self._pool = _grown(self._pool, max(len(self._pool) * 3 // 2, self._pool_used + len(cells)))
        at = self._pool_used
        self._pool[at: at + len(cells)] = cells
        self._pool_used += len(cells)
        block = slice(start, start + n)
        self._cell_at[block] = at + np.cumsum(counts) - counts
        self._cell_n[block] = counts
        self._digest[block] = np.frombuffer(b"".join(row[0] for _, row in rows), np.uint8).reshape(n, 32)
        for column, field_at in ((self._created, 1), (self._renewed, 2), (self._language, 4), (self._channel, 5)):
            column[block] = [row[field_at] for _, row in rows]
        flags = np.array([row[3] for _, row in rows], np.uint8) | np.uint8(_USED | _SEEN)
        self._gen[block] = 0
        self._size += n
        self._live += n
        his, los = [0] * n, [0] * n
        recent, postings = self._recent, self._postings
        for i, (key, _) in enumerate(rows):
            slot = start + i
            bits = _id_bits(key)
            if bits is None:
                self._odd[key] = slot
                self._odd_names[slot] = key
                flags[i] |= _ODD
            else:
                his[i], los[i] = bits
                recent[key] = slot
            for cell in cells_of[i]:
                found = postings.get(cell)
                if found is None:
                    found = postings[cell] = array("Q")
                found.append(slot)
        self._id_hi[block], self._id_lo[block] = his, los
        self._flags[block] = flags
        if len(self._recent) >= _MERGE_AT:
            self._merge()

    def discard(self, key: str) -> None:
        """Drop the key if held (the feed's delete; cheaper than `pop`, which reads it)."""
        if self._slot(key) >= 0:
            del self[key]

    # -- the bucket feed's passes ----------------------------------------------------------

    def begin_pass(self) -> None:
        """A feed (re)starts: from now on, records it puts are marked as met."""
        self._flags[: self._size] &= np.uint8(0xFF ^ _SEEN)

    def end_pass(self, *, drop_unmet: bool = True) -> None:
        """The feed met every record present when it began: drop those it did not meet
        (deleted or expired while no feed ran), then mark the index loaded. A pass that
        began from a snapshot (every message after it, in order) drops nothing."""
        flags = self._flags[: self._size]
        gone = np.flatnonzero((flags & _USED != 0) & (flags & _SEEN == 0)) if drop_unmet else np.zeros(0, np.intp)
        for slot in gone.tolist():
            self._retire(int(slot))
        if len(gone):
            self.compact()
        else:
            self._merge()
        self.loaded = True

    # -- snapshots (a restart loads one, then reads only what the stream holds after it) ----

    def snapshot(self) -> Snapshot | None:
        """A copy to write from a thread (`Snapshot.write`), or None while no position is
        known, in one go (tests, small indexes; the node uses `snapshot_in_chunks`)."""
        return None if self.position is None else _snapshot(self, self.position)

    async def snapshot_in_chunks(self, chunk: int = _SNAPSHOT_CHUNK) -> tuple[Snapshot | None, float]:
        """`snapshot`, copied `chunk` slots at a time with the event loop free in between;
        returns it (None if a compaction renumbered the slots meanwhile: try again later)
        and the longest the loop was held (docs/performance.md, "Audience index").

        Puts, deletes and new slots that land between chunks are fine: the snapshot's
        position is the one when the copy began, and a load replays every message after
        it, so each key ends as its last message says, whichever of its states was copied.
        New slots past the starting size are left out (their messages come after the
        position); odd ids are taken at the start (a slot retired later keeps its name).
        What needs one numbering of slots and pool cells, a compaction, aborts the copy.
        """
        position = self.position
        if position is None:
            return None, 0.0
        compactions, size = self._compactions, self._size
        odd = {str(slot): name for slot, name in self._odd_names.items() if slot < size}
        columns = {name: np.empty((size, *getattr(self, name).shape[1:]), getattr(self, name).dtype)
                   for name in _SLOT_COLUMNS}
        longest = 0.0
        for start in range(0, size, chunk):
            if self._compactions != compactions:
                return None, longest
            began = time.perf_counter()
            end = min(size, start + chunk)
            for name, column in columns.items():
                column[start:end] = getattr(self, name)[start:end]
            longest = max(longest, time.perf_counter() - began)
            await asyncio.sleep(0)
        # Pool cells are only appended between compactions: those the copied rows use stay put.
        used = self._pool_used
        pool = np.empty(used, np.uint64)
        for start in range(0, used, 4 * chunk):
            if self._compactions != compactions:
                return None, longest
            began = time.perf_counter()
            end = min(used, start + 4 * chunk)
            pool[start:end] = self._pool[start:end]
            longest = max(longest, time.perf_counter() - began)
            await asyncio.sleep(0)
        if self._compactions != compactions:
            return None, longest
        columns["_pool"] = pool
        tables = {"size": size, "languages": [list(x) for x in self._languages],
                  "channels": list(self._channels), "odd": odd}
        return Snapshot(position, columns, tables), longest

    @classmethod
    def load(cls, path: Path) -> DeviceIndex:
        """The index a snapshot file holds, with its `position`, not yet `loaded` (the feed
        first reads what followed). Seconds at a million devices: call it in a thread.

        Raises:
            SnapshotRefused: not a whole snapshot of this format (truncated, corrupt, other).
        """
        index, position = _restored(path)
        index.position = position
        return index

    def adopt(self, other: DeviceIndex) -> None:
        """Hold what `other` holds (a loaded snapshot), in place: the node keeps this object."""
        self.__dict__.update(other.__dict__)

    def drop_renewed_before(self, cutoff_s: int) -> int:
        """Drop the records last written before `cutoff_s` (Unix seconds): past the TTL, the
        bucket has dropped them by age. Returns how many."""
        flags = self._flags[: self._size]
        gone = np.flatnonzero((flags & _USED != 0) & (self._renewed[: self._size] < cutoff_s))
        if not len(gone):
            return 0
        for slot in gone.tolist():
            name = self._name(slot)
            self._forget_id(name)
            self._retire(slot)
        self._compact_if_due()
        return len(gone)

    # -- audiences -------------------------------------------------------------------------

    def reach(self, cover: Cover, status: str) -> Reach:
        """The devices whose cells `cover` touches and whose audience receives `status`,
        each once; expired records count until the bucket drops them.

        Call it on the event loop, as the feed runs (not in a thread): it reads the cells'
        arrays in place, and an array cannot grow while it is read.
        """
        chosen = self._chosen(cover, status)
        if not len(chosen):
            return Reach()
        by_channel = {self._channels[i]: int(n) for i, n in enumerate(np.bincount(self._channel[chosen])) if n}
        by_language: dict[str, int] = {}
        for list_id, n in enumerate(np.bincount(self._language[chosen]).tolist()):
            if n:
                languages = self._languages[list_id]
                first = languages[0] if languages else ""
                by_language[first] = by_language.get(first, 0) + n
        return Reach(devices=len(chosen), by_channel=by_channel, by_language=by_language)

    def count(self, channel: str) -> int:
        """FPAS: the live devices on `channel` (one vectorised pass over two columns)."""
        found = self._channel_ids.get(channel)
        if found is None:
            return 0
        size = self._size
        live = (self._flags[:size] & _USED) != 0
        return int(np.count_nonzero(live & (self._channel[:size] == found)))

    def members(self, cover: Cover | None, status: str, channels: Collection[str]) -> list[tuple[str, str]]:
        """(device id, channel) of the devices `reach` counts whose channel is one of
        `channels`; `cover` None: every device (a correction, `Active.everywhere`).

        The planner's question (delivery/planner.py). On the event loop, as `reach`.
        """
        wanted = [self._channel_ids[channel] for channel in channels if channel in self._channel_ids]
        if not wanted:
            return []
        chosen = self._chosen(cover, status)
        chosen = chosen[np.isin(self._channel[chosen], np.array(wanted, np.uint8))]
        names, channel_of = self._channels, self._channel[chosen].tolist()
        return [(self._name(slot), names[c]) for slot, c in zip(chosen.tolist(), channel_of)]

    def _chosen(self, cover: Cover | None, status: str) -> Column:
        """The live slots whose cells `cover` touches (all live slots for None) and whose
        audience receives `status`, each once, in slot order."""
        if cover is None:
            chosen = np.flatnonzero(self._flags[: self._size] & _USED)
        else:
            cells = h3int.uncompact_cells([int(cell, 16) for cell in cover.cells], CELL_RESOLUTION)
            postings = self._postings
            parts = [np.frombuffer(found, np.uint64) for cell in cells if (found := postings.get(cell))]
            if not parts:
                return np.zeros(0, np.intp)
            entries = np.concatenate(parts)
            del parts  # the views hold the cells' arrays: let them grow again
            slots = (entries & _LOW32).astype(np.intp)
            current = self._gen[slots] == (entries >> np.uint64(32)).astype(np.uint32)
            hit = np.zeros(self._size, np.bool_)
            hit[slots[current]] = True
            chosen = np.flatnonzero(hit)  # each device once
        receives = np.array([Audience(tests=bool(f & _TESTS), canary=bool(f & _CANARY)).receives(status)
                             for f in range(4)])
        kept: Column = chosen[receives[self._flags[chosen] & 3]]
        return kept

    # -- slots -----------------------------------------------------------------------------

    def _row(self, record: dict[str, Any]) -> Row:
        """What the columns hold of a record (the feed's hot path: a few µs)."""
        try:
            cells = [int(cell, 16) for cell in record["cells"]]
            digest = bytes.fromhex(record["secret_sha256"])
            language = self._language_id(tuple(record.get("languages") or ()))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a device record: {exc!r}") from None
        if len(digest) != 32 or len(cells) > _MAX_CELLS or (cells and not (min(cells) > 0 and max(cells) < 2**64)):
            raise ValueError("not a device record: a digest of 32 bytes and at most 255 H3 cells")
        created = _seconds(record.get("created"))
        renewed = _seconds(record.get("renewed")) or created
        if max(created, renewed) >= 2**32:
            raise ValueError("not a device record: a date past 2106")
        flags = (_TESTS if record.get("tests") is True else 0) | (_CANARY if record.get("canary") is True else 0)
        channel = record.get("channel")
        return (digest, created, renewed, flags, language,
                0 if channel is None or channel == LIVE else self._channel_id(str(channel or LIVE)), cells)

    def _canonical_row(self, found: re.Match[bytes]) -> Row:
        """`_row` of a record in the exact form `record_json` and json.dumps write (every
        record tocsin stores), read by one regular expression instead of a JSON decode."""
        cells_text, languages_text, tests, canary, digest, created_text, renewed_text, channel = found.groups()
        cells = [int(cell, 16) for cell in cells_text[1:-1].split(b'", "')] if cells_text else []
        languages = tuple(languages_text[1:-1].decode().split('", "')) if languages_text else ()
        try:
            created = max(0, int(datetime.fromisoformat(created_text.decode()).timestamp()))
            renewed = (created if renewed_text == created_text  # never renewed: most records
                       else max(0, int(datetime.fromisoformat(renewed_text.decode()).timestamp())) or created)
        except (ValueError, OverflowError):  # as `_seconds` reads it
            created, renewed = _seconds(created_text.decode()), _seconds(renewed_text.decode())
            renewed = renewed or created
        if len(cells) > _MAX_CELLS or max(created, renewed) >= 2**32:
            raise ValueError("not a device record: at most 255 cells, dates before 2106")
        flags = (_TESTS if tests == b"true" else 0) | (_CANARY if canary == b"true" else 0)
        return (bytes.fromhex(digest.decode()), created, renewed, flags, self._language_id(languages),
                0 if channel is None or channel == b"live" else self._channel_id(channel.decode()), cells)

    def _language_id(self, languages: tuple[str, ...]) -> int:
        found = self._language_ids.get(languages)
        if found is None:
            languages = tuple(sys.intern(str(x)) for x in languages)
            if len(self._languages) >= _MAX_LANGUAGE_LISTS and len(languages) > 1:
                return self._language_id(languages[:1])
            found = self._language_ids[languages] = len(self._languages)
            self._languages.append(languages)
        return found

    def _channel_id(self, channel: str) -> int:
        found = self._channel_ids.get(channel)
        if found is None:
            if len(self._channels) >= _MAX_CHANNELS:
                raise ValueError(f"not a device record: more than {_MAX_CHANNELS} channels")
            found = self._channel_ids[channel] = len(self._channels)
            self._channels.append(channel)
        return found

    def _slot(self, key: str) -> int:
        """The key's slot, or -1."""
        found = self._recent.get(key)
        if found is not None:
            return found
        bits = _id_bits(key)
        if bits is None:
            return self._odd.get(key, -1)
        at = self._sorted_at(*bits)
        return -1 if at < 0 else int(self._sorted_slot[at])

    def _sorted_at(self, hi: int, lo: int) -> int:
        """Where the sorted id arrays hold (hi, lo), or -1."""
        at = int(np.searchsorted(self._sorted_hi, np.uint64(hi)))
        while at < len(self._sorted_hi) and int(self._sorted_hi[at]) == hi:
            if int(self._sorted_lo[at]) == lo:
                return at
            at += 1
        return -1

    def _name(self, slot: int) -> str:
        if self._flags[slot] & _ODD:
            return self._odd_names[slot]
        return f"dev_{int(self._id_hi[slot]):016x}{int(self._id_lo[slot]):08x}"

    def _new_slot(self, key: str) -> int:
        if self._size == len(self._flags):
            self._grow(len(self._flags) + len(self._flags) // 2)
        slot = self._size
        self._size += 1
        self._live += 1
        bits = _id_bits(key)
        if bits is None:
            self._odd[key] = slot
            self._odd_names[slot] = key
            self._flags[slot] = _ODD
        else:
            self._id_hi[slot], self._id_lo[slot] = bits
            self._flags[slot] = 0
            self._recent[key] = slot
            if len(self._recent) >= _MERGE_AT:
                self._merge()
        self._cell_n[slot] = 0
        return slot

    def _grow(self, capacity: int) -> None:
        for name in ("_digest", "_created", "_renewed", "_flags", "_language", "_channel", "_gen",
                     "_cell_at", "_cell_n", "_id_hi", "_id_lo"):
            setattr(self, name, _grown(getattr(self, name), capacity))

    def _set_cells(self, slot: int, cells: list[int]) -> None:
        """Give the slot these cells; a renewal (the same cells) changes nothing here."""
        at, n = int(self._cell_at[slot]), int(self._cell_n[slot])
        used = bool(self._flags[slot] & _USED)
        if used and self._pool[at: at + n].tolist() == cells:
            return
        if used:
            self._gen[slot] += 1
            self._stale += n
            self._pool_unused += n
        if self._pool_used + len(cells) > len(self._pool):
            self._pool = _grown(self._pool, max(len(self._pool) * 3 // 2, self._pool_used + len(cells)))
        at = self._pool_used
        self._pool[at: at + len(cells)] = cells
        self._pool_used += len(cells)
        self._cell_at[slot], self._cell_n[slot] = at, len(cells)
        entry = (int(self._gen[slot]) << 32) | slot
        for cell in cells:
            found = self._postings.get(cell)
            if found is None:
                found = self._postings[cell] = array("Q")
            found.append(entry)

    def _forget_id(self, key: str) -> None:
        if self._recent.pop(key, None) is not None:
            return
        bits = _id_bits(key)
        if bits is None:
            slot = self._odd.pop(key)
            del self._odd_names[slot]
            return
        self._sorted_slot[self._sorted_at(*bits)] = -1

    def _retire(self, slot: int) -> None:
        """The slot holds no device any more; its postings stop counting at once."""
        n = int(self._cell_n[slot])
        self._gen[slot] += 1
        self._flags[slot] = 0
        self._stale += n
        self._pool_unused += n
        self._live -= 1
        self._dead += 1

    def _merge(self) -> None:
        """Move the latest ids into the sorted arrays (dropping deleted entries)."""
        if not self._recent and not (self._sorted_slot < 0).any():
            return
        slots = np.fromiter(self._recent.values(), np.int32, len(self._recent))
        keep = self._sorted_slot >= 0
        hi = np.concatenate([self._sorted_hi[keep], self._id_hi[slots]])
        lo = np.concatenate([self._sorted_lo[keep], self._id_lo[slots]])
        order = np.lexsort((lo, hi))
        self._sorted_hi, self._sorted_lo = hi[order], lo[order]
        self._sorted_slot = np.concatenate([self._sorted_slot[keep], slots])[order]
        self._recent = {}

    def _compact_if_due(self) -> None:
        waste = max(self._dead, self._stale, self._pool_unused)
        if waste > _COMPACT_MIN and waste > self._live:
            self.compact()

    def compact(self) -> None:
        """Rebuild every column, the id map and the postings from the live slots only."""
        self._compactions += 1  # slots and pool cells renumbered: a snapshot copy under way stops
        live = np.flatnonzero(self._flags[: self._size] & _USED)
        odd = {int(old): self._odd_names[int(old)] for old in live[self._flags[live] & _ODD != 0].tolist()}
        counts = self._cell_n[live].astype(np.int64)
        starts = self._cell_at[live].astype(np.int64)
        within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        cells = self._pool[np.repeat(starts, counts) + within]
        capacity = max(_MIN_CAPACITY, len(live) + len(live) // 4)
        for name in ("_digest", "_created", "_renewed", "_flags", "_language", "_channel",
                     "_cell_n", "_id_hi", "_id_lo"):
            setattr(self, name, _grown(getattr(self, name)[live], capacity))
        self._gen = np.zeros(capacity, np.uint32)
        self._cell_at = _grown((np.cumsum(counts) - counts).astype(np.uint32), capacity)
        self._pool = _grown(cells, max(2 * _MIN_CAPACITY, len(cells) + len(cells) // 4))
        self._size = self._live = len(live)
        self._pool_used, self._dead, self._stale, self._pool_unused = len(cells), 0, 0, 0
        self._rebuild_postings(cells, np.repeat(np.arange(len(live), dtype=np.uint64), counts))
        new_slot = {old: new for new, old in enumerate(live.tolist()) if old in odd}
        self._odd = {name: new_slot[old] for old, name in odd.items()}
        self._odd_names = {slot: name for name, slot in self._odd.items()}
        self._recent = {}
        canonical = np.flatnonzero(self._flags[: self._size] & _ODD == 0).astype(np.int32)
        order = np.lexsort((self._id_lo[canonical], self._id_hi[canonical]))
        self._sorted_slot = canonical[order]
        self._sorted_hi, self._sorted_lo = self._id_hi[self._sorted_slot], self._id_lo[self._sorted_slot]
        self._drop_unused_lists()

    def _rebuild_postings(self, cells: Column, slots: Column) -> None:
        order = np.argsort(cells, kind="stable")
        cells, slots = cells[order], slots[order]
        distinct, starts = np.unique(cells, return_index=True)
        ends = [*starts[1:].tolist(), len(cells)]
        postings: dict[int, array[int]] = {}
        for cell, start, end in zip(distinct.tolist(), starts.tolist(), ends):
            entries = array("Q")
            entries.frombytes(slots[start:end].tobytes())
            postings[cell] = entries
        self._postings = postings

    def _drop_unused_lists(self) -> None:
        """Language lists no device uses any more leave the table (it stays bounded)."""
        used = np.unique(self._language[: self._size])
        if len(used) == len(self._languages):
            return
        lists = [self._languages[i] for i in used.tolist()] or [()]
        if () not in lists:
            lists.insert(0, ())
        position = {languages: i for i, languages in enumerate(lists)}
        remap = np.zeros(len(self._languages), np.uint32)
        remap[used] = [position[self._languages[i]] for i in used.tolist()]
        self._language[: self._size] = remap[self._language[: self._size]]
        self._languages, self._language_ids = lists, position


# -- snapshots -----------------------------------------------------------------------------

SNAPSHOT_FORMAT = "tocsin-device-index/1"
# The columns a snapshot holds, each trimmed to the slots (or pool cells) in use.
_SLOT_COLUMNS = ("_digest", "_created", "_renewed", "_flags", "_language", "_channel", "_gen",
                 "_cell_at", "_cell_n", "_id_hi", "_id_lo")


class SnapshotRefused(ValueError):
    """A snapshot file that is not a complete one of this format: the feed reads it all."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A copy of an index's columns and tables, taken on the event loop and written from a
    thread (`write`): nothing in it is shared with the index it came from."""

    position: StreamPosition
    columns: dict[str, Column]
    tables: dict[str, Any]

    def write(self, path: Path) -> None:
        """To `path` atomically: a temporary file beside it, fsynced, renamed over it."""
        meta = {"format": SNAPSHOT_FORMAT, "created": self.position.created, "seq": self.position.seq,
                "saved_at": datetime.now(UTC).isoformat(), **self.tables}
        arrays = {name.lstrip("_"): column for name, column in self.columns.items()}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(temporary, "wb") as out:
                savez: Any = np.savez  # its stubs read ** as its allow_pickle flag
                savez(out, allow_pickle=False, **arrays)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _snapshot(index: DeviceIndex, position: StreamPosition) -> Snapshot:
    size = index._size
    columns = {name: getattr(index, name)[:size].copy() for name in _SLOT_COLUMNS}
    columns["_pool"] = index._pool[: index._pool_used].copy()
    tables = {"size": size, "languages": [list(x) for x in index._languages],
              "channels": list(index._channels), "odd": {str(slot): name for slot, name in index._odd_names.items()}}
    return Snapshot(position, columns, tables)


def _restored(path: Path) -> tuple[DeviceIndex, StreamPosition]:
    """The index a snapshot file holds (compacted: postings and id arrays rebuilt), and its
    position. Raises SnapshotRefused on any file that is not a whole one of this format."""
    try:
        with open(path, "rb") as raw, np.load(raw, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}  # reading checks each CRC
        meta = json.loads(arrays.pop("meta").tobytes())
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise SnapshotRefused(f"unreadable: {exc!r}"[:300]) from None
    if not isinstance(meta, dict) or meta.get("format") != SNAPSHOT_FORMAT:
        raise SnapshotRefused(f"another format: {str(meta.get('format') if isinstance(meta, dict) else meta)[:80]}")
    index = DeviceIndex()
    try:
        size, created, seq = int(meta["size"]), str(meta["created"]), int(meta["seq"])
        for name in _SLOT_COLUMNS:
            column, like = arrays[name.lstrip("_")], getattr(index, name)
            if column.dtype != like.dtype or column.shape[1:] != like.shape[1:] or len(column) != size:
                raise SnapshotRefused(f"column {name} is not {like.dtype} of {size} rows")
        pool = arrays["pool"]
        if pool.dtype != np.uint64 or pool.ndim != 1:
            raise SnapshotRefused("the cell pool is not uint64")
        languages = [tuple(str(x) for x in group) for group in meta["languages"]]
        channels = [str(x) for x in meta["channels"]]
        odd = {int(slot): str(name) for slot, name in meta["odd"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SnapshotRefused(f"incomplete: {exc!r}"[:300]) from None
    used = arrays["flags"] & _USED != 0
    ends = arrays["cell_at"].astype(np.int64) + arrays["cell_n"]
    if (not languages or languages[0] != () or not channels or channels[0] != LIVE
            or len(channels) > _MAX_CHANNELS or len(set(languages)) != len(languages)
            or (size and (int(ends[used].max(initial=0)) > len(pool)
                          or int(arrays["language"][used].max(initial=0)) >= len(languages)
                          or int(arrays["channel"][used].max(initial=0)) >= len(channels)))
            or any(not 0 <= slot < size or not arrays["flags"][slot] & _ODD for slot in odd)
            or not set(np.flatnonzero(used & (arrays["flags"] & _ODD != 0)).tolist()) <= odd.keys()):
        raise SnapshotRefused("inconsistent columns or tables")
    for name in _SLOT_COLUMNS:
        setattr(index, name, arrays[name.lstrip("_")])
    index._pool, index._pool_used = pool, len(pool)
    index._size = size
    index._live = int(np.count_nonzero(used))
    index._languages, index._language_ids = languages, {x: i for i, x in enumerate(languages)}
    index._channels, index._channel_ids = channels, {x: i for i, x in enumerate(channels)}
    index._odd_names = {slot: name for slot, name in odd.items() if used[slot]}
    index.compact()  # postings, the sorted ids and the odd-id map, from the live slots
    return index, StreamPosition(created, seq)

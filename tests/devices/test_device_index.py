"""The audience index against plain references: random operations, exact reach, compaction."""

from __future__ import annotations

import json
import random
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import h3
import pytest

from tocsin.api.device_index import DeviceIndex
from tocsin.api.device_records import Reach, record_json
from tocsin.audience import Audience
from tocsin.geo.cells import Cover

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NICE = h3.latlng_to_cell(43.7102, 7.2620, 6)
MARSEILLE = h3.latlng_to_cell(43.2965, 5.3698, 6)
PARIS = h3.latlng_to_cell(48.8566, 2.3522, 6)
AROUND_NICE = sorted(h3.grid_disk(NICE, 2))
CELLS = sorted({*AROUND_NICE, *h3.grid_disk(MARSEILLE, 2), *h3.grid_disk(PARIS, 2)})
LANGUAGES = [[], ["fr"], ["en", "fr"], ["fr", "en"], ["de"], ["oc", "fr", "it"]]
STATUSES = ("Actual", "Test", "Exercise", "System", "Draft")


def _record(rng: random.Random, **changes: Any) -> dict[str, Any]:
    record = record_json(
        cells=sorted(rng.sample(CELLS, rng.randint(1, 8))), languages=rng.choice(LANGUAGES),
        tests=rng.random() < 0.3, canary=rng.random() < 0.1, secret_sha256=secrets.token_hex(32),
        created=NOW - timedelta(seconds=rng.randint(0, 10**6)), renewed=NOW,
    )
    if rng.random() < 0.2:
        record["channel"] = rng.choice(["webpush", "fcm"])
    record.update(changes)
    return record


def _reference_reach(records: dict[str, dict[str, Any]], cover: Cover, status: str) -> Reach:
    """The plain O(N) count: what reach() must equal."""
    by_channel: dict[str, int] = {}
    by_language: dict[str, int] = {}
    devices = 0
    for record in records.values():
        if not Audience(tests=record["tests"], canary=record["canary"]).receives(status):
            continue
        if not any(cover.touches(cell) for cell in record["cells"]):
            continue
        devices += 1
        channel = record.get("channel") or "live"
        by_channel[channel] = by_channel.get(channel, 0) + 1
        first = record["languages"][0] if record["languages"] else ""
        by_language[first] = by_language.get(first, 0) + 1
    return Reach(devices=devices, by_channel=by_channel, by_language=by_language)


def _device_id(rng: random.Random) -> str:
    if rng.random() < 0.05:
        return f"dev_other-{rng.randrange(10**6)}"  # not the API's form: the plain-dict path
    return f"dev_{rng.getrandbits(96):024x}"


@pytest.mark.parametrize("seed", range(4))
def test_random_operations_match_a_plain_dict(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small thresholds so that merges and compactions happen many times in the run.
    monkeypatch.setattr("tocsin.api.device_index._MERGE_AT", 7)
    monkeypatch.setattr("tocsin.api.device_index._COMPACT_MIN", 5)
    rng = random.Random(seed)
    index, reference = DeviceIndex(), {}
    covers = [Cover.of(AROUND_NICE), Cover.of([PARIS]), Cover.of(CELLS), Cover.of([h3.cell_to_parent(NICE, 4)])]
    for step in range(3000):
        action = rng.random()
        if action < 0.45 or not reference:
            key = _device_id(rng)
            reference[key] = index_record = _record(rng)
            index[key] = index_record
        elif action < 0.65:  # overwrite: other cells, or a renewal with the same ones
            key = rng.choice(list(reference))
            record = _record(rng) if rng.random() < 0.5 else {**reference[key], "renewed": (NOW + timedelta(days=1)).isoformat()}
            reference[key] = record
            index[key] = record
        elif action < 0.9:
            key = rng.choice(list(reference))
            del reference[key]
            del index[key]
        else:  # a delete of a key that is not there changes nothing
            index.discard(_device_id(rng))
        if step % 250 == 0 or step == 2999:
            assert len(index) == len(reference)
            assert sorted(index) == sorted(reference)
            for key, record in reference.items():
                assert index[key] == record
            for cover in covers:
                for status in STATUSES:
                    assert index.reach(cover, status) == _reference_reach(reference, cover, status)
    assert "dev_never" not in index
    with pytest.raises(KeyError):
        index["dev_never"]


def _device(cells: list[str], *, languages: list[str] | None = None, tests: bool = False,
            canary: bool = False, channel: str | None = None) -> dict[str, Any]:
    record = record_json(cells=cells, languages=languages or [], tests=tests, canary=canary,
                         secret_sha256=secrets.token_hex(32), created=NOW, renewed=NOW)
    if channel:
        record["channel"] = channel
    return record


def test_reach_counts_each_device_once_by_status_channel_and_first_language() -> None:
    index = DeviceIndex()
    index["dev_" + "1" * 24] = _device([NICE, AROUND_NICE[0]], languages=["fr", "en"])  # two cells in the cover
    index["dev_" + "2" * 24] = _device([NICE], languages=["en"], tests=True, channel="webpush")
    index["dev_" + "3" * 24] = _device([AROUND_NICE[1]], canary=True)
    index["dev_" + "4" * 24] = _device([MARSEILLE], languages=["fr"])  # outside
    cover = Cover.of(AROUND_NICE)
    assert index.reach(cover, "Actual") == Reach(devices=3, by_channel={"live": 2, "webpush": 1},
                                                 by_language={"fr": 1, "en": 1, "": 1})
    assert index.reach(cover, "Test") == Reach(devices=1, by_channel={"webpush": 1}, by_language={"en": 1})
    assert index.reach(cover, "Exercise").devices == 1
    assert index.reach(cover, "System") == Reach(devices=1, by_channel={"live": 1}, by_language={"": 1})
    assert index.reach(cover, "Draft") == Reach()
    # A compacted cover (a coarser ancestor) reaches the same devices.
    assert index.reach(Cover.of([h3.cell_to_parent(NICE, 3)]), "Actual").devices == 3
    assert index.reach(Cover(), "Actual") == Reach()
    # Moved away: the old cells stop counting at once.
    index["dev_" + "1" * 24] = _device([PARIS], languages=["fr"])
    assert index.reach(cover, "Actual").devices == 2
    assert index.reach(Cover.of([PARIS]), "Actual") == Reach(devices=1, by_channel={"live": 1}, by_language={"fr": 1})
    del index["dev_" + "2" * 24]
    assert index.reach(cover, "Actual").devices == 1


def test_a_pass_that_does_not_meet_a_key_drops_it_and_marks_the_index_loaded() -> None:
    index = DeviceIndex()
    kept, lost = "dev_" + "a" * 24, "dev_" + "b" * 24
    index[kept] = _device([NICE])
    index[lost] = _device([NICE])
    index["dev_odd-one"] = _device([PARIS])
    assert not index.loaded
    index.begin_pass()
    index[kept] = _device([NICE])
    index["dev_odd-one"] = _device([PARIS])
    index.end_pass()
    assert index.loaded
    assert sorted(index) == sorted([kept, "dev_odd-one"])
    assert index.reach(Cover.of([NICE]), "Actual").devices == 1


def test_records_it_cannot_hold_are_refused_and_change_nothing() -> None:
    index = DeviceIndex()
    good = _device([NICE])
    for bad in ({**good, "cells": ["not hex"]}, {**good, "cells": None}, {**good, "secret_sha256": "abcd"},
                {k: v for k, v in good.items() if k != "cells"}, {**good, "cells": [format(2**64, "x")]}):
        with pytest.raises(ValueError):
            index["dev_" + "c" * 24] = bad
    assert len(index) == 0
    assert "dev_" + "c" * 24 not in index


def test_the_feed_s_batches_equal_puts_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """put_many reads canonical records by a regular expression and others as JSON: the same
    index either way, a value it cannot read left out, later values of a key winning."""
    monkeypatch.setattr("tocsin.api.device_index._MERGE_AT", 5)
    rng = random.Random(7)
    keys = [_device_id(rng) for _ in range(40)]
    items: list[tuple[str, bytes]] = []
    reference = DeviceIndex()
    for i, key in enumerate(keys + keys[:10]):  # ten keys twice: the second value wins
        record = _record(rng)
        if i < 28 or i % 2:  # dates as tocsin writes them, with microseconds
            micro = NOW.replace(microsecond=1 + i)
            record.update(created=(micro - timedelta(days=i)).isoformat(), renewed=micro.isoformat())
        # Canonical bytes (as tocsin writes them) and the same record in other JSON spellings.
        payload = json.dumps(record).encode() if i % 3 else json.dumps(record, indent=1, sort_keys=True).encode()
        items.append((key, payload))
        reference[key] = record
    items.insert(5, (_device_id(rng), b"{not json"))
    items.insert(9, (_device_id(rng), b'{"cells": ["zz"], "languages": [], "tests": false}'))
    batched = DeviceIndex()
    for start in range(0, len(items), 7):
        assert batched.put_many(items[start:start + 7]) == sum(
            1 for _, payload in items[start:start + 7] if payload.startswith((b"{not", b'{"cells": ["zz"]')))
    assert sorted(batched) == sorted(reference)
    assert all(batched[key] == reference[key] for key in reference)
    cover = Cover.of(CELLS)
    assert batched.reach(cover, "Actual") == reference.reach(cover, "Actual")


def test_compaction_keeps_every_live_device_and_drops_the_rest() -> None:
    rng = random.Random(3)
    index, reference = DeviceIndex(), {}
    for _ in range(2000):
        key = _device_id(rng)
        reference[key] = index_record = _record(rng)
        index[key] = index_record
    for key in list(reference)[::2]:
        del reference[key]
        del index[key]
    index.compact()
    assert sorted(index) == sorted(reference)
    assert all(index[key] == record for key, record in reference.items())
    assert index.reach(Cover.of(CELLS), "Actual") == _reference_reach(reference, Cover.of(CELLS), "Actual")
    assert sum(len(entries) for entries in index._postings.values()) == sum(len(r["cells"]) for r in reference.values())

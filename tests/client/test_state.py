"""The watcher's state file: atomic, reloadable, pruned."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tocsin.client.state import (
    SHOWN_MARGIN,
    Registration,
    Shown,
    Standing,
    StateInvalid,
    WatchState,
    load_state,
    save_state,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
REG = Registration(
    device_id="dev_1", token="dev_1.secret", node="http://a", cells=("861fb4677ffffff",),
    languages=("fr", "en"), tests=True,
)


def _state() -> WatchState:
    return WatchState(
        registration=REG,
        keys={"abcd": {"kty": "OKP", "crv": "Ed25519", "x": "AA", "kid": "abcd"}},
        last_seq=42,
        shown={("s@x", "a1"): Shown(expires=NOW + timedelta(hours=1)),
               ("s@x", "a2"): Shown(expires=NOW - SHOWN_MARGIN - timedelta(seconds=1)),
               ("s@x", "a3"): Shown(expires=NOW - timedelta(seconds=1), standing=Standing.CANCELLED, displayed=False)},
    )


def test_missing_file_or_no_path_gives_fresh_state(tmp_path: Path) -> None:
    assert load_state(None) == WatchState()
    assert load_state(tmp_path / "absent.json") == WatchState()


def test_saved_state_reloads_identically(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    save_state(path, _state())
    assert load_state(path) == _state()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_save_replaces_atomically_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    save_state(path, _state())
    inode = path.stat().st_ino
    state = _state()
    state.last_seq = 43
    save_state(path, state)
    assert load_state(path).last_seq == 43
    assert path.stat().st_ino != inode  # a new file renamed over the old one
    assert os.listdir(tmp_path) == ["state.json"]


def test_failed_save_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    save_state(path, _state())

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    state = _state()
    state.last_seq = 99
    with pytest.raises(OSError):
        save_state(path, state)
    monkeypatch.undo()
    assert load_state(path).last_seq == 42
    assert os.listdir(tmp_path) == ["state.json"]


def test_prune_forgets_identities_expired_past_the_margin_only() -> None:
    state = _state()
    assert state.prune(NOW) == 1
    assert set(state.shown) == {("s@x", "a1"), ("s@x", "a3")}
    assert state.prune(NOW + SHOWN_MARGIN + timedelta(hours=2)) == 2 and not state.shown


def test_what_was_shown_and_superseded_survives_a_save(tmp_path: Path) -> None:
    state = _state()
    chain = state.supersede((("s@x", "a1"), ("s@x", "never")), Standing.REPLACED, NOW + timedelta(hours=2))
    assert chain == (("s@x", "a1"), ("s@x", "never"))
    state.shown[("s@x", "u1")] = Shown(expires=NOW + timedelta(hours=2), replaces=chain, fingerprint="f", sent=NOW)
    save_state(tmp_path / "s.json", state)
    loaded = load_state(tmp_path / "s.json")
    assert loaded.shown == state.shown
    assert loaded.shown[("s@x", "never")] == Shown(expires=NOW + timedelta(hours=2), standing=Standing.REPLACED,
                                                  displayed=False)
    # A Cancel of the Update retracts the whole chain; a cancelled one stays cancelled.
    assert loaded.supersede((("s@x", "u1"),), Standing.CANCELLED, NOW) == (("s@x", "u1"), ("s@x", "a1"), ("s@x", "never"))
    assert {loaded.shown[i].standing for i in chain} == {Standing.CANCELLED}
    loaded.supersede((("s@x", "a3"),), Standing.REPLACED, NOW)
    assert loaded.shown[("s@x", "a3")].standing is Standing.CANCELLED


def test_a_version_1_state_reads_its_identities_as_shown(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"version": 1, "seen": [{"sender": "s@x", "identifier": "a1",
                                                        "expires": NOW.isoformat()}]}))
    assert load_state(path).shown == {("s@x", "a1"): Shown(expires=NOW)}


def test_registration_matches_only_same_request() -> None:
    assert REG.matches(("861fb4677ffffff",), ("fr", "en"), True)
    assert not REG.matches(("861fb4677ffffff",), ("fr",), True)
    assert not REG.matches(("861fb4677ffffff",), ("fr", "en"), False)


@pytest.mark.parametrize("content", ["not json", "[]", '{"version": 9}', '{"version": 1, "seen": [{}]}'])
def test_unreadable_state_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(content)
    with pytest.raises(StateInvalid):
        load_state(path)


def test_state_file_is_plain_json(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    save_state(path, _state())
    raw = json.loads(path.read_text())
    assert raw["version"] == 2 and raw["last_seq"] == 42
    assert raw["registration"]["token"] == "dev_1.secret"

"""The watcher's memory: registration, trusted keys, last event seq and shown alerts."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from tocsin.secret_file import write_secret

log = logging.getLogger(__name__)

# An alert is identified by its CAP sender and identifier (CAP 1.2 §3.2.1).
Identity = tuple[str, str]

_VERSION = 2
# Version 1 kept only the identities shown and their expiry; it is read as shown, current.
_READABLE = (1, 2)
# A record of what was shown is kept this long after the alert expires: a device clock a
# little behind, or an old node replaying it, still finds it (and never shows it again).
SHOWN_MARGIN = timedelta(hours=1)


class Standing(StrEnum):
    """Where an alert this device knows of stands now."""

    CURRENT = "current"  # shown, and what the device shows for it
    REPLACED = "replaced"  # an Update since replaced it: no longer current
    CANCELLED = "cancelled"  # a Cancel since retracted it: never shown again


@dataclass(frozen=True, slots=True, kw_only=True)
class Shown:
    """What the device showed of one alert (or learned it must never show: `displayed`
    False, an alert an Update or Cancel superseded before this device showed it)."""

    expires: datetime
    standing: Standing = Standing.CURRENT
    displayed: bool = True
    # The alerts this one replaced or retracted, with those they had replaced (its chain).
    replaces: tuple[Identity, ...] = ()
    # For coalescing identical messages (decide.py): the CAP content's fingerprint and sent.
    fingerprint: str = ""
    sent: datetime | None = None

    @property
    def is_current(self) -> bool:
        return self.displayed and self.standing is Standing.CURRENT

    def as_json(self, identity: Identity) -> dict[str, Any]:
        data: dict[str, Any] = {"sender": identity[0], "identifier": identity[1], "expires": self.expires.isoformat(),
                                "standing": self.standing.value, "displayed": self.displayed}
        if self.replaces:
            data["replaces"] = [list(i) for i in self.replaces]
        if self.fingerprint:
            data["fingerprint"] = self.fingerprint
        if self.sent is not None:
            data["sent"] = self.sent.isoformat()
        return data

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> tuple[Identity, Shown]:
        sent = raw.get("sent")
        return (str(raw["sender"]), str(raw["identifier"])), cls(
            expires=datetime.fromisoformat(raw["expires"]),
            standing=Standing(raw.get("standing", Standing.CURRENT.value)),
            displayed=raw.get("displayed", True) is True,
            replaces=tuple((str(s), str(i)) for s, i in raw.get("replaces", [])),
            fingerprint=str(raw.get("fingerprint", "")),
            sent=None if sent is None else datetime.fromisoformat(str(sent)),
        )


class StateInvalid(ValueError):
    """The state file exists but cannot be read as a watcher state."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Registration:
    """A device registered with the deployment, and what it registered for."""

    device_id: str
    token: str
    node: str
    cells: tuple[str, ...]
    languages: tuple[str, ...]
    tests: bool
    # A canary (the prober's device) also receives System alerts.
    canary: bool = False

    def matches(
        self, cells: tuple[str, ...], languages: tuple[str, ...], tests: bool, canary: bool = False
    ) -> bool:
        """Whether this registration already asked for exactly these cells and options."""
        mine = (self.cells, self.languages, self.tests, self.canary)
        return mine == (cells, languages, tests, canary)


@dataclass(slots=True, kw_only=True)
class WatchState:
    """Mutable on purpose: the watcher updates it after every event and saves it."""

    registration: Registration | None = None
    # Trusted public keys (JWK by kid, with validity dates), from configuration, the
    # shipped key set or first use, then changed only by signed statements (client/keys.py).
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    # When the last key-set statement applied was issued; an older one changes nothing.
    key_set_at: datetime | None = None
    # The stream seq of the last event processed, and its cursor (`seq.idprefix`), which
    # is what goes back as Last-Event-ID.
    last_seq: int | None = None
    cursor: str | None = None
    # What this device showed (and what it must never show), by identity; forgotten
    # SHOWN_MARGIN after the alert expires, so bounded by what can still matter.
    shown: dict[Identity, Shown] = field(default_factory=dict)

    def prune(self, now: datetime) -> int:
        """Forget records of alerts expired more than SHOWN_MARGIN ago; returns how many."""
        gone = [identity for identity, record in self.shown.items() if record.expires + SHOWN_MARGIN < now]
        for identity in gone:
            del self.shown[identity]
        return len(gone)

    def supersede(
        self, references: tuple[Identity, ...], standing: Standing, expires: datetime
    ) -> tuple[Identity, ...]:
        """Mark the referenced alerts, and those they had replaced, as replaced or cancelled
        (a cancelled one stays cancelled); one never shown is remembered as not to show,
        until `expires`. Returns the chain marked."""
        chain: list[Identity] = []
        for identity in references:
            record = self.shown.get(identity)
            chain += [identity, *(record.replaces if record is not None else ())]
        for identity in dict.fromkeys(chain):
            record = self.shown.get(identity)
            if record is None:
                self.shown[identity] = Shown(expires=expires, standing=standing, displayed=False)
            elif record.standing is not Standing.CANCELLED:
                self.shown[identity] = replace(record, standing=standing)
        return tuple(dict.fromkeys(chain))

    def as_dict(self) -> dict[str, Any]:
        reg = self.registration
        return {
            "version": _VERSION,
            "registration": None if reg is None else _registration_dict(reg),
            "keys": self.keys,
            "key_set_at": None if self.key_set_at is None else self.key_set_at.isoformat(),
            "last_seq": self.last_seq,
            "cursor": self.cursor,
            "shown": [record.as_json(identity) for identity, record in sorted(self.shown.items())],
        }

    @classmethod
    def from_dict(cls, raw: Any) -> WatchState:
        """Raises:
        StateInvalid: `raw` is not a state this version wrote.
        """
        try:
            if raw.get("version") not in _READABLE:
                raise StateInvalid(f"unsupported state version {raw.get('version')!r}")
            reg = raw.get("registration")
            last_seq = raw.get("last_seq")
            key_set_at = raw.get("key_set_at")
            return cls(
                registration=None if reg is None else _registration(reg),
                keys={str(k): dict(v) for k, v in raw.get("keys", {}).items()},
                key_set_at=None if key_set_at is None else datetime.fromisoformat(str(key_set_at)),
                last_seq=None if last_seq is None else int(last_seq),
                cursor=None if raw.get("cursor") is None else str(raw["cursor"]),
                shown=dict(Shown.from_json(s) for s in raw.get("shown", raw.get("seen", []))),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, StateInvalid):
                raise
            raise StateInvalid(f"malformed state: {exc}") from exc


def _registration_dict(reg: Registration) -> dict[str, Any]:
    return {
        "device_id": reg.device_id,
        "token": reg.token,
        "node": reg.node,
        "cells": list(reg.cells),
        "languages": list(reg.languages),
        "tests": reg.tests,
        "canary": reg.canary,
    }


def _registration(raw: dict[str, Any]) -> Registration:
    return Registration(
        device_id=str(raw["device_id"]),
        token=str(raw["token"]),
        node=str(raw["node"]),
        cells=tuple(str(c) for c in raw["cells"]),
        languages=tuple(str(lang) for lang in raw["languages"]),
        tests=bool(raw["tests"]),
        canary=bool(raw.get("canary", False)),
    )


def load_state(path: Path | None) -> WatchState:
    """The state saved at `path`, or a fresh one when there is no file (or no path).

    Raises:
        StateInvalid: the file exists but is not a state file.
    """
    if path is None:
        return WatchState()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return WatchState()
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StateInvalid(f"{path} is not JSON: {exc}") from exc
    return WatchState.from_dict(raw)


def save_state(path: Path | None, state: WatchState) -> None:
    """Write the state atomically (temp file, fsync, rename); mode 0600, it holds a token."""
    if path is None:
        return
    write_secret(path, json.dumps(state.as_dict(), separators=(",", ":")))

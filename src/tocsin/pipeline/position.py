"""Where a restarted node's follower starts: the last seq it took and the alerts then active.

Without it, a restart would read the whole stream again, and restart time (and the time
`/readyz` stays red) would grow with the stream's history. With it, a restart reads back the
few alerts that were active (by seq, checking each is the alert recorded there), and follows
on from the recorded seq. A position the stream does not vouch for (its tail lost, a seq
holding another alert, another stream) is dropped and the node reads the stream from the
start, skipping expired alerts by their header.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from tocsin.errors import StoreUnavailable
from tocsin.pipeline.index import ActiveIndex
from tocsin.secret_file import write_secret
from tocsin.store.base import AlertId, AlertStore

log = logging.getLogger(__name__)

# The recorded position is written this often while it changes.
CHECKPOINT_S = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Position:
    """The follower's place in one stream: its last seq and the (seq, alert id) then active."""

    stream: str
    last_seq: int
    # The alert at last_seq: a stream that lost its tail and reused the seq shows another.
    last_id: str = ""
    active: tuple[tuple[int, str], ...] = ()
    # (alert id, seq of the Update or Cancel that superseded it): the active alerts rebuild
    # most of it, not a supersession whose Update or Cancel expired before the alert did.
    superseded: tuple[tuple[str, int], ...] = ()

    def as_json(self) -> dict[str, object]:
        return {"stream": self.stream, "last_seq": self.last_seq, "last_id": self.last_id,
                "active": [list(a) for a in self.active], "superseded": [list(s) for s in self.superseded]}


def of_index(stream: str, index: ActiveIndex) -> Position:
    return Position(
        stream=stream, last_seq=index.last_seq, last_id=index.last_id,
        active=tuple((seq, a.stored.envelope.alert_id) for seq, a in sorted(index.active.items())),
        superseded=tuple(sorted(index.superseded.items())),
    )


def load(path: Path, stream: str) -> Position | None:
    """The recorded position for this stream; None when there is none or it cannot be read."""
    try:
        data = json.loads(path.read_text())
        active = tuple((int(seq), str(alert_id)) for seq, alert_id in data["active"])
        superseded = tuple((str(alert_id), int(seq)) for alert_id, seq in data.get("superseded", []))
        position = Position(stream=str(data["stream"]), last_seq=int(data["last_seq"]),
                            last_id=str(data["last_id"]), active=active, superseded=superseded)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("recorded follower position unreadable; reading the stream", extra={"error": repr(exc)[:200]})
        return None
    return position if position.stream == stream and position.last_seq >= 0 else None


def save(path: Path, position: Position) -> None:
    write_secret(path, json.dumps(position.as_json(), separators=(",", ":")))


class Checkpoint:
    """Restores the index from the recorded position at start, and records it as it moves."""

    def __init__(self, path: Path, store: AlertStore, index: ActiveIndex) -> None:
        self._path = path
        self._store = store
        self._index = index
        self._written: Position | None = None
        self.restored_from: int | None = None

    async def restore(self) -> None:
        """Before the first follow: take back what the recorded position says, if the
        stream vouches for it; otherwise leave the index empty (a full read)."""
        position = await asyncio.to_thread(load, self._path, self._store.stream)
        if position is None:
            return
        try:
            last = await self._store.get_by_seq(position.last_seq) if position.last_seq else None
            if position.last_seq and (last is None or last.envelope.alert_id != position.last_id):
                # Gone (its retention passed while the node was down) or another alert there
                # (the stream lost its tail and reused the seq): nothing vouches for what
                # came before, so read it all (expired alerts cost their headers only).
                log.warning("the stream does not vouch for the recorded position; reading it all",
                            extra={"recorded": position.last_seq})
                return
            for seq, alert_id in position.active:
                stored = await self._store.get_by_seq(seq)
                if stored is None or stored.envelope.alert_id != alert_id:
                    log.warning("recorded position does not match the stream; reading it all", extra={"seq": seq})
                    self._index.forget_all()
                    return
                await self._index.add_off_loop(stored)
            self._index.supersede({AlertId(alert_id): seq for alert_id, seq in position.superseded})
        except StoreUnavailable as exc:
            log.warning("recorded position not checked; reading the stream", extra={"error": str(exc)[:200]})
            self._index.forget_all()
            return
        self._index.restored(position.last_seq, position.last_id)
        self._written = position
        self.restored_from = position.last_seq
        log.info("follower restarts from its recorded position",
                 extra={"after": position.last_seq, "active": len(position.active)})

    def record(self) -> Position | None:
        """The position to write now, or None when it has not changed."""
        position = of_index(self._store.stream, self._index)
        return None if position == self._written else position

    async def run(self, caught_up: asyncio.Event, interval_s: float = CHECKPOINT_S) -> None:
        """Record the position every `interval_s` while it changes, once caught up."""
        await caught_up.wait()
        while True:
            position = self.record()
            if position is not None:
                try:
                    await asyncio.to_thread(save, self._path, position)
                    self._written = position
                except OSError as exc:  # the ledger check reports the disk; this is a cache
                    log.warning("follower position not recorded", extra={"error": str(exc)[:200]})
            await asyncio.sleep(interval_s)

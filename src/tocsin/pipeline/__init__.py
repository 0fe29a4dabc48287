"""The pipeline: an issuer's alert -> the live devices it concerns, one module per stage.

    accept.py   issuer request -> a checked, signed alert, stored once (and handed to this
                node's follower, parsed: handoff.py)
    follow.py   the alerts stream -> each stored alert in order, once per node
    index.py    stored alert -> an active alert (parsed, not expired, cover and event ready)
    encode.py   the active alert's event bytes, framed once for SSE and WebSocket
    fanout.py   active alert -> the matching live connections, in batches
    replay.py   a (re)connecting device's cursor -> the active alerts it missed, then live
    early.py    an alert the stream cannot store yet (an election) -> live devices, no cursor
    position.py where a restart follows on from: the recorded last seq and active alerts

reconcile.py runs beside them: it republishes what the ledger holds and the stream lost.
`build_pipeline` wires the stages after accept; app.py builds accept with `handoff.prepare`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tocsin.channels.live import LiveRegistry
from tocsin.pipeline.duplicates import Duplicates
from tocsin.pipeline.early import EarlyCopies
from tocsin.pipeline.fanout import FanOut
from tocsin.pipeline.follow import Follower
from tocsin.pipeline.handoff import Handoff
from tocsin.pipeline.index import ActiveIndex, Clock, utc_now
from tocsin.pipeline.position import Checkpoint
from tocsin.pipeline.replay import Replay
from tocsin.store.base import AlertStore, Envelope


@dataclass(frozen=True, slots=True, kw_only=True)
class Pipeline:
    """One node's stages after accept, in the order an alert goes through them."""

    handoff: Handoff  # accept -> follow: what this node parsed already
    follower: Follower  # stream -> stored alerts; `follower.run()` drives the stages below
    index: ActiveIndex  # stored -> active
    fanout: FanOut  # active -> live connections
    replay: Replay  # cursor -> what a device missed
    checkpoint: Checkpoint | None = None  # where a restart starts following (position.py)
    duplicates: Duplicates | None = None  # the same message from several issuers (duplicates.py)
    early: EarlyCopies | None = None  # alerts not yet stored, offered meanwhile (early.py)


def build_pipeline(
    store: AlertStore,
    live: LiveRegistry,
    *,
    default_lifetime_s: float,
    position_file: Path | None = None,
    clock: Clock = utc_now,
    duplicates: Duplicates | None = None,
    verify_early: Callable[[Envelope], bool] | None = None,
) -> Pipeline:
    """The stages, each given the one it hands to (so built from the last one up).

    With `position_file`, a restart follows on from the recorded position (position.py);
    with `verify_early` (whether an envelope carries this node's signature), early copies are
    taken (early.py).
    """
    handoff = Handoff()
    index = ActiveIndex(handoff, default_lifetime_s=default_lifetime_s, clock=clock, on_rewind=live.close_all)
    fanout = FanOut(index, live, duplicates=duplicates)
    checkpoint = Checkpoint(position_file, store, index) if position_file is not None else None
    follower = Follower(store, take=fanout.take_batch, position=lambda: index.last_seq,
                        restore=checkpoint.restore if checkpoint else None)
    early = EarlyCopies(index, live, verify=verify_early, clock=clock) if verify_early is not None else None
    replay = Replay(store, index, live, clock=clock, early=early)
    return Pipeline(handoff=handoff, follower=follower, index=index, fanout=fanout, replay=replay,
                    checkpoint=checkpoint, duplicates=duplicates, early=early)

"""Early copies: an alert that waits for the stream's leader reaches live devices meanwhile.

While JetStream elects a new leader for the alerts stream (4-6 s after the leader's node is
lost) nothing can be stored, so nothing reaches a device through the stream. Accept goes on
retrying the durable publish, and the issuer is answered only once the alert is stored; but
when the store has not acknowledged it within `early_after_s`, accept also publishes the
signed envelope on a core NATS subject that every node (every worker) listens on
(`JetStreamStore.announce`). Each node offers it at once to its live devices inside the
alert's area as an *early copy*: the alert's event without a cursor (SSE: no `id:` field, so
the device's Last-Event-ID stays where it was; `"seq": null, "event_id": null` in the data,
on WebSocket too). A device that connects meanwhile gets the early copies with its replay.

When the stored copy reaches the node's follower it goes out as any alert does, with its
cursor: the device drops the repeat by identity (as it drops any repeat) and moves its
cursor, so a device shows the alert once and resumes correctly whichever copy it had. The
normal path is untouched: an alert stored within `early_after_s` has no early copy.

Bounded: at most EARLY_MAX early copies held per node, each until its stored copy is
indexed here or HOLD_S passes; a message that is not an envelope signed with this node's key
is dropped, and so is one whose alert this node already holds.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from tocsin.channels.live import Connection, Event, LiveRegistry
from tocsin.correction import is_correction
from tocsin.geo.cells import Cover
from tocsin.pipeline.encode import encode_early
from tocsin.pipeline.fanout import FANOUT_BATCH
from tocsin.pipeline.handoff import drawn_areas, shape_of
from tocsin.pipeline.index import Active, ActiveIndex, Clock
from tocsin.signing import SigningKey, verify
from tocsin.store.base import AlertId, Envelope, Stored

log = logging.getLogger(__name__)

# Early copies held at once per node (an election lasts seconds; alerts issued meanwhile).
EARLY_MAX = 256
# An early copy is replayed to devices that connect for this long at most (its stored copy
# normally follows within the publish deadline, 10 s; or the reconciler stores it later).
HOLD_S = 60.0
_ALERT_ID = re.compile(r"[0-9a-f]{32}")


def signed_by(signer: SigningKey) -> Callable[[Envelope], bool]:
    """Whether an envelope carries `signer`'s signature of its payload (the nodes of a
    deployment sign with one key; a copy signed with another is left to the stream)."""
    keys = {signer.kid: signer.public_jwk()}
    return lambda envelope: verify(keys, envelope.kid, envelope.payload, envelope.sig)


@dataclass(frozen=True, slots=True, kw_only=True)
class Early:
    """One early copy held on this node."""

    alert_id: AlertId
    event: Event
    cover: Cover
    everywhere: bool
    expires_at: datetime
    # time.monotonic() after which it is no longer replayed.
    held_until: float

    def reaches(self, cell: str) -> bool:
        return self.everywhere or self.cover.touches(cell)


class EarlyCopies:
    """The early copies this node heard of: offered to its live devices, replayed to new ones."""

    def __init__(
        self,
        index: ActiveIndex,
        live: LiveRegistry,
        *,
        verify: Callable[[Envelope], bool],
        clock: Clock,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._index = index
        self._live = live
        self._verify = verify
        self._clock = clock
        self._monotonic = monotonic
        self.held: dict[AlertId, Early] = {}
        # For /metrics: copies heard and offered, and dropped (full, unsigned, unreadable).
        self.heard = 0
        self.dropped = 0
        # Set while this node's subscription to the early copies is in place.
        self.listening = asyncio.Event()
        index.observers.append(self._stored)

    def _stored(self, active: Active) -> None:
        """The index registered an alert: its stored copy goes out now, the early one is done."""
        self.held.pop(active.stored.envelope.alert_id, None)

    def _prune(self) -> None:
        now = self._monotonic()
        for alert_id in [a for a, early in self.held.items() if early.held_until <= now]:
            del self.held[alert_id]

    async def take(self, envelope: Envelope) -> int:
        """Offer one early copy to the matching live devices; how many took it.

        Nothing happens for an alert this node already indexed or holds, one not signed with
        this node's key, one that cannot be read or has expired, or when EARLY_MAX are held.
        """
        alert_id = envelope.alert_id
        if not _ALERT_ID.fullmatch(alert_id) or alert_id in self._index.by_id or alert_id in self.held:
            return 0
        self._prune()
        if len(self.held) >= EARLY_MAX or not self._verify(envelope):
            self.dropped += 1
            return 0
        early = await self._read(envelope)
        if early is None or alert_id in self._index.by_id or alert_id in self.held:
            return 0  # unreadable or expired, or its stored copy came first while it was read
        self.held[alert_id] = early
        self.heard += 1
        offered = await self._live.publish_in_batches(early.event, self._live.matching(early.reaches), FANOUT_BATCH,
                                                      early=True)
        log.info("early copy offered", extra={"alert_id": alert_id, "devices": offered})
        return offered

    async def _read(self, envelope: Envelope) -> Early | None:
        """The early copy of `envelope`: parsed (the handoff's when this node accepted it), its
        cover (carried, its references', or computed off the loop), as the index would."""
        read = self._index.read_early(Stored(seq=0, envelope=envelope, created=False))
        if read is None:
            return None
        alert, shaped, until = read
        shaped = shaped or self._index.referenced_shape(alert)
        if shaped is None:
            shaped = await asyncio.to_thread(shape_of, drawn_areas(alert))
        return Early(alert_id=envelope.alert_id, event=encode_early(envelope, alert.status.value),
                     cover=self._index.widened(alert, shaped[1]), everywhere=is_correction(alert),
                     expires_at=until, held_until=self._monotonic() + HOLD_S)

    def replay_for(self, connection: Connection) -> list[Event]:
        """The early copies a device that attaches now is owed (replay.attach): inside its
        cells, for its audience, not expired."""
        if not self.held:
            return []
        self._prune()
        now = self._clock()
        return [
            early.event for early in self.held.values()
            if early.expires_at > now and connection.audience.receives(early.event.status)
            and any(early.reaches(cell) for cell in connection.cells)
        ]

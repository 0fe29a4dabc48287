"""The second copy at work: republish what this node acknowledged but the stream lacks.

JetStream can lose acknowledged writes when block files are corrupted (RELIABILITY.md).
Every few seconds the reconciler compares the node's ledger with the stream's subjects and
publishes any missing alert again, create-if-absent, raising an alarm each time it must.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from tocsin.errors import StoreUnavailable
from tocsin.store.jetstream import JetStreamStore
from tocsin.store.ledger import Ledger

log = logging.getLogger(__name__)


class Reconciler:
    """Compares ledger and stream; republishes the difference."""

    def __init__(
        self,
        store: JetStreamStore,
        ledger: Ledger,
        *,
        interval_s: float,
        settle_s: float,
        clock: Callable[[], datetime],
        on_republish: Callable[[int], None] = lambda n: None,
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._interval_s = interval_s
        self._settle = timedelta(seconds=settle_s)
        self._clock = clock
        self._on_republish = on_republish
        self.passes = 0
        self.republished = 0
        self.last_error: str | None = None

    async def run(self) -> None:
        while True:
            try:
                await self.reconcile()
                self.last_error = None
            except StoreUnavailable as exc:
                if self.last_error is None:
                    log.warning("reconciler cannot reach the store", extra={"error": str(exc)})
                self.last_error = str(exc)
            except Exception as exc:  # a bug here must not take the node's delivery down
                log.error("reconciler pass failed", exc_info=exc)
                self.last_error = repr(exc)
            # After a failed pass, try again soon: readiness stays red until a pass succeeds.
            await asyncio.sleep(self._interval_s if self.last_error is None else min(1.0, self._interval_s))

    async def reconcile(self) -> int:
        """One pass; returns how many alerts it had to publish again."""
        # Only rows older than the publish deadline: a younger one may be an accept whose
        # publish is still in flight. Ledger first, so the stream read after it is newer.
        recorded = await asyncio.to_thread(self._ledger.settled, self._clock() - self._settle)
        present = await self._store.alert_ids()
        missing = [alert_id for alert_id in recorded if alert_id not in present]
        for alert_id in missing:
            envelope = await asyncio.to_thread(self._ledger.envelope, alert_id)
            if envelope is None:
                continue
            stored = await self._store.put(envelope)
            # An alarm, not routine: the stream lost an acknowledged alert.
            log.error(
                "reconciler republished alert",
                extra={"alert_id": alert_id, "seq": stored.seq, "was_missing": stored.created},
            )
        self.passes += 1
        if missing:
            self.republished += len(missing)
            self._on_republish(len(missing))
        return len(missing)

"""The second copy at work: republish what this node acknowledged but the stream lacks.

JetStream can lose acknowledged writes when block files are corrupted (RELIABILITY.md).
The reconciler compares the node's ledger with the stream and publishes any missing alert
again, create-if-absent, raising an alarm each time it must.

Its cost follows the retention window, never the ledger's history: it loads the rows the
stream should still hold once (by index), then reads only rows written after its watermark.
Each pass checks, one read by key each, the new rows old enough to have been acknowledged,
and a slice of the others so that every row in the window is checked again at least once a
`sweep_s`. A row whose retention ends soon is dropped from the window: the stream lets it go
on purpose and it is never called missing. Nothing here holds the ledger's write lock.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from tocsin.errors import StoreUnavailable
from tocsin.store.base import AlertId, AlertStore
from tocsin.store.ledger import Ledger, Row

log = logging.getLogger(__name__)

# A pass reads at most this many new ledger rows; the rest wait for the next pass.
NEW_ROWS_PER_PASS = 10_000


class Reconciler:
    """Compares ledger and stream within the retention window; republishes the difference."""

    def __init__(
        self,
        store: AlertStore,
        ledger: Ledger,
        *,
        interval_s: float,
        settle_s: float,
        clock: Callable[[], datetime],
        legacy_lifetime_s: float,
        forget_before_s: float = 360.0,
        sweep_s: float = 60.0,
        on_republish: Callable[[int], None] = lambda n: None,
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._interval_s = interval_s
        self._settle = timedelta(seconds=settle_s)
        self._clock = clock
        # A row written before retention was recorded is kept this long after its accept.
        self._legacy_lifetime_s = legacy_lifetime_s
        # Rows whose retention ends within this are left to retention (clocks may differ).
        self._forget_before_s = forget_before_s
        self._sweep_s = sweep_s
        self._on_republish = on_republish
        self._watermark: int | None = None
        # Rows not yet seen in the stream, and rows seen (rotated through by the sweep).
        self._unconfirmed: dict[str, Row] = {}
        self._confirmed: OrderedDict[str, Row] = OrderedDict()
        self.passes = 0
        self.republished = 0
        self.checked_last_pass = 0
        self.last_error: str | None = None

    @property
    def window_size(self) -> int:
        """Rows the reconciler watches now (bounded by retention, not by history)."""
        return len(self._unconfirmed) + len(self._confirmed)

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
        now = self._clock()
        await self._load(now)
        self._forget_retained(now)
        settled = now - self._settle
        due = [row for row in self._unconfirmed.values() if row.accepted_at < settled]
        if due:
            # A withdrawn row stays in the window unchecked: a retry of the same alert may
            # take it back, and then it is due again.
            withdrawn = await asyncio.to_thread(self._ledger.withdrawn_among, [row.alert_id for row in due])
            due = [row for row in due if row.alert_id not in withdrawn]
        sweep = self._sweep_slice()
        missing: list[Row] = []
        for row in due + sweep:
            if await self._store.holds(AlertId(row.alert_id)):
                self._unconfirmed.pop(row.alert_id, None)
                self._confirmed[row.alert_id] = row
            else:
                missing.append(row)
        self.checked_last_pass = len(due) + len(sweep)
        republished = await self._republish(missing)
        self.passes += 1
        if republished:
            self.republished += republished
            self._on_republish(republished)
        return republished

    async def _load(self, now: datetime) -> None:
        """The window once, then what was written since the watermark.

        Read from the ledger before the stream is checked, so the stream read is newer.
        """
        if self._watermark is None:
            rows, watermark = await asyncio.to_thread(self._ledger.window, now, self._legacy_lifetime_s)
        else:
            watermark = self._watermark
            rows = await asyncio.to_thread(self._ledger.after, watermark, self._legacy_lifetime_s, NEW_ROWS_PER_PASS)
        for row in rows:
            self._unconfirmed[row.alert_id] = row
            watermark = max(watermark, row.rowid)
        self._watermark = watermark

    def _forget_retained(self, now: datetime) -> None:
        horizon = now.timestamp() + self._forget_before_s
        for rows in (self._unconfirmed, self._confirmed):
            for alert_id in [a for a, row in rows.items() if row.retain_until <= horizon]:
                del rows[alert_id]

    def _sweep_slice(self) -> list[Row]:
        """The next confirmed rows to check again, so that each comes round once a sweep_s."""
        if not self._confirmed:
            return []
        passes_per_sweep = max(1.0, self._sweep_s / max(self._interval_s, 0.001))
        count = min(len(self._confirmed), math.ceil(len(self._confirmed) / passes_per_sweep))
        picked: list[Row] = []
        for _ in range(count):
            alert_id, row = self._confirmed.popitem(last=False)
            self._confirmed[alert_id] = row  # to the back of the round
            picked.append(row)
        return picked

    async def _republish(self, missing: list[Row]) -> int:
        if not missing:
            return 0
        republished = 0
        for row in missing:
            envelope = await asyncio.to_thread(self._ledger.envelope, row.alert_id)
            if envelope is None:
                continue
            if envelope.retain_until is None:  # a row from before retention was recorded
                envelope = replace(envelope, retain_until=datetime.fromtimestamp(row.retain_until, UTC))
            stored = await self._store.put(envelope)
            self._unconfirmed.pop(row.alert_id, None)
            self._confirmed[row.alert_id] = row
            republished += 1
            # An alarm, not routine: the stream lost an acknowledged alert.
            log.error(
                "reconciler republished alert",
                extra={"alert_id": row.alert_id, "seq": stored.seq, "was_missing": stored.created},
            )
        return republished

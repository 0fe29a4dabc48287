"""Delivery progress per alert and channel: planned, sent, failed by reason, receipts.

PLACEHOLDER interface (its helper replaces the body, keeping these methods): the planner
calls `planned`, the dispatchers `finished`, `POST /api/v1/receipts` calls `receipt`, and
`GET /api/v1/alerts/{id}` reads `summary` (summed over every node).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from tocsin.delivery.model import Outcome


class Progress:
    def __init__(self) -> None:
        self._counts: defaultdict[tuple[str, str], Counter[str]] = defaultdict(Counter)

    def planned(self, alert_id: str, channel: str, n: int) -> None:
        self._counts[alert_id, channel]["planned"] += n

    def finished(self, alert_id: str, channel: str, outcome: Outcome, reason: str = "") -> None:
        """A delivery's last word: SENT, PERMANENT, GONE, or given up at expiry ("expired")."""
        key = "sent" if outcome is Outcome.SENT else f"failed:{reason or outcome.value}"
        self._counts[alert_id, channel][key] += 1

    def receipt(self, alert_id: str, channel: str) -> None:
        self._counts[alert_id, channel]["receipts"] += 1

    async def summary(self, alert_id: str) -> dict[str, Any]:
        return {channel: dict(counts) for (found, channel), counts in self._counts.items() if found == alert_id}

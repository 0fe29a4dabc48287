"""Who receives an alert and for how long: the rules the node and the device client share.

Not CAP 1.2 (which says what a valid message is) but what tocsin distributes: the node
fans out and replays by these rules, and the client shows by the same ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tocsin.cap.model import Alert, Status

# An alert without <expires> is replayed and shown for this long after it was sent (the
# default of the node's `default_lifetime_s`, and the client's).
DEFAULT_LIFETIME_S = 24 * 3600.0
DEFAULT_LIFETIME = timedelta(seconds=DEFAULT_LIFETIME_S)


@dataclass(frozen=True, slots=True, kw_only=True)
class Audience:
    """Which statuses a device receives: Actual always; Test and Exercise on opt-in
    (`tests`); System for canaries only (the prober's devices); Draft never."""

    tests: bool = False
    canary: bool = False

    def receives(self, status: str) -> bool:
        """Whether a device of this audience gets an alert of this status (`Status` or its value)."""
        if status == Status.ACTUAL:
            return True
        if status in (Status.TEST, Status.EXERCISE):
            return self.tests
        if status == Status.SYSTEM:
            return self.canary
        return False


def expires_at(alert: Alert, default_lifetime: timedelta = DEFAULT_LIFETIME) -> datetime:
    """When the alert stops mattering: its `expires` (the latest of its infos'), else `sent`
    plus the default lifetime (no info, or an info without `expires`)."""
    expires = alert.expires
    return expires if expires is not None else alert.sent + default_lifetime


# SOURCES: an alert relayed from another authority's feed carries this CAP <code> with the
# source's name, inside the bytes the deployment signs (docs/sources.md); a device shows it
# as coming from that source, never as one of this deployment's own authorities' alerts.
RELAYED_CODE_PREFIX = "tocsin-relayed:"


def relayed_from(alert: Alert) -> str | None:
    """The source a relayed alert came from, None for an alert this deployment's own
    authorities issued."""
    for code in alert.codes:
        if code.startswith(RELAYED_CODE_PREFIX):
            return code[len(RELAYED_CODE_PREFIX):]
    return None

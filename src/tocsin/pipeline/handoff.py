"""accept -> follow: the alerts this node's accept parsed, so its follower need not parse them again.

Also what both sides take from an alert's areas: the areas that are drawn, and the cells
they cover. Accept computes the cover once and stores it with the alert; a follower on any
node, now or after a restart, uses the stored cover and computes one only for an alert
stored without it.
"""

from __future__ import annotations

from tocsin.cap.model import Alert, Area
from tocsin.cap.parse import parse_stored
from tocsin.geo.cells import Cover, cover_for
from tocsin.store.base import AlertId, Stored

# Alerts this node's accept parsed and is publishing, kept for the follower (at most this many).
PREPARED_MAX = 64

# An alert's areas and the cells they cover.
Shape = tuple[tuple[Area, ...], Cover]


def drawn_areas(alert: Alert) -> tuple[Area, ...]:
    """The alert's areas when one has a polygon or circle; () when none does (an Update or
    Cancel that goes where the alerts it references went)."""
    areas = tuple(area for info in alert.infos for area in info.areas)
    return areas if any(a.polygons or a.circles for a in areas) else ()


def shape_of(areas: tuple[Area, ...]) -> Shape:
    """The areas and the cells they cover."""
    return areas, cover_for(areas)


class Handoff:
    """The parsed alerts accept is publishing, by id, until the follower takes them."""

    def __init__(self) -> None:
        self._prepared: dict[AlertId, tuple[bytes, Alert, Shape | None]] = {}

    def prepare(self, alert_id: AlertId, payload: bytes, alert: Alert, cover: Cover | None) -> None:
        """The alert this node's accept is publishing, already parsed, checked and covered.

        When the stream hands the follower these exact bytes, it uses them instead of
        parsing them again (on the accepting node, in the same loop, before the issuer's
        201 and the first device). Bounded: an alert whose publish failed is forgotten
        after PREPARED_MAX others.
        """
        drawn = drawn_areas(alert)
        self._prepared[alert_id] = (payload, alert, (drawn, cover) if drawn and cover is not None else None)
        if len(self._prepared) > PREPARED_MAX:
            del self._prepared[next(iter(self._prepared))]

    def parsed(self, stored: Stored, *, keep: bool = False) -> tuple[Alert, Shape | None]:
        """The stored alert and, when known, its areas and cover: from `prepare` when it holds
        these bytes (taken, unless `keep`), else parsed here with the cover stored beside it.

        Raises:
            CapInvalid: the payload is not a valid alert.
        """
        env = stored.envelope
        prepared = self._prepared.get(env.alert_id) if keep else self._prepared.pop(env.alert_id, None)
        if prepared is not None and prepared[0] == env.payload:
            return prepared[1], prepared[2]
        alert = parse_stored(env.payload)
        drawn = drawn_areas(alert)
        carried = Cover.carried(env.cover) if drawn and env.cover is not None else None
        return alert, (drawn, carried) if carried is not None else None

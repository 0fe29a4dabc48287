"""CAP 1.2 documents for tests, built from a few parameters."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from tocsin.cap.compose import simple_alert
from tocsin.client.places import Place

_ids = itertools.count(1)

# A box around central Paris, and points inside and outside it.
PARIS_BOX = "48.80,2.25 48.80,2.42 48.90,2.42 48.90,2.25 48.80,2.25"
IN_PARIS = (48.8566, 2.3522)
IN_LYON = (45.7640, 4.8357)

# A device's eight saved places (SAIP's number): two in Paris, two in Lyon (one cell apart or
# less), the others far from each other.
EIGHT_PLACES = (
    Place(name="Maison", lat=48.8566, lon=2.3522),
    Place(name="Travail", lat=48.8925, lon=2.2369),
    Place(name="Parents", lat=45.7640, lon=4.8357),
    Place(name="École", lat=45.7578, lon=4.8320),
    Place(name="Nice", lat=43.7102, lon=7.2620),
    Place(name="Brest", lat=48.3904, lon=-4.4861),
    Place(name="Lille", lat=50.6292, lon=3.0573),
    Place(name="Ajaccio", lat=41.9192, lon=8.7386),
)


def alert_xml(
    *,
    identifier: str | None = None,
    sender: str = "prefecture-75@interieur.gouv.fr",
    status: str = "Actual",
    msg_type: str = "Alert",
    polygon: str = PARIS_BOX,
    sent: datetime | None = None,
    expires_in_s: float | None = 3600,
    headline: str = "Inondation: évacuez les quais",
    references: str | None = None,
    event: str = "Inondation",
) -> bytes:
    """A Public CAP alert in French over `polygon`."""
    return simple_alert(
        identifier=identifier or f"FR-TEST-{next(_ids)}-{datetime.now(UTC).timestamp():.6f}",
        sender=sender, status=status, msg_type=msg_type, polygon=polygon, sent=sent,
        expires_in_s=expires_in_s, headline=headline, references=references, event=event,
        description="La Seine déborde.",
    )

"""CAP 1.2 documents for tests, built from a few parameters."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

_ids = itertools.count(1)

# A box around central Paris, and points inside and outside it.
PARIS_BOX = "48.80,2.25 48.80,2.42 48.90,2.42 48.90,2.25 48.80,2.25"
IN_PARIS = (48.8566, 2.3522)
IN_LYON = (45.7640, 4.8357)


def cap_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


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
    identifier = identifier or f"FR-TEST-{next(_ids)}-{datetime.now(UTC).timestamp():.6f}"
    sent = sent or datetime.now(UTC).replace(microsecond=0)
    expires = f"<expires>{cap_time(sent + timedelta(seconds=expires_in_s))}</expires>" if expires_in_s is not None else ""
    refs = f"<references>{references}</references>" if references else ""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>{identifier}</identifier>
  <sender>{sender}</sender>
  <sent>{cap_time(sent)}</sent>
  <status>{status}</status>
  <msgType>{msg_type}</msgType>
  <scope>Public</scope>
  {refs}
  <info>
    <language>fr-FR</language>
    <category>Met</category>
    <event>{event}</event>
    <urgency>Immediate</urgency>
    <severity>Severe</severity>
    <certainty>Observed</certainty>
    {expires}
    <headline>{headline}</headline>
    <description>La Seine déborde.</description>
    <area>
      <areaDesc>Paris centre</areaDesc>
      <polygon>{polygon}</polygon>
    </area>
  </info>
</alert>
""".encode()

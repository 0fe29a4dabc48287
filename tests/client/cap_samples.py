"""Sample CAP values and documents for client tests."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from tocsin.cap.model import (
    Alert,
    Area,
    Category,
    Certainty,
    Info,
    MsgType,
    Scope,
    Severity,
    Status,
    Urgency,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
PARIS = (48.8566, 2.3522)
LYON = (45.7640, 4.8357)
PARIS_BOX = ((48.80, 2.22), (48.80, 2.47), (48.92, 2.47), (48.92, 2.22), (48.80, 2.22))
LYON_BOX = ((45.70, 4.75), (45.70, 4.95), (45.82, 4.95), (45.82, 4.75), (45.70, 4.75))


def info(language: str = "fr-FR", *, box: tuple[tuple[float, float], ...] = PARIS_BOX,
         expires: datetime | None = NOW + timedelta(hours=2), headline: str = "Crue") -> Info:
    return Info(
        language=language,
        categories=(Category.MET,),
        event="Inondation",
        urgency=Urgency.IMMEDIATE,
        severity=Severity.SEVERE,
        certainty=Certainty.OBSERVED,
        expires=expires,
        headline=headline,
        areas=(Area(area_desc="zone", polygons=(box,)),),
    )


def alert(*infos: Info, status: Status = Status.ACTUAL, identifier: str = "A-1",
          sent: datetime = NOW - timedelta(seconds=3)) -> Alert:
    return Alert(
        identifier=identifier,
        sender="prefecture@example.gouv.fr",
        sent=sent,
        status=status,
        msg_type=MsgType.ALERT,
        scope=Scope.PUBLIC,
        infos=infos or (info(),),
    )


def with_status(value: Alert, status: Status) -> Alert:
    return replace(value, status=status)


def cap_xml(*, identifier: str = "A-1", status: str = "Actual", sent: datetime = NOW,
            expires: datetime = NOW + timedelta(hours=2), polygon: str = "48.80,2.22 48.80,2.47 48.92,2.47 48.92,2.22 48.80,2.22",
            msg_type: str = "Alert", references: str = "", infos: tuple[tuple[str, str], ...] = (("fr-FR", "Crue de la Seine"),)) -> str:
    """A CAP 1.2 document with one info per (language, headline)."""
    refs = f"<references>{references}</references>" if references else ""
    blocks = "".join(
        f"""<info><language>{language}</language><category>Met</category><event>Inondation</event>
<urgency>Immediate</urgency><severity>Severe</severity><certainty>Observed</certainty>
<expires>{expires.isoformat()}</expires><headline>{headline}</headline>
<area><areaDesc>Paris</areaDesc><polygon>{polygon}</polygon></area></info>"""
        for language, headline in infos
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>{identifier}</identifier>
<sender>prefecture@example.gouv.fr</sender><sent>{sent.isoformat()}</sent><status>{status}</status>
<msgType>{msg_type}</msgType><scope>Public</scope>{refs}{blocks}</alert>"""

"""Compose a simple CAP 1.2 alert (one info, one polygon area) as XML bytes.

For drills, the fault suite's issuer, benches and tests: the one place such documents
are written by hand, so they all stay valid CAP.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from xml.sax.saxutils import escape


def cap_time(moment: datetime) -> str:
    """CAP 1.2 dateTime (§3.3.2): seconds, explicit offset, never `Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def simple_alert(
    *,
    identifier: str,
    sender: str,
    polygon: str,
    sent: datetime | None = None,
    status: str = "Actual",
    msg_type: str = "Alert",
    expires_in_s: float | None = 3600.0,
    references: str | None = None,
    language: str = "fr-FR",
    category: str = "Met",
    event: str = "Inondation",
    urgency: str = "Immediate",
    severity: str = "Severe",
    certainty: str = "Observed",
    headline: str = "",
    description: str = "",
    area_desc: str = "Paris centre",
) -> bytes:
    """A Public alert over `polygon` ("lat,lon lat,lon ..." closed), UTF-8 XML."""
    sent = sent or datetime.now(UTC).replace(microsecond=0)
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">',
        f"<identifier>{escape(identifier)}</identifier><sender>{escape(sender)}</sender>",
        f"<sent>{cap_time(sent)}</sent><status>{status}</status><msgType>{msg_type}</msgType>",
        "<scope>Public</scope>",
        f"<references>{escape(references)}</references>" if references else "",
        f"<info><language>{language}</language><category>{category}</category><event>{escape(event)}</event>",
        f"<urgency>{urgency}</urgency><severity>{severity}</severity><certainty>{certainty}</certainty>",
        f"<expires>{cap_time(sent + timedelta(seconds=expires_in_s))}</expires>" if expires_in_s is not None else "",
        f"<headline>{escape(headline)}</headline>" if headline else "",
        f"<description>{escape(description)}</description>" if description else "",
        f"<area><areaDesc>{escape(area_desc)}</areaDesc><polygon>{polygon}</polygon></area></info>",
        "</alert>",
    ]
    return "\n".join(p for p in parts if p).encode()

"""How a correction ("false alert, disregard") is marked and built, so that every part knows one.

A correction is a CAP Cancel that references the false alert and whose infos carry the
parameter CORRECTION_PARAMETER = CORRECTION_VALUE. The marker is inside the signed CAP: a
device trusts it as much as the alert itself. A node delivers a correction to every device,
not only those in the area, and a device shows it only when it had shown the alert it
references (a device that moved away still hears that the alert was false).

Its texts come from templates per language, editable by admins (docs/lifecycle.md); the
defaults below are shipped in English and French.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from tocsin.cap.model import (
    Alert,
    Area,
    Category,
    Certainty,
    Info,
    MsgType,
    Reference,
    Scope,
    Severity,
    Urgency,
    ValuePair,
)

CORRECTION_PARAMETER = "tocsin:correction"
CORRECTION_VALUE = "false-alert"
# The texts of a template; `{headline}` and `{sent}` stand for the false alert's.
TEMPLATE_FIELDS = ("event", "headline", "description", "instruction")
TEMPLATE_MAX_CHARS = 2000
MAX_LANGUAGES = 12

DEFAULT_TEMPLATES: dict[str, dict[str, str]] = {
    "en-US": {
        "event": "Correction",
        "headline": "False alert: disregard it",
        "description": 'The alert "{headline}" sent at {sent} was sent in error. Disregard it.',
        "instruction": "No action is needed. Resume normal activities.",
    },
    "fr-FR": {
        "event": "Correction",
        "headline": "Fausse alerte : n'en tenez pas compte",
        "description": "L'alerte « {headline} » envoyée le {sent} a été envoyée par erreur. N'en tenez pas compte.",
        "instruction": "Aucune action n'est nécessaire. Reprenez vos activités normales.",
    },
}


def is_correction(alert: Alert) -> bool:
    return alert.msg_type is MsgType.CANCEL and any(
        p.value_name == CORRECTION_PARAMETER and p.value == CORRECTION_VALUE
        for info in alert.infos for p in info.parameters
    )


def valid_templates(data: object) -> dict[str, dict[str, str]] | None:
    """The templates if `data` is a well-formed set of them (language -> the four texts), else None."""
    if not isinstance(data, dict) or not 1 <= len(data) <= MAX_LANGUAGES:
        return None
    chosen: dict[str, dict[str, str]] = {}
    for language, texts in data.items():
        if not (isinstance(language, str) and 2 <= len(language) <= 35 and isinstance(texts, dict)):
            return None
        if set(texts) != set(TEMPLATE_FIELDS) or not all(
            isinstance(t, str) and 0 < len(t.strip()) <= TEMPLATE_MAX_CHARS for t in texts.values()
        ):
            return None
        chosen[language] = {k: str(texts[k]).strip() for k in TEMPLATE_FIELDS}
    return chosen


def correction_for(original: Alert, templates: dict[str, dict[str, str]], *, now: datetime,
                   lifetime_s: float, severity: Severity = Severity.MINOR) -> Alert:
    """The Cancel that says `original` was false: one info per template language, the
    original's areas, live for `lifetime_s`. Its identifier derives from the original's,
    so that a retried call makes the same alert, never a second one."""
    sent = now.replace(microsecond=0)
    first = original.infos[0] if original.infos else None
    headline = (first.headline or first.event) if first else original.identifier
    areas = _distinct_areas(original)
    infos = tuple(
        Info(
            language=language,
            categories=first.categories if first else (Category.OTHER,),
            event=texts["event"],
            urgency=Urgency.IMMEDIATE,
            severity=severity,
            certainty=Certainty.OBSERVED,
            expires=sent + timedelta(seconds=lifetime_s),
            headline=_fill(texts["headline"], headline, original.sent),
            description=_fill(texts["description"], headline, original.sent),
            instruction=_fill(texts["instruction"], headline, original.sent),
            parameters=(ValuePair(value_name=CORRECTION_PARAMETER, value=CORRECTION_VALUE),),
            areas=areas,
        )
        for language, texts in templates.items()
    )
    return replace(
        original,
        identifier=f"{original.identifier}.correction",
        sent=sent,
        msg_type=MsgType.CANCEL,
        scope=Scope.PUBLIC,
        source=None,
        restriction=None,
        addresses=(),
        note=f"False alert: {original.identifier} was sent in error",
        references=(Reference(sender=original.sender, identifier=original.identifier, sent=original.sent),),
        incidents=original.incidents,
        infos=infos,
        extensions=(),
    )


def _fill(template: str, headline: str, sent: datetime) -> str:
    # Plain replacement, never str.format: an admin's text cannot reach other values.
    return template.replace("{headline}", headline).replace("{sent}", sent.isoformat())


def _distinct_areas(alert: Alert) -> tuple[Area, ...]:
    """The original's areas, once each (the same area in several languages counts once)."""
    seen: list[Area] = []
    for info in alert.infos:
        for area in info.areas:
            if area not in seen:
                seen.append(area)
    return tuple(seen)


def templates_json(templates: dict[str, dict[str, str]]) -> dict[str, Any]:
    return {"templates": templates, "fields": list(TEMPLATE_FIELDS)}

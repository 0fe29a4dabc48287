"""The CAP 1.2 alert message as typed, immutable values (OASIS CAP 1.2 §3)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Status(StrEnum):
    """Who the alert is for: real, exercise, system, test or draft (§3.2.1 status)."""

    ACTUAL = "Actual"
    EXERCISE = "Exercise"
    SYSTEM = "System"
    TEST = "Test"
    DRAFT = "Draft"


class MsgType(StrEnum):
    """What the message does (§3.2.1 msgType)."""

    ALERT = "Alert"
    UPDATE = "Update"
    CANCEL = "Cancel"
    ACK = "Ack"
    ERROR = "Error"


class Scope(StrEnum):
    """Who may see the message (§3.2.1 scope)."""

    PUBLIC = "Public"
    RESTRICTED = "Restricted"
    PRIVATE = "Private"


class Category(StrEnum):
    """The kind of event (§3.2.2 category)."""

    GEO = "Geo"
    MET = "Met"
    SAFETY = "Safety"
    SECURITY = "Security"
    RESCUE = "Rescue"
    FIRE = "Fire"
    HEALTH = "Health"
    ENV = "Env"
    TRANSPORT = "Transport"
    INFRA = "Infra"
    CBRNE = "CBRNE"
    OTHER = "Other"


class ResponseType(StrEnum):
    """The action recommended to the audience (§3.2.2 responseType)."""

    SHELTER = "Shelter"
    EVACUATE = "Evacuate"
    PREPARE = "Prepare"
    EXECUTE = "Execute"
    AVOID = "Avoid"
    MONITOR = "Monitor"
    ASSESS = "Assess"
    ALL_CLEAR = "AllClear"
    NONE = "None"


class Urgency(StrEnum):
    """How soon to act (§3.2.2 urgency)."""

    IMMEDIATE = "Immediate"
    EXPECTED = "Expected"
    FUTURE = "Future"
    PAST = "Past"
    UNKNOWN = "Unknown"


class Severity(StrEnum):
    """How bad the threat is (§3.2.2 severity)."""

    EXTREME = "Extreme"
    SEVERE = "Severe"
    MODERATE = "Moderate"
    MINOR = "Minor"
    UNKNOWN = "Unknown"


class Certainty(StrEnum):
    """How sure the issuer is (§3.2.2 certainty; the XSD has no "Very Likely")."""

    OBSERVED = "Observed"
    LIKELY = "Likely"
    POSSIBLE = "Possible"
    UNLIKELY = "Unlikely"
    UNKNOWN = "Unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class ValuePair:
    """A named value: eventCode, parameter and geocode (valueName, value)."""

    value_name: str
    value: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Circle:
    """A circle around a WGS 84 point; CAP 1.2 §3.2.4: radius in km."""

    lat: float
    lon: float
    radius_km: float


# Points as (lat, lon), in CAP's order; the last point repeats the first.
Polygon = tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Area:
    """A geographic area the info applies to (§3.2.4)."""

    area_desc: str
    polygons: tuple[Polygon, ...] = ()
    circles: tuple[Circle, ...] = ()
    geocodes: tuple[ValuePair, ...] = ()
    altitude: float | None = None
    ceiling: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Resource:
    """A file that adds to the info, such as an image or audio (§3.2.3)."""

    resource_desc: str
    mime_type: str
    size: int | None = None
    uri: str | None = None
    deref_uri: str | None = None
    digest: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Info:
    """One language's description of the event, its audience and its areas (§3.2.2)."""

    language: str = "en-US"
    categories: tuple[Category, ...]
    event: str
    response_types: tuple[ResponseType, ...] = ()
    urgency: Urgency
    severity: Severity
    certainty: Certainty
    audience: str | None = None
    event_codes: tuple[ValuePair, ...] = ()
    effective: datetime | None = None
    onset: datetime | None = None
    expires: datetime | None = None
    sender_name: str | None = None
    headline: str | None = None
    description: str | None = None
    instruction: str | None = None
    web: str | None = None
    contact: str | None = None
    parameters: tuple[ValuePair, ...] = ()
    resources: tuple[Resource, ...] = ()
    areas: tuple[Area, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Reference:
    """An earlier message this one refers to (§3.2.1 references)."""

    sender: str
    identifier: str
    sent: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """A CAP 1.2 alert message (§3.2.1)."""

    identifier: str
    sender: str
    sent: datetime
    status: Status
    msg_type: MsgType
    source: str | None = None
    scope: Scope
    restriction: str | None = None
    addresses: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()
    note: str | None = None
    references: tuple[Reference, ...] = ()
    incidents: tuple[str, ...] = ()
    infos: tuple[Info, ...] = ()
    # XML-DSig elements that end <alert>, as exclusive-C14N text, written back as they are.
    extensions: tuple[str, ...] = ()

    @property
    def identity(self) -> tuple[str, str]:
        """What names the alert everywhere: (sender, identifier)."""
        return (self.sender, self.identifier)

    @property
    def expires(self) -> datetime | None:
        """The latest info expiry; None when there is no info or one never expires."""
        ends = [info.expires for info in self.infos]
        if not ends or any(end is None for end in ends):
            return None
        return max(end for end in ends if end is not None)

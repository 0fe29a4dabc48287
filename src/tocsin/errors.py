"""The one error base, the problem catalog with its stable codes, and delivery failures.

Every problem an API caller or a CLI user can meet is declared here once. Codes are
documented in docs/api.md and never reused for another meaning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class Problem:
    """A kind of refusal: stable code, HTTP status and a human title (RFC 9457)."""

    code: str
    status: int
    title: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Violation:
    """One broken rule, at one element of a document (`info[0].area[1].polygon`)."""

    problem: Problem
    path: str
    detail: str
    # "schema": what the OASIS XSD enforces; "semantic": a rule of the CAP 1.2 text beyond it;
    # "policy": not a CAP rule, but what tocsin distributes (policy.py, the accept path).
    kind: str = "schema"

    def as_dict(self) -> dict[str, str]:
        return {"code": self.problem.code, "path": self.path, "detail": self.detail}


class TocsinError(Exception):
    """Base of every error tocsin raises on purpose."""


class Rejected(TocsinError):
    """A request refused for a reason in the catalog; nothing was stored or changed."""

    def __init__(
        self,
        problem: Problem,
        detail: str = "",
        *,
        violations: tuple[Violation, ...] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{problem.code}: {detail or problem.title}")
        self.problem = problem
        self.detail = detail or problem.title
        self.violations = violations
        self.headers = headers or {}


class CapInvalid(Rejected):
    """A CAP document that breaks one or more rules; `violations` lists each of them."""

    def __init__(self, violations: tuple[Violation, ...]) -> None:
        first = violations[0]
        super().__init__(first.problem, f"{first.path}: {first.detail}", violations=violations)


class StoreUnavailable(TocsinError):
    """The replicated store could not confirm an operation; its outcome may be unknown."""

    def __init__(self, operation: str, detail: str = "") -> None:
        super().__init__(f"store unavailable during {operation}: {detail}".rstrip(": "))
        self.operation = operation


class StoreFull(TocsinError):
    """The alert stream reached its byte limit; not a passing fault, so never retried."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"the alert stream holds its limit of {max_bytes} bytes")
        self.max_bytes = max_bytes


class RecordsFull(TocsinError):
    """A bucket of records reached its byte limit; not a passing fault, so never retried."""

    def __init__(self, bucket: str) -> None:
        super().__init__(f"the {bucket} bucket holds its byte limit")
        self.bucket = bucket


class StoreMisconfigured(TocsinError):
    """The store refuses tocsin's settings (e.g. not enough disk for the stream); not retried."""


class AlertNotFound(TocsinError):
    """No alert with this id is stored."""

    def __init__(self, alert_id: str) -> None:
        super().__init__(f"alert {alert_id} not found")
        self.alert_id = alert_id


class Reason(StrEnum):
    """Why a delivery failed; also a metric label."""

    REJECTED = "rejected"
    UNREACHABLE = "unreachable"
    RATE_LIMITED = "rate_limited"
    TOKEN_GONE = "token_gone"
    SLOW = "slow"


@dataclass
class DeliveryFailed(TocsinError):
    """A channel could not deliver; `retryable` says whether trying again may help."""

    reason: Reason
    retryable: bool = False
    detail: str = field(default="")


# ---------------------------------------------------------------------------------------
# The catalog. Grouped by prefix; each code is documented in docs/api.md.
# ---------------------------------------------------------------------------------------

# Requests in general
BAD_REQUEST = Problem("request.malformed", 400, "The request could not be read.")
UNSUPPORTED_MEDIA = Problem(
    "request.unsupported-media-type",
    415,
    "Send CAP as application/cap+xml, application/xml, text/xml or application/json.",
)
TOO_LARGE = Problem("request.too-large", 413, "The request body is larger than the limit.")
NOT_FOUND = Problem("request.not-found", 404, "No such resource.")
METHOD_NOT_ALLOWED = Problem("request.method-not-allowed", 405, "This method is not allowed here.")
INTERNAL = Problem("server.internal", 500, "An internal error occurred; it has been logged.")

# The edge: refusals written by the listener before any route runs (api/listener.py)
HEADERS_TOO_LARGE = Problem(
    "request.headers-too-large", 431, "The request's headers are larger or more numerous than the limit."
)
HEADER_TIMEOUT = Problem("request.header-timeout", 408, "The request's headers did not arrive in time.")
BODY_TIMEOUT = Problem("request.body-timeout", 408, "The request's body did not arrive in time.")
NODE_FULL = Problem(
    "request.node-full", 503, "This node holds as many connections as it allows; retry later or on another node."
)
SOURCE_FULL = Problem("request.source-full", 429, "This address holds as many connections to this node as it may.")
HTTP_VERSION = Problem(
    "request.http-version", 505, "Event streams need HTTP/1.1 (chunked); use HTTP/1.1 or the WebSocket endpoint."
)

# Authentication and authorisation
UNAUTHENTICATED = Problem("auth.missing-token", 401, "A bearer token is required.")
UNKNOWN_TOKEN = Problem("auth.unknown-token", 401, "The token is not valid.")
TOKEN_EXPIRED = Problem("auth.token-expired", 401, "The token has expired; ask an admin for a new one.")
TOKEN_REVOKED = Problem("auth.token-revoked", 401, "The token has been revoked.")
ACCOUNT_DISABLED = Problem(
    "auth.account-disabled", 401, "The user, API client or organisation behind this token is disabled."
)
ROLE_REQUIRED = Problem("auth.role-required", 403, "This account's roles do not allow this action.")
ISSUER_RATE_LIMITED = Problem(
    "policy.issuer-rate-limited", 429, "This issuer organisation sent more alerts than its rate limit; retry after the time given."
)
PREVIEW_RATE_LIMITED = Problem(
    "preview.rate-limited", 429,
    "This issuer organisation asked for more reach previews on this node than its limit; retry after the time given.",
)
PREVIEW_BUSY = Problem(
    "preview.busy", 503,
    "This node is computing as many reach previews as it does at once; retry shortly, or ask another node.",
)

# Accounts (issuer organisations, users, API clients, tokens; docs/accounts.md)
ACCOUNT_INVALID = Problem("accounts.invalid", 422, "The account record is not valid.")
ACCOUNT_EXISTS = Problem("accounts.exists", 409, "An account with this name already exists.")
ACCOUNT_UNKNOWN = Problem("accounts.unknown", 404, "No account with this name.")
POLICY_NEEDS_SECOND_ADMIN = Problem(
    "accounts.policy-needs-second-admin", 409,
    "An approval policy change takes effect only when a second admin confirms it.",
)
NO_PROPOSAL = Problem(
    "accounts.no-proposal", 409, "No approval policy change is waiting to be confirmed, or not the one given."
)
ACCOUNTS_FILE_INVALID = Problem("accounts.file-invalid", 422, "The accounts file is not valid.")

# Approval and the alert lifecycle (docs/lifecycle.md)
SELF_APPROVAL = Problem("approval.self-approval", 403, "An Actual alert must be approved by someone other than its author.")
NOT_PENDING = Problem("approval.not-pending", 409, "The alert is not waiting for approval.")
PENDING_UNKNOWN = Problem("approval.unknown", 404, "No submitted alert with this id.")
TOO_MANY_PENDING = Problem(
    "approval.too-many-pending", 409,
    "This organisation has as many alerts waiting for approval as it may; approve or reject some first.",
)
REASON_REQUIRED = Problem("approval.reason-required", 422, "A rejection needs a reason (a JSON body with a non-empty `reason`).")
DRAFT_UNKNOWN = Problem("draft.unknown", 404, "No draft with this id.")
TOO_MANY_DRAFTS = Problem("draft.too-many", 409, "This organisation keeps as many drafts as it may; delete some first.")
DRAFT_INVALID = Problem("draft.invalid", 422, "A draft is a JSON object with a name and a CAP alert (JSON or XML text).")
TEMPLATES_INVALID = Problem(
    "correction.templates-invalid", 422,
    "Correction templates map language tags to an object with headline, description and instruction texts.",
)
REFERENCE_UNKNOWN = Problem("policy.reference-unknown", 422, "A reference names no alert tocsin holds.")
REFERENCE_NOT_ALLOWED = Problem(
    "policy.reference-not-allowed", 422, "A reference names an alert of another issuer organisation."
)
SEVERITY_NOT_ALLOWED = Problem("policy.severity-not-allowed", 403, "This account may not send alerts of this severity.")
OUTSIDE_TERRITORY = Problem(
    "policy.outside-territory", 403,
    "An area lies outside the issuer organisation's territory, beyond the deployment's margin.",
)

# Named areas (gazetteers, docs/areas.md)
UNKNOWN_GEOCODE = Problem(
    "area.unknown-geocode", 422, "A geocode names a gazetteer tocsin holds but a code that gazetteer does not have."
)
AREA_SELF_INTERSECTING = Problem(
    "area.self-intersecting", 422, "A polygon crosses itself, so which points are inside it is ambiguous."
)
GAZETTEER_INVALID = Problem(
    "area.import-invalid", 422, "The named areas given for import cannot be read or pass a bound; nothing was stored."
)
NAMED_AREA_NOT_FOUND = Problem("area.not-found", 404, "No named area with this scheme and code.")

# FEEDS: the CAP Atom feeds (api/feeds.py, docs/feeds.md)
FEED_BUSY = Problem(
    "feed.busy", 503, "This node is building as many area feeds as may wait; retry shortly, or ask another node.",
)

# Audit log
AUDIT_QUERY_INVALID = Problem("audit.query-invalid", 400, "The audit query is not valid.")

# Storage
ACCEPT_BUSY = Problem(
    "accept.busy", 503, "This node has as many alerts waiting to be stored as it allows; retry shortly."
)
STORE_UNAVAILABLE = Problem(
    "store.unavailable", 503, "The alert store cannot confirm durable storage right now; retry."
)
STORE_FULL = Problem(
    "store.full", 507,
    "The alert store is full and cannot take this alert; an operator must act (do not retry).",
)
ALERT_NOT_FOUND = Problem("alert.not-found", 404, "No alert with this id.")
IDENTITY_CONFLICT = Problem(
    "alert.identity-conflict", 409, "An alert with this sender and identifier is already stored with different content."
)
STORED_TOO_LARGE = Problem(
    "alert.stored-too-large", 413,
    "The alert as it would be stored (signed CAP, resolved areas, cover and headers) is larger than the limit.",
)

# Policy: what may be distributed
EXPIRED = Problem("cap.expired", 422, "The alert expired before it was received.")
SENT_IN_FUTURE = Problem("cap.sent-in-future", 422, "The alert's sent time is too far in the future.")
DRAFT = Problem("policy.draft", 422, "Draft alerts are templates and are never distributed.")
NOT_PUBLIC = Problem("policy.scope-not-public", 422, "Only Public alerts are distributed to devices.")
NO_AREA = Problem("policy.no-area", 422, "The alert has no area tocsin can locate, so it would reach no device.")
UNLOCATABLE_AREA = Problem(
    "policy.unlocatable-area", 422, "An area has neither polygon nor circle, and no gazetteer knows its geocodes."
)
SENDER_NOT_ALLOWED = Problem("policy.sender-not-allowed", 403, "This account may not send as this sender.")
SYSTEM_NOT_ALLOWED = Problem("policy.status-not-allowed", 403, "This account may not send alerts of this status.")
MSGTYPE_NOT_DISTRIBUTED = Problem(
    "policy.msgtype-not-distributed", 422, "Ack and Error messages are not distributed to devices."
)
# Alert limits (settings max_alert_*, raised per issuer account): checked before any cover.
TOO_MANY_SHAPES = Problem(
    "policy.too-many-shapes", 422, "The alert has more areas, polygons, circles or points than its issuer may send."
)
AREA_TOO_LARGE = Problem("policy.area-too-large", 422, "The alert's areas are larger than its issuer may cover.")
TOO_MANY_REFERENCES = Problem(
    "policy.too-many-references", 422, "The Update or Cancel names more references than an alert may."
)
COVER_TOO_SLOW = Problem(
    "policy.cover-too-slow", 422, "The alert's areas could not be turned into cells within the deadline."
)
# Valid CAP 1.2 that tocsin does not distribute (CAP 1.2 does not forbid these; see policy.py).
CAP_EXPIRES_BEFORE_SENT = Problem(
    "cap.expires-before-sent", 422, "tocsin does not distribute an info that expires before, or when, the alert was sent."
)
CAP_EXPIRES_BEFORE_START = Problem(
    "cap.expires-before-start", 422, "tocsin does not distribute an info that expires before it becomes effective or before its onset."
)
CAP_CEILING_BELOW_ALTITUDE = Problem(
    "cap.ceiling-below-altitude", 422, "tocsin does not distribute an area whose ceiling is lower than its altitude."
)

# Devices
DEVICE_INVALID = Problem("device.invalid", 422, "The device registration is not valid.")
CELL_INVALID = Problem("device.cell-invalid", 422, "A cell is not a valid H3 cell at or below the service's resolution.")
DEVICE_UNKNOWN = Problem("device.unknown", 401, "The device token is not valid.")
DEVICE_TOO_MANY_CELLS = Problem("device.too-many-cells", 422, "The device asks for more cells than a device may watch.")
TOO_MANY_REGISTRATIONS = Problem(
    "device.too-many-registrations", 429, "This source registered too many devices; retry after the time given."
)
REGISTRATIONS_BUSY = Problem(
    "device.registrations-busy", 429, "This node takes no more registrations for now; retry after the time given."
)
DEVICE_REGISTRY_FULL = Problem(
    "device.registry-full", 507, "The device registry is full; unused records expire, retry much later."
)
TOO_MANY_STREAMS = Problem("device.too-many-streams", 429, "This device token holds as many streams as it may.")
# Push registrations and gateway deliveries (docs/delivery.md).
CHANNEL_UNAVAILABLE = Problem(
    "device.channel-unavailable", 422, "This deployment does not deliver through the channel the device asks for."
)
PUSH_TARGET_INVALID = Problem(
    "device.push-target-invalid", 422, "The push subscription or token is not one the channel's gateway would take."
)
PUSH_HOST_REFUSED = Problem(
    "device.push-host-refused", 422, "The push endpoint names a host that is not a push service this deployment posts to."
)
DEVICE_TOO_MANY_UPDATES = Problem(
    "device.too-many-updates", 429, "This device changed its registration too often; retry after the time given."
)
RECEIPT_INVALID = Problem("receipt.invalid", 422, "The receipt does not name an alert this device was sent.")
RECEIPT_RATE_LIMITED = Problem(
    "receipt.rate-limited", 429, "This device sent more receipts than it may; retry after the time given."
)
EVENT_UNKNOWN = Problem("event.unknown", 404, "No active alert with this id.")
ROUTE_INVALID = Problem("route.invalid", 422, "The CAP route is not valid.")
ROUTE_UNKNOWN = Problem("route.unknown", 404, "No CAP route with this name.")
# SOURCES: other authorities' CAP feeds relayed (docs/sources.md).
SOURCE_INVALID = Problem("source.invalid", 422, "The CAP source is not valid.")
SOURCE_UNKNOWN = Problem("source.unknown", 404, "No CAP source with this name.")
NODE_NOT_READY = Problem(
    "node.not-ready", 503, "This node cannot deliver right now; connect to another node and resume."
)
EVENT_ID_INVALID = Problem(
    "device.event-id-invalid", 400, "Last-Event-ID must be an event id as sent (seq.idprefix) or a seq."
)

# CAP parsing and validation. Kind "schema": what the OASIS CAP 1.2 XSD enforces;
# kind "semantic": rules of the CAP 1.2 specification that the schema cannot express.
# (CAP section below: codes added by cap/ as rules are implemented.)

# Reading the document.
CAP_TOO_LARGE = Problem("cap.too-large", 413, "The CAP document is larger than the limit; it was not read.")
CAP_NOT_XML = Problem("cap.not-xml", 422, "The document is not well-formed XML.")
CAP_DOCTYPE_FORBIDDEN = Problem(
    "cap.doctype-forbidden", 422, "The document has a DOCTYPE or entity declarations; CAP needs neither and tocsin refuses them."
)
CAP_WRONG_NAMESPACE = Problem(
    "cap.wrong-namespace", 422, "The root element is not in the CAP 1.2 namespace urn:oasis:names:tc:emergency:cap:1.2."
)
CAP_WRONG_ROOT = Problem("cap.wrong-root", 422, "The root element must be a single CAP <alert>.")
CAP_NOT_JSON = Problem("cap.not-json", 422, "The document is not valid JSON.")
CAP_JSON_TYPE = Problem("cap.json-type", 422, "A JSON value has the wrong type for its CAP element.")
CAP_INVALID_CHARACTER = Problem("cap.invalid-character", 422, "A text holds a character that XML cannot carry.")

# Kind "schema": structure and types, exactly as the OASIS CAP 1.2 XSD checks them.
CAP_REQUIRED = Problem("cap.required", 422, "A required CAP element is missing.")
CAP_ORDER = Problem("cap.order", 422, "CAP elements are out of order; CAP 1.2 fixes the order of elements.")
CAP_TOO_MANY = Problem("cap.too-many", 422, "A CAP element appears more often than CAP 1.2 allows.")
CAP_UNKNOWN_ELEMENT = Problem("cap.unknown-element", 422, "An element is not part of CAP 1.2 at this place.")
CAP_ATTRIBUTE_NOT_ALLOWED = Problem("cap.attribute-not-allowed", 422, "CAP 1.2 elements carry no attributes.")
CAP_TEXT_NOT_ALLOWED = Problem("cap.text-not-allowed", 422, "This CAP element holds other elements only, not text.")
CAP_ELEMENT_IN_TEXT = Problem("cap.element-in-text", 422, "This CAP element holds text only, not other elements.")
CAP_ENUM = Problem("cap.enum", 422, "The value is not one of those CAP 1.2 allows for this element.")
CAP_DATETIME = Problem(
    "cap.datetime", 422, "A CAP date-time must read YYYY-MM-DDThh:mm:ss+hh:mm (or -hh:mm), with no Z and no fractions."
)
CAP_DATETIME_INVALID = Problem("cap.datetime-invalid", 422, "The date-time names a day or time that does not exist.")
CAP_INTEGER = Problem("cap.integer", 422, "The value must be a whole number.")
CAP_DECIMAL = Problem("cap.decimal", 422, "The value must be a decimal number such as 120 or -3.5.")
CAP_LANGUAGE = Problem("cap.language", 422, "The language must be an RFC 3066 code such as en-US.")
CAP_URI = Problem("cap.uri", 422, "The value is not a valid URI.")

# Kind "semantic": CAP 1.2 rules the XSD cannot express (each cites its clause in cap/rules.py).
CAP_FORBIDDEN_CHARACTERS = Problem(
    "cap.forbidden-characters", 422, "Identifier and sender must not contain spaces, commas, '<' or '&'."
)
CAP_REFERENCES_REQUIRED = Problem(
    "cap.references-required", 422, "An Update, Cancel, Ack or Error must name the messages it refers to in <references>."
)
CAP_REFERENCES_MALFORMED = Problem(
    "cap.references-malformed", 422, "Each reference must read sender,identifier,sent, separated by spaces."
)
CAP_RESTRICTION_REQUIRED = Problem("cap.restriction-required", 422, "A Restricted alert must say who may see it in <restriction>.")
CAP_ADDRESSES_REQUIRED = Problem("cap.addresses-required", 422, "A Private alert must list its recipients in <addresses>.")
CAP_LIST_MALFORMED = Problem(
    "cap.list-malformed", 422, "A list must be space-separated values, with multi-word values in double quotes."
)
CAP_POLYGON_MALFORMED = Problem(
    "cap.polygon-malformed", 422, "A polygon must be space-separated lat,lon pairs of decimal degrees."
)
CAP_POLYGON_TOO_FEW_POINTS = Problem("cap.polygon-too-few-points", 422, "A polygon needs at least four points, the last repeating the first.")
CAP_POLYGON_NOT_CLOSED = Problem("cap.polygon-not-closed", 422, "A polygon's last point must repeat its first point.")
CAP_COORDINATE_OUT_OF_RANGE = Problem(
    "cap.coordinate-out-of-range", 422, "Latitude must lie within -90..90 and longitude within -180..180."
)
CAP_CIRCLE_INVALID = Problem("cap.circle-invalid", 422, "A circle must read lat,lon radius, the radius in km and not negative.")
CAP_CEILING_WITHOUT_ALTITUDE = Problem("cap.ceiling-without-altitude", 422, "An area with a ceiling must also give its altitude.")
CAP_DEREF_URI_NOT_BASE64 = Problem("cap.deref-uri-not-base64", 422, "A resource's derefUri must hold base64-encoded data.")

# FPAS: the FOSS Public Alert Server client API (docs/fpas.md). Its clients read the status
# only: 400 for every refused request, 404 for a subscription that is no more.
FPAS_INVALID = Problem("fpas.invalid", 400, "The request lacks a field the FPAS API needs, or one is malformed.")
FPAS_BOX_INVALID = Problem(
    "fpas.box-invalid", 400, "The bounding box needs min_lat < max_lat within -90..90 and min_lon < max_lon within -180..180."
)
FPAS_BOX_TOO_LARGE = Problem("fpas.box-too-large", 400, "The bounding box covers more cells than a subscription may hold.")
FPAS_PUSH_SERVICE_UNAVAILABLE = Problem("fpas.push-service-unavailable", 400, "This deployment does not deliver through that push service.")
FPAS_PUSH_ENDPOINT_REFUSED = Problem(
    "fpas.push-endpoint-refused", 400, "The push endpoint is not an https URL at a push server this deployment posts to."
)
FPAS_PUSH_UNCONFIRMED = Problem(
    "fpas.push-unconfirmed", 400, "The push endpoint did not take the confirmation push; nothing was subscribed."
)
FPAS_SUBSCRIPTION_UNKNOWN = Problem("fpas.subscription-unknown", 404, "The subscription is unknown or expired: subscribe again.")
FPAS_NO_SUBSCRIPTION = Problem("fpas.no-subscription", 400, "No valid subscription has that id.")
FPAS_ALERT_UNKNOWN = Problem("fpas.alert-unknown", 404, "No active alert has that id.")
FPAS_SUBSCRIPTIONS_FULL = Problem(
    "fpas.subscriptions-full", 507, "This server holds as many FPAS subscriptions as it takes; unused ones expire, retry later."
)

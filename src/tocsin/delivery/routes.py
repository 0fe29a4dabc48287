"""CAP forwarding routes: their records, the book every node mirrors, and their consumers.

A route is a downstream system (a cell-broadcast gateway, an aggregator, a broadcaster)
that takes each alert's signed CAP by HTTP POST (docs/cap-forwarding.md). A deployment
admin configures routes (api/cap_routes.py, `tocsin routes`); they live in the routes
bucket, one record per route keyed by its name, and every node mirrors that bucket into a
`RouteBook`. The planner asks the book which routes take an alert of a status
(`names_for`) and enqueues one delivery per route on `S.route.<name>`; the route worker
(route_worker.py) posts them in order, one at a time per route in the whole cluster.

Secrets: a route's bearer token is stored in the bucket as given (every node posts with it,
so every node must read it; the bucket is the one that already holds the accounts), and
never leaves a node in an answer: `public_json` says only whether there is one.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from tocsin.delivery.queue import route_subject
from tocsin.errors import ROUTE_INVALID, Problem, Rejected, Violation
from tocsin.settings import Settings
from tocsin.store.book import Book

# A route's name: a NATS subject token, a consumer name and a bucket key all at once.
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
MAX_URL_CHARS = 2048
# RFC 6750 b64token: what a bearer token may be, and nothing that could break a header.
TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
MAX_TOKEN_CHARS = 4096
# What a route may forward; Draft never leaves tocsin (CAP 1.2: "not actionable").
STATUSES = ("Actual", "Exercise", "System", "Test")
DEFAULT_STATUSES = ("Actual", "Exercise", "Test")
# The fields a PUT may hold.
FIELDS = frozenset({"url", "statuses", "token", "enabled"})
MAX_ROUTES = 256
CONSUMER_PREFIX = "route-"


def field_refusal(problem: Problem, path: str, detail: str) -> Rejected:
    """`problem` (422) naming the exact field: a route's, or a source's (sources/model.py)."""
    return Rejected(problem, f"{path}: {detail}", violations=(
        Violation(problem=problem, path=path, detail=detail, kind="policy"),))


def invalid(path: str, detail: str) -> Rejected:
    """422 route.invalid naming the exact field."""
    return field_refusal(ROUTE_INVALID, path, detail)


def check_name(raw: object, refuse: Callable[[str, str], Rejected] = invalid) -> str:
    if not isinstance(raw, str) or not NAME.fullmatch(raw):
        raise refuse("name", "1 to 63 of a-z, 0-9 and '-', starting with a letter or digit")
    return raw


def check_url(raw: object) -> str:
    """An absolute http(s) URL with a host, no userinfo, no fragment, bounded.

    Deployment admins configure routes, so any host they name is theirs to choose (a
    gateway on a private network is common); what is not a plain URL is refused."""
    if not isinstance(raw, str) or not raw:
        raise invalid("url", "a string: the downstream's http or https URL")
    if len(raw) > MAX_URL_CHARS:
        raise invalid("url", f"at most {MAX_URL_CHARS} characters")
    if any(c.isspace() or ord(c) < 0x21 or ord(c) == 0x7F for c in raw) or not raw.isascii():
        raise invalid("url", "no spaces, control or non-ASCII characters (percent-encode them)")
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise invalid("url", f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise invalid("url", "the scheme must be http or https")
    if "@" in parts.netloc:
        raise invalid("url", "no user or password in the URL (give a token instead)")
    if not parts.hostname:
        raise invalid("url", "a host is needed")
    if parts.fragment or raw.endswith("#"):
        raise invalid("url", "no fragment")
    if port == 0:
        raise invalid("url", "port 0 is not a port")
    _check_host(parts.hostname)
    return raw


def _check_host(host: str) -> None:
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(re.fullmatch(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?", label, re.I)
                                  for label in labels):
        raise invalid("url", f"the host {host[:80]!r} is not a host name or an IP address")


def check_statuses(raw: object) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw or len(raw) > len(STATUSES):
        raise invalid("statuses", f"a non-empty list of {', '.join(STATUSES)}")
    for n, status in enumerate(raw):
        if status == "Draft":
            raise invalid(f"statuses[{n}]", "Draft alerts are never forwarded")
        if status not in STATUSES:
            raise invalid(f"statuses[{n}]", f"one of {', '.join(STATUSES)}")
    return tuple(sorted(set(raw), key=STATUSES.index))


def check_token(raw: object) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, str) or not raw or len(raw) > MAX_TOKEN_CHARS or not TOKEN.fullmatch(raw):
        raise invalid("token", f"a bearer token (RFC 6750 characters), at most {MAX_TOKEN_CHARS}; null: none")
    return raw


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    name: str
    url: str
    statuses: tuple[str, ...] = DEFAULT_STATUSES
    token: str = field(default="", repr=False)
    enabled: bool = True
    created: str = ""
    created_by: str = ""
    changed: str = ""
    changed_by: str = ""

    def as_json(self) -> dict[str, Any]:
        """The bucket record (with the token)."""
        return {
            "name": self.name, "url": self.url, "statuses": list(self.statuses), "token": self.token,
            "enabled": self.enabled, "created": self.created, "created_by": self.created_by,
            "changed": self.changed, "changed_by": self.changed_by,
        }

    def public_json(self) -> dict[str, Any]:
        """What an answer shows: never the token, only whether there is one."""
        data = self.as_json()
        del data["token"]
        return {**data, "has_token": bool(self.token)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Route | None:
        """A record as written by `as_json`; None (never an exception) for anything else."""
        try:
            return cls(
                name=check_name(data.get("name")), url=check_url(data.get("url")),
                statuses=check_statuses(data.get("statuses")), token=check_token(data.get("token") or None),
                enabled=bool(data.get("enabled", True)), created=str(data.get("created", "")),
                created_by=str(data.get("created_by", "")), changed=str(data.get("changed", "")),
                changed_by=str(data.get("changed_by", "")),
            )
        except Rejected:
            return None

    def wants(self, status: str) -> bool:
        return self.enabled and status in self.statuses


def from_body(name: str, body: dict[str, Any], old: Route | None, *, actor: str, now: str) -> Route:
    """The route a PUT describes: a new one, or `old` replaced. An absent `token` keeps
    the old one (no answer shows it, so a client cannot send it back); null removes it.

    Raises:
        Rejected: 422 route.invalid naming the field.
    """
    for key in sorted(set(body) - FIELDS):
        raise invalid(key, f"not a route field ({', '.join(sorted(FIELDS))})")
    enabled = body.get("enabled", True)
    if not isinstance(enabled, bool):
        raise invalid("enabled", "true or false")
    statuses = check_statuses(body["statuses"]) if "statuses" in body else DEFAULT_STATUSES
    token = check_token(body["token"]) if "token" in body else (old.token if old else "")
    route = Route(name=check_name(name), url=check_url(body.get("url")), statuses=statuses, token=token,
                  enabled=enabled, created=now, created_by=actor, changed=now, changed_by=actor)
    if old is not None:
        route = replace(route, created=old.created, created_by=old.created_by)
    return route


class RouteBook(Book[Route]):
    """Every route record, as the node's mirror of the routes bucket holds them.

    The bucket mirror (`KvRecords.mirror`) writes the raw records in; the planner reads
    `names_for`, the route worker `routes`. Unreadable records route nothing."""

    def __init__(self) -> None:
        super().__init__(Route.from_json, lambda route: route.name)

    def route(self, name: str) -> Route | None:
        return self.value(name)

    def routes(self) -> list[Route]:
        return self.values_by_name()

    def names_for(self, status: str) -> list[str]:
        """The enabled routes that forward alerts of this CAP status, by name (the planner's
        `routes_for`). Draft: none, ever."""
        return sorted(name for name, route in self.items_parsed() if route.wants(status))


# Consumers on the DELIVERIES work queue, one per route.


def consumer_name(route: str) -> str:
    return f"{CONSUMER_PREFIX}{route}"


def consumer_config(settings: Settings, route: str) -> ConsumerConfig:
    """One delivery in flight per route in the whole cluster (max_ack_pending 1): each is
    accepted downstream, refused or given up before the next one goes, in stream order."""
    return ConsumerConfig(
        durable_name=consumer_name(route), filter_subject=route_subject(settings, route),
        ack_policy=AckPolicy.EXPLICIT, ack_wait=settings.delivery_ack_wait_s, max_ack_pending=1,
        deliver_policy=DeliverPolicy.ALL, max_deliver=-1,
    )


async def ensure_consumer(js: JetStreamContext, settings: Settings, route: str) -> None:
    """Create the route's consumer (the same config again is no change). nats errors as they come."""
    await js.add_consumer(settings.deliveries_stream, consumer_config(settings, route))


async def remove_consumer(js: JetStreamContext, settings: Settings, route: str) -> None:
    """Delete the route's consumer and what waits on its subject (nothing goes to a removed
    route, even if it is added again). nats errors as they come; a missing consumer is none."""
    try:
        await js.delete_consumer(settings.deliveries_stream, consumer_name(route))
    except nats.js.errors.NotFoundError:
        pass
    await js.purge_stream(settings.deliveries_stream, subject=route_subject(settings, route))


def is_route_consumer(name: str | None) -> bool:
    return bool(name) and str(name).startswith(CONSUMER_PREFIX)


NatsErrors = (nats.errors.Error, TimeoutError)

"""The CAP Atom feeds' part of the OpenAPI document (api/feeds.py; docs/feeds.md)."""

from __future__ import annotations

from tocsin.api.openapi import _COMMON, _RETRY_AFTER, Json, _header, _problems
from tocsin.api.openapi_areas import _CODE, _SCHEME
from tocsin.errors import Problem

_IF_NONE_MATCH = {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"},
                  "description": "The ETag of a copy the client holds: 304 while the feed is unchanged."}
_HEADERS = {"ETag": _header("A strong tag of this version of the feed."),
            "Cache-Control": _header("public, max-age=TOCSIN_FEED_MAX_AGE_S.")}
_ATOM = {
    "description": "An Atom feed (RFC 4287): one entry per public Actual alert of the window, newest first, "
    "each linking its CAP (`rel=alternate`, `type=application/cap+xml`) and carrying cap:identifier, "
    "cap:sender, cap:sent, cap:msgType, cap:references (Update, Cancel) and cap:expires.",
    "content": {"application/atom+xml": {"schema": {"type": "string"}}},
    "headers": _HEADERS,
}
_NOT_MODIFIED = {"description": "The feed is the one whose ETag was sent.", "headers": _HEADERS}


def feeds_paths(catalog: list[Problem]) -> Json:
    """`/feeds/alerts.atom` and the feed of each named area."""
    def read(op_id: str, summary: str, extra: Json, params: list[Json]) -> Json:
        return {"get": {"tags": ["public"], "operationId": op_id, "summary": summary, "parameters": params,
                        "responses": {"200": _ATOM, "304": _NOT_MODIFIED, **extra, **_COMMON}}}

    return {
        "/feeds/alerts.atom": read("alertsFeed", "The public Actual alerts, as a CAP Atom feed", {}, [_IF_NONE_MATCH]),
        "/feeds/areas/{scheme}/{code}.atom": read(
            "areaFeed", "The same for one named area: the alerts that name it or reach into it",
            {"404": _problems(catalog, 404, ("area.",)), "503": _problems(catalog, 503, ("feed.",), _RETRY_AFTER)},
            [_SCHEME, _CODE, _IF_NONE_MATCH]),
    }

"""Gazetteers over HTTP (docs/areas.md): public reads of the named areas a node holds, and
the deployment admin's import and removal of a scheme through the areas bucket.

An import is checked whole before anything is written (the same `from_geojson` the
built-in gazetteers load with): a refusal names the feature, and nothing is stored. The
body may be larger than any other (`max_areas_import_bytes`, let through by the edge for
this path only); it is read only after the admin's token is checked, one import at a time
per node, and parsed off the event loop. The answer comes once this node's gazetteer shows
the change (bounded); every other node's mirror shows it milliseconds later.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tocsin.api.admin import admin_for, path_param
from tocsin.api.alerts import read_body
from tocsin.api.services import Services
from tocsin.errors import GAZETTEER_INVALID, NAMED_AREA_NOT_FOUND, Rejected
from tocsin.geo.gazetteer import (
    BUILTIN_ATTRIBUTION,
    CODE_TEXT,
    MAX_IMPORTED_POINTS,
    MAX_IMPORTED_SCHEMES,
    SCHEME_TEXT,
    Gazetteer,
    GazetteerInvalid,
    NamedArea,
    from_geojson,
    key_for,
)
from tocsin.store.audit import Action

# A change waits this long for this node's mirror to show it; past that it answers anyway.
SEEN_WAIT_S = 5.0
# Codes and names per page of `GET /api/v1/areas/{scheme}`.
MAX_PAGE = 1000
MAX_PROPERTY = 100


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _scheme(request: Request) -> str:
    scheme = path_param(request, "scheme")
    if not SCHEME_TEXT.fullmatch(scheme):
        raise Rejected(NAMED_AREA_NOT_FOUND, f"{scheme!r:.80} is not a scheme name")
    return scheme


# Public reads


async def list_schemes(request: Request) -> Response:
    """Every scheme this node holds, with its count and source."""
    gazetteer = _services(request).accept.gazetteer
    schemes = [{"scheme": scheme, "areas": count, "source": gazetteer.source(scheme)}
               for scheme, count in gazetteer.schemes().items()]
    attribution = {scheme: BUILTIN_ATTRIBUTION for scheme in sorted(gazetteer.builtin_schemes)}
    return JSONResponse({"schemes": schemes, "attribution": attribution})


async def list_areas(request: Request) -> Response:
    """One scheme's codes and names, by code, a page at a time (`after`, `limit`)."""
    gazetteer = _services(request).accept.gazetteer
    scheme = _scheme(request)
    if not gazetteer.knows(scheme):
        raise Rejected(NAMED_AREA_NOT_FOUND, f"no scheme {scheme!r} (GET /api/v1/areas lists them)")
    after = request.query_params.get("after", "")[:64]
    raw_limit = request.query_params.get("limit", "")[:8]  # digits past 8 would only clamp
    limit = min(int(raw_limit), MAX_PAGE) if raw_limit.isdigit() and int(raw_limit) > 0 else MAX_PAGE
    areas = [a for a in gazetteer.areas_of(scheme) if a.code > after]
    page = areas[:limit]
    return JSONResponse({
        "scheme": scheme, "source": gazetteer.source(scheme), "count": gazetteer.schemes().get(scheme, 0),
        "areas": [{"code": a.code, "name": a.name, "polygons": len(a.polygons), "points": a.points} for a in page],
        "next": page[-1].code if len(areas) > limit else None,
    })


async def show_area(request: Request) -> Response:
    """One named area with its polygons ([lat, lon] rings)."""
    gazetteer = _services(request).accept.gazetteer
    scheme, code = _scheme(request), path_param(request, "code")
    area = gazetteer.lookup(scheme, code) if CODE_TEXT.fullmatch(code) else None
    if area is None:
        raise Rejected(NAMED_AREA_NOT_FOUND, f"{scheme} has no code {code!r:.80}")
    return Response(_area_body(area, gazetteer.source(scheme)), media_type="application/json")


# Bodies of `show_area` by (scheme, code), each kept with the area it shows: an anonymous
# client asking for a 20,000-point area again and again costs a dict read, not a JSON
# encoding of hundreds of kilobytes each time.
# Bounded in bytes (an area's body is at most about 1 MB).
_BODIES: OrderedDict[tuple[str, str], tuple[NamedArea, str, bytes]] = OrderedDict()
_BODIES_MAX_BYTES = 16 * 1024 * 1024


def _area_body(area: NamedArea, source: str) -> bytes:
    key = (area.scheme, area.code)
    cached = _BODIES.get(key)
    if cached is not None and cached[0] is area and cached[1] == source:
        _BODIES.move_to_end(key)
        return cached[2]
    body = json.dumps({**area.as_json(), "points": area.points, "source": source},
                      ensure_ascii=False, separators=(",", ":")).encode()
    _BODIES[key] = (area, source, body)
    while sum(len(kept) for _, _, kept in _BODIES.values()) > _BODIES_MAX_BYTES and len(_BODIES) > 1:
        _BODIES.popitem(last=False)
    return body


# Admin: import and remove


def _property(request: Request, name: str, required: bool) -> str | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        if required:
            raise Rejected(GAZETTEER_INVALID, f"{name}: the feature property that holds each area's code is required")
        return None
    if len(value) > MAX_PROPERTY:
        raise Rejected(GAZETTEER_INVALID, f"{name}: at most {MAX_PROPERTY} characters")
    return value


def _not_builtin(gazetteer: Gazetteer, scheme: str) -> None:
    if scheme in gazetteer.builtin_schemes:
        raise Rejected(GAZETTEER_INVALID, (
            f"{scheme} is built into tocsin and loaded on this node (TOCSIN_BUILTIN_GAZETTEERS=true): import "
            "under another scheme name, or set TOCSIN_BUILTIN_GAZETTEERS=false on every node first (docs/areas.md)"
        ))


def read_geojson(raw: bytes, scheme: str, code_property: str, name_property: str | None) -> list[NamedArea]:
    """The named areas of a GeoJSON body (called off the loop: it parses megabytes).

    Raises:
        GazetteerInvalid: not JSON, or as `from_geojson`; naming the feature.
    """
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise GazetteerInvalid(f"the file is not JSON: {str(exc)[:120]}") from None
    areas = from_geojson(document, scheme=scheme, code_property=code_property, name_property=name_property)
    if not areas:
        raise GazetteerInvalid("the file has no feature")
    return areas


async def import_areas(request: Request) -> Response:
    """PUT /api/v1/admin/areas/{scheme}: the scheme from now on is what the GeoJSON body
    holds (areas it no longer lists are removed). 201 for a new scheme, 200 for a replaced one."""
    admin = await admin_for(request)
    admin.deployment()
    services = admin.services
    gazetteer = services.accept.gazetteer
    scheme = path_param(request, "scheme")
    if not SCHEME_TEXT.fullmatch(scheme):
        raise Rejected(GAZETTEER_INVALID, f"scheme {scheme!r:.80} must be letters, digits, '_', '.', '-' (at most 64)")
    _not_builtin(gazetteer, scheme)
    code_property = _property(request, "code_property", True)
    name_property = _property(request, "name_property", False)
    assert code_property is not None
    async with services.areas_importing:
        raw = await read_body(request, services.settings.max_areas_import_bytes)
        try:
            areas = await asyncio.to_thread(read_geojson, raw, scheme, code_property, name_property)
        except GazetteerInvalid as exc:
            raise Rejected(GAZETTEER_INVALID, str(exc)) from None
        existed = gazetteer.knows(scheme)
        _fits(services, scheme, areas, existed)
        codes = {area.code for area in areas}
        stale = [area.code for area in gazetteer.areas_of(scheme) if area.code not in codes]
        for area in areas:
            await services.store.areas.put(key_for(scheme, area.code), area.as_json())
        for code in stale:
            await services.store.areas.delete(key_for(scheme, code))
        await admin.audit(Action.AREAS_IMPORTED, scheme, admin.issuer.name, {
            "scheme": scheme, "areas": len(areas), "removed": len(stale), "bytes": len(raw),
        })
        await services.areas.until(_shown(gazetteer, areas, [(scheme, code) for code in stale]), SEEN_WAIT_S)
    return JSONResponse({"scheme": scheme, "source": "imported", "areas": len(areas), "removed": len(stale),
                         "points": sum(a.points for a in areas)}, status_code=200 if existed else 201)


async def remove_areas(request: Request) -> Response:
    """DELETE /api/v1/admin/areas/{scheme}: every area of an imported scheme leaves the
    bucket and every node's gazetteer (a territory naming one then holds nothing there)."""
    admin = await admin_for(request)
    admin.deployment()
    services = admin.services
    gazetteer = services.accept.gazetteer
    scheme = _scheme(request)
    _not_builtin(gazetteer, scheme)
    async with services.areas_importing:
        codes = [area.code for area in gazetteer.areas_of(scheme)]
        if not codes:
            raise Rejected(NAMED_AREA_NOT_FOUND, f"no imported scheme {scheme!r}")
        for code in codes:
            await services.store.areas.delete(key_for(scheme, code))
        await admin.audit(Action.AREAS_REMOVED, scheme, admin.issuer.name, {"scheme": scheme, "removed": len(codes)})
        await services.areas.until(lambda: not gazetteer.knows(scheme), SEEN_WAIT_S)
    return JSONResponse({"scheme": scheme, "removed": len(codes)})


def _fits(services: Services, scheme: str, areas: list[NamedArea], existed: bool) -> None:
    """Refuse an import that would take the imported gazetteers past what every node holds."""
    gazetteer = services.accept.gazetteer
    imported = [s for s in gazetteer.schemes() if s not in gazetteer.builtin_schemes]
    if not existed and len(imported) >= MAX_IMPORTED_SCHEMES:
        raise Rejected(GAZETTEER_INVALID, f"{len(imported)} schemes are imported already; at most "
                                          f"{MAX_IMPORTED_SCHEMES} (tocsin areas remove)")
    replaced = sum(area.points for area in gazetteer.areas_of(scheme))
    total = services.areas.points - replaced + sum(area.points for area in areas)
    if total > MAX_IMPORTED_POINTS:
        raise Rejected(GAZETTEER_INVALID, f"the imported gazetteers would hold {total} points; at most "
                                          f"{MAX_IMPORTED_POINTS}")


def _shown(gazetteer: Gazetteer, written: list[NamedArea], removed: list[tuple[str, str]]) -> Callable[[], bool]:
    """Whether the gazetteer shows every write, checked in the order the mirror applies them
    (each area is compared once it shows, so waiting costs one pass, not one per change)."""
    seen = [0, 0]

    def shown() -> bool:
        while seen[0] < len(written) and gazetteer.lookup(written[seen[0]].scheme, written[seen[0]].code) == written[seen[0]]:
            seen[0] += 1
        while seen[1] < len(removed) and gazetteer.lookup(*removed[seen[1]]) is None:
            seen[1] += 1
        return seen[0] == len(written) and seen[1] == len(removed)

    return shown


async def areas_admin(request: Request) -> Response:
    """One endpoint for the path: PUT imports, DELETE removes."""
    return await (import_areas if request.method == "PUT" else remove_areas)(request)


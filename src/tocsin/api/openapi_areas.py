"""The gazetteer API's part of the OpenAPI document (api/areas.py; docs/areas.md)."""

from __future__ import annotations

from tocsin.api.openapi import _COMMON, Json, _json, _problems, _ref
from tocsin.api.openapi_admin import _op
from tocsin.errors import Problem

_TEXT = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}
_SCHEME = {"name": "scheme", "in": "path", "required": True, "schema": _TEXT,
           "description": "A gazetteer scheme: the CAP geocode valueName, such as INSEE-DEP."}
_CODE = {"name": "code", "in": "path", "required": True, "schema": _TEXT,
         "description": "A code of the scheme: the CAP geocode value, such as 06."}


def _read(catalog: list[Problem], op_id: str, summary: str, ok: Json, params: tuple[Json, ...] = ()) -> Json:
    operation: Json = {"tags": ["public"], "operationId": op_id, "summary": summary, "responses": {
        "200": ok, "404": _problems(catalog, 404, ("area.",)), **_COMMON}}
    if params:
        operation["parameters"] = list(params)
    return operation


def _admin(catalog: list[Problem], op_id: str, summary: str, ok: Json, params: tuple[Json, ...]) -> Json:
    """An admin operation as the accounts' are, with the named areas' problems."""
    operation = _op(catalog, op_id, summary, ok, params=params)
    responses = operation["responses"]
    del responses["409"]
    responses.update({"404": _problems(catalog, 404, ("area.",)), "422": _problems(catalog, 422, ("area.",))})
    return operation


def areas_paths(catalog: list[Problem]) -> Json:
    """The public reads of the gazetteers and the deployment admin's import and removal."""
    page = [{"name": "after", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "Only codes after this one (the previous page's `next`)."},
            {"name": "limit", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1000}}]
    imported = _json(_ref("AreasImported"), "The scheme as stored: its areas, and how many it no longer has.")
    importing = dict(_admin(
        catalog, "importAreas", "Import (or replace) a gazetteer scheme from a GeoJSON FeatureCollection "
        "(deployment admins; checked whole, nothing stored on a refusal)",
        {"200": imported, "201": imported}, (
            _SCHEME,
            {"name": "code_property", "in": "query", "required": True, "schema": {"type": "string", "maxLength": 100},
             "description": "The feature property holding each area's code."},
            {"name": "name_property", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 100},
             "description": "The feature property holding each area's name (default: the code)."},
        )))
    importing["requestBody"] = {"required": True, "description": "At most TOCSIN_MAX_AREAS_IMPORT_BYTES.",
                                "content": {"application/geo+json": {"schema": {"type": "object"}},
                                            "application/json": {"schema": {"type": "object"}}}}
    return {
        "/api/v1/areas": {"get": _read(catalog, "listSchemes", "The gazetteer schemes this node holds", _json(
            _ref("Schemes"), "Each scheme with its count and source; the built-in ones' attribution."))},
        "/api/v1/areas/{scheme}": {"get": _read(catalog, "listAreas", "A scheme's codes and names, by code", _json(
            _ref("SchemeAreas"), "A page of areas; `next` is null on the last."), (_SCHEME, *page))},
        "/api/v1/areas/{scheme}/{code}": {"get": _read(catalog, "showArea", "One named area with its polygons",
                                                       _json(_ref("NamedArea"), "The area."), (_SCHEME, _CODE))},
        "/api/v1/admin/areas/{scheme}": {
            "put": importing,
            "delete": _admin(catalog, "removeAreas", "Remove an imported scheme from every node (deployment admins)",
                             {"200": _json({"type": "object", "properties": {
                                 "scheme": {"type": "string"}, "removed": {"type": "integer"}}}, "Removed.")},
                             (_SCHEME,)),
        },
    }


def areas_schemas() -> Json:
    count = {"type": "integer", "minimum": 0}
    source = {"enum": ["built-in", "imported"]}
    ring = {"type": "array", "items": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
            "description": "[lat, lon] points, closed."}
    return {
        "Schemes": {"type": "object", "properties": {
            "schemes": {"type": "array", "items": {"type": "object", "properties": {
                "scheme": {"type": "string"}, "areas": count, "source": source}}},
            "attribution": {"type": "object", "additionalProperties": {"type": "string"}}}},
        "SchemeAreas": {"type": "object", "properties": {
            "scheme": {"type": "string"}, "source": source, "count": count, "next": {"type": ["string", "null"]},
            "areas": {"type": "array", "items": {"type": "object", "properties": {
                "code": {"type": "string"}, "name": {"type": "string"}, "polygons": count, "points": count}}}}},
        "NamedArea": {"type": "object", "properties": {
            "scheme": {"type": "string"}, "code": {"type": "string"}, "name": {"type": "string"},
            "polygons": {"type": "array", "items": ring}, "points": count, "source": source}},
        "AreasImported": {"type": "object", "properties": {
            "scheme": {"type": "string"}, "source": {"const": "imported"}, "areas": count, "removed": count,
            "points": count}},
    }

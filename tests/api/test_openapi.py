"""The OpenAPI document: valid 3.1, the route table exactly, the whole problem catalog."""

from __future__ import annotations

import json
import re
from typing import Any

from openapi_spec_validator import validate
from starlette.routing import Route, WebSocketRoute

from tocsin import errors, policy
from tocsin.api import problems
from tocsin.api.openapi import document, problem_catalog
from tocsin.api.routes import ROUTES
from tocsin.cap.parse import parse_xml
from tocsin.cap.render import to_json
from tocsin.errors import Problem
from tocsin.pipeline import accept

from tests.datafiles import ROOT
from tests.samples import alert_xml

BASE = "http://127.0.0.1:8080"


def _declared_problems() -> set[Problem]:
    return {v for v in vars(errors).values() if isinstance(v, Problem)}


def test_the_catalog_is_declared_in_errors_only() -> None:
    # Modules that raise or answer with problems import them; none declares its own.
    for module in (policy, accept, problems):
        own = [name for name, v in vars(module).items() if isinstance(v, Problem) and v is not getattr(errors, name, None)]
        assert not own, (module.__name__, own)


def _methods(route: Route | WebSocketRoute) -> set[str]:
    if isinstance(route, WebSocketRoute):
        return {"get"}  # the upgrade request
    return {m.lower() for m in route.methods or ()} - {"head"}


def test_document_is_valid_openapi_3_1() -> None:
    spec = document(BASE)
    validate(spec)
    assert spec["openapi"].startswith("3.1")
    assert spec["servers"] == [{"url": BASE}]
    json.dumps(spec)


def test_every_route_and_method_is_documented_and_nothing_else() -> None:
    paths = document(BASE)["paths"]
    routes = {route.path: _methods(route) for route in ROUTES}
    assert set(paths) == set(routes)
    for path, methods in routes.items():
        assert set(paths[path]) == methods, path


def test_path_parameters_match_the_routes() -> None:
    paths = document(BASE)["paths"]
    for route in ROUTES:
        expected = set(re.findall(r"{(\w+)}", route.path))
        for operation in paths[route.path].values():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == expected, route.path


def test_every_catalog_code_is_listed_once() -> None:
    spec = document(BASE)
    listed = [entry["code"] for entry in spec["x-problem-codes"]]
    assert len(listed) == len(set(listed))
    declared = _declared_problems()
    assert set(listed) == {p.code for p in declared}
    assert set(spec["components"]["schemas"]["ProblemCode"]["enum"]) == set(listed)
    by_code = {entry["code"]: entry for entry in spec["x-problem-codes"]}
    for problem in declared:
        assert (by_code[problem.code]["status"], by_code[problem.code]["title"]) == (problem.status, problem.title)


def test_no_two_problems_share_a_code() -> None:
    declared = _declared_problems()
    assert len({p.code for p in declared}) == len(declared)
    assert len(problem_catalog()) == len(declared)


def test_codes_named_in_responses_exist_and_match_their_status() -> None:
    spec = document(BASE)
    status = {entry["code"]: entry["status"] for entry in spec["x-problem-codes"]}
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            for code, response in operation["responses"].items():
                for problem in response.get("x-problem-codes", []):
                    assert status[problem] == int(code), (path, code, problem)


def test_post_alert_documents_its_media_types_and_refusals() -> None:
    post = document(BASE)["paths"]["/api/v1/alerts"]["post"]
    assert {"application/cap+xml", "application/xml", "application/json"} <= set(post["requestBody"]["content"])
    assert {"200", "201", "401", "403", "409", "413", "415", "422", "503"} <= set(post["responses"])
    assert "Retry-After" in post["responses"]["503"]["headers"]


def _check(instance: Any, name: str, spec: dict[str, Any]) -> None:
    """Validate `instance` against a component schema; its #/components refs resolve in `spec`."""
    from jsonschema import Draft202012Validator

    schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    Draft202012Validator(schema).validate(instance)


def test_json_form_of_a_sample_alert_matches_the_cap_schema() -> None:
    spec = document(BASE)
    _check(to_json(parse_xml(alert_xml())), "CapAlert", spec)
    refs = "sender,FR-1,2026-01-01T00:00:00+00:00"
    _check(to_json(parse_xml(alert_xml(msg_type="Update", references=refs))), "CapAlert", spec)


def catalog_table() -> str:
    """The problem table of docs/api.md, as generated from the catalog."""
    rows = ["| code | status | meaning |", "| --- | --- | --- |"]
    for problem in problem_catalog():
        title = re.sub(r"(<[^>]+>)", r"`\1`", problem.title)
        rows.append(f"| `{problem.code}` | {problem.status} | {title} |")
    return "\n".join(rows)


def test_api_docs_list_the_catalog_exactly() -> None:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    start = text.index("<!-- problem-catalog:")
    start = text.index("\n", start) + 1
    end = text.index("<!-- /problem-catalog -->")
    assert text[start:end].strip() == catalog_table(), "regenerate: python -m tests.api.test_openapi"


def test_operations_docs_list_every_setting() -> None:
    from dataclasses import fields

    from tocsin.settings import Settings

    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    missing = [f.name for f in fields(Settings) if f"`TOCSIN_{f.name.upper()}`" not in text]
    assert not missing, f"document these settings in docs/operations.md: {missing}"


if __name__ == "__main__":
    print(catalog_table())

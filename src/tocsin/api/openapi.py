"""The OpenAPI 3.1 document of the HTTP API, as built (kept beside the routes)."""

from __future__ import annotations

from typing import Any


def document(base_url: str) -> dict[str, Any]:
    return {"openapi": "3.1.0", "info": {"title": "tocsin", "version": "1"}, "servers": [{"url": base_url}], "paths": {}}

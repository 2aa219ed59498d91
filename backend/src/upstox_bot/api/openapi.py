"""The OpenAPI document, with every error the API can answer described in the one error shape.

FastAPI documents its own validation body (HTTPValidationError) for 422; this API answers
ErrorBody instead, and a few statuses come from middleware that FastAPI does not know about:
413 and 408 (body limits) on every operation that takes a body, 401 and 429 (authentication)
on every operation that needs a key.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
_JSON = {"application/json": {"schema": ERROR_REF}}
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": _JSON, **extra}


TOO_LARGE = _error("The body is larger than API_MAX_BODY_BYTES.")
TIMEOUT = _error("The body did not arrive within API_BODY_TIMEOUT_SECONDS.")
INVALID = _error("An invalid request; `errors` names each field.")
UNAUTHENTICATED = _error("No API key, an unknown one or a revoked one.")
THROTTLED = _error(
    "Too many failed authentications from this client.",
    headers={
        "Retry-After": {
            "description": "Seconds until the client may try again.",
            "schema": {"type": "integer"},
        }
    },
)
UNAVAILABLE = _error("The key store could not be read; try again.")


def document_errors(schema: dict[str, Any], needs_key: Callable[[str], bool]) -> dict[str, Any]:
    """Describe every error status of every operation as ErrorBody (in place)."""
    for path, item in schema.get("paths", {}).items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            if operation.get("parameters") or operation.get("requestBody"):
                responses["422"] = INVALID
            if operation.get("requestBody"):
                responses.setdefault("413", TOO_LARGE)
                responses.setdefault("408", TIMEOUT)
            if needs_key(path):
                responses.setdefault("401", UNAUTHENTICATED)
                responses.setdefault("429", THROTTLED)
                responses.setdefault("503", UNAVAILABLE)
            for status, response in responses.items():
                if status.startswith(("4", "5")) and "content" not in response:
                    response["content"] = _JSON
    components = schema.get("components", {}).get("schemas", {})
    for name in FASTAPI_VALIDATION:
        components.pop(name, None)
    return schema


def allowed_methods(app: FastAPI, path: str) -> list[str] | None:
    """Every method the API documents for `path` (None when no documented path matches).

    Starlette answers 405 with the methods of the first route whose path matched, but one path
    may be served by several routes (GET and POST /backtests): the Allow header must list all.
    """
    table: list[tuple[re.Pattern[str], list[str]]] | None = getattr(
        app.state, "allowed_methods", None
    )
    if table is None:
        # Concrete paths first, as OpenAPI matches them: /signals/test before /signals/{id}.
        templates = sorted(app.openapi().get("paths", {}).items(), key=lambda t: t[0].count("{"))
        table = []
        for template, item in templates:
            parts = re.split(r"\{[^/{}]+\}", template)
            pattern = re.compile("[^/]+".join(re.escape(part) for part in parts))
            table.append((pattern, sorted(m.upper() for m in item if m in METHODS)))
        app.state.allowed_methods = table
    for pattern, methods in table:
        if pattern.fullmatch(path):
            return methods
    return None


def install_openapi(app: FastAPI, needs_key: Callable[[str], bool]) -> None:
    """Serve the OpenAPI document with `document_errors` applied (built once)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = document_errors(schema, needs_key)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

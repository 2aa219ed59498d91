"""Shapes shared by every router: errors and pages."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")

# Text that is stored: no NUL character (PostgreSQL cannot store one). Request bodies take
# booleans and numbers as JSON has them (strict): "true" or 0 is not a boolean.
NO_NUL = r"^[^\x00]*$"


class FieldError(BaseModel):
    """One field at fault in an invalid request."""

    loc: list[str | int] = Field(
        description='Where: "body", "query", "path" or "header", then the field, e.g. '
        '["body", "changes", "MAX_OPEN_POSITIONS"].'
    )
    msg: str = Field(description="What is wrong with it.")
    type: str = Field(description="Machine-readable kind, e.g. missing, json_invalid.")


class ErrorBody(BaseModel):
    """Every error the API returns."""

    error: str = Field(description="Machine-readable code, e.g. not_found, invalid_request.")
    detail: str = Field(description="What went wrong, for a person.")
    errors: list[FieldError] | None = Field(
        None, description="For invalid_request (422): each field at fault."
    )


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody, "description": "No API key, an unknown one or a revoked one."},
    403: {"model": ErrorBody, "description": "The key's scope does not allow this."},
    422: {"model": ErrorBody, "description": "An invalid request; `errors` names each field."},
}

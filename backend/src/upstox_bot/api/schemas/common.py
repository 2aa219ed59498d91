"""Shapes shared by every router: errors and pages."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")


class ErrorBody(BaseModel):
    """Every error the API returns (except FastAPI's own 422 validation errors)."""

    error: str = Field(description="Machine-readable code, e.g. not_found, conflict.")
    detail: str = Field(description="What went wrong, for a person.")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody, "description": "No API key, an unknown one or a revoked one."},
    403: {"model": ErrorBody, "description": "The key's scope does not allow this."},
}

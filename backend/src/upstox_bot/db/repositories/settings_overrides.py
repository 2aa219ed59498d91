"""Settings changed at runtime (they win over the environment until removed)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from upstox_bot.db.base import jsonable
from upstox_bot.db.models import SettingsOverrideRow
from upstox_bot.db.repositories._writes import execute_count, upsert


@dataclass(frozen=True, slots=True, kw_only=True)
class SettingOverride:
    """One overridden setting: its name (the environment variable), JSON value and author."""

    key: str
    value: Any
    updated_at: datetime
    updated_by: str


class SettingsOverrideRepository:
    """Reads and writes the settings overrides."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def get_all(self) -> dict[str, Any]:
        """Every override as {key: value}."""
        return {override.key: override.value for override in self.find()}

    def find(self) -> list[SettingOverride]:
        """Every override with its author and time, by key."""
        rows = self._session.scalars(
            select(SettingsOverrideRow)
            .order_by(SettingsOverrideRow.key)
            .execution_options(populate_existing=True)
        )
        return [
            SettingOverride(
                key=row.key, value=row.value, updated_at=row.updated_at, updated_by=row.updated_by
            )
            for row in rows
        ]

    def set(self, key: str, value: object, *, updated_by: str, at: datetime) -> None:
        """Set (or replace) the override of `key`; the value is stored as plain JSON."""
        upsert(
            self._session,
            SettingsOverrideRow,
            {"key": key, "value": jsonable(value), "updated_at": at, "updated_by": updated_by},
            conflict=["key"],
            update=["value", "updated_at", "updated_by"],
        )

    def delete(self, key: str) -> bool:
        """Remove the override of `key`; returns whether there was one."""
        stmt = delete(SettingsOverrideRow).where(SettingsOverrideRow.key == key)
        return execute_count(self._session, stmt) > 0

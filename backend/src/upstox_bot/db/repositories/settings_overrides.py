"""Settings changed at runtime: the overrides table, and the settings a bot starts with.

Overrides (settings_overrides) win over the environment. `effective_settings` merges them; the
harness that starts the bot builds it with `settings_with_overrides`, so that a change made
through the API survives a restart. A stored override that no longer validates, or a strategy
and parameters that no longer build, is skipped, never allowed to stop the start: the bot
starts with the rest, and the skip is logged, audited ("setting.override_skipped") and alerted.
Which settings may change, and how a change applies (live or at the next start), is declared
here too; the API's checks of a change are `api/settings_changes.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from upstox_bot.config import Settings
from upstox_bot.db.base import jsonable
from upstox_bot.db.models import SettingsOverrideRow
from upstox_bot.db.repositories._writes import execute_count, upsert
from upstox_bot.db.repositories.audit import AuditRepository
from upstox_bot.domain import AuditRecord
from upstox_bot.signals import registry

log = logging.getLogger(__name__)

LIVE_RISK = frozenset(
    {
        "RISK_PER_TRADE",
        "POSITION_SIZE_PERCENT",
        "MAX_OPEN_POSITIONS",
        "DAILY_LOSS_LIMIT",
        "MAX_ORDERS_PER_MINUTE",
        "MIN_ORDER_INTERVAL_SECONDS",
        "ENTRY_START_TIME",
        "ENTRY_END_TIME",
        "ALLOW_SHORT",
    }
)
LIVE_EXITS = frozenset({"STOP_LOSS_PERCENT", "TAKE_PROFIT_PERCENT", "TRAILING_STOP_PERCENT"})
LIVE_ENGINE = frozenset({"SIGNAL_COOLDOWN_MINUTES", "KILL_SWITCH_SQUARE_OFF"})
LIVE_STRATEGY = frozenset({"STRATEGY", "STRATEGY_PARAMS"})
LIVE_CHARGES = frozenset({"BROKERAGE_PER_ORDER"})
LIVE = LIVE_RISK | LIVE_EXITS | LIVE_ENGINE | LIVE_STRATEGY | LIVE_CHARGES
# Changeable but read only at start-up (the engine caches them, or they size the account).
ON_RESTART = frozenset(
    {
        "ACCOUNT_SIZE",
        "SQUARE_OFF_TIME",
        "CANDLE_INTERVAL_MINUTES",
        "SLIPPAGE_BPS",
        "PAPER_TRADING",
        "LIVE_TRADING_ENABLED",
    }
)
# Storage, network, secrets and PAPER_TRADING_DAYS_REQUIRED (lowering it would skip the
# paper-trading rule) are not changeable through the API.
CHANGEABLE = LIVE | ON_RESTART


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


def strategy_problem(settings: Settings) -> str | None:
    """Why the settings' strategy does not build with its parameters, or None when it does."""
    try:
        registry.create(
            settings.STRATEGY, settings.STRATEGY_PARAMS, strategies_dir=settings.STRATEGIES_DIR
        )
    except Exception as exc:  # a trader's strategy file may raise anything while it builds
        return str(exc) or type(exc).__name__
    return None


@dataclass(frozen=True, slots=True)
class SkippedOverride:
    """A stored override left out at start-up, and why."""

    key: str
    value: Any
    reason: str


def _first_error(exc: ValidationError) -> str:
    return str(exc.errors()[0]["msg"]).removeprefix("Value error, ")


def _try(current: Settings, changes: Mapping[str, Any]) -> tuple[Settings | None, str]:
    """`current` with `changes` if it validates (and its strategy builds, when changed)."""
    try:
        candidate = Settings.model_validate({**current.model_dump(), **changes})
    except ValidationError as exc:
        return None, _first_error(exc)
    if LIVE_STRATEGY & set(changes):
        problem = strategy_problem(candidate)
        if problem is not None:
            return None, problem
    return candidate, ""


def apply_overrides(
    base: Settings, overrides: Mapping[str, Any]
) -> tuple[Settings, list[SkippedOverride]]:
    """`base` with each stored override that still validates, and those skipped.

    Each override is applied on its own (an invalid one does not take the others down);
    STRATEGY and STRATEGY_PARAMS go together, after the rest, and must build the strategy:
    when the pair does not, the strategy alone is tried with its default parameters.
    """
    skipped: list[SkippedOverride] = []
    current = base
    pair: dict[str, Any] = {}
    for key in sorted(overrides):
        value = overrides[key]
        if key not in CHANGEABLE:
            skipped.append(SkippedOverride(key, value, "cannot be changed through the API"))
        elif key in LIVE_STRATEGY:
            pair[key] = value
        else:
            candidate, reason = _try(current, {key: value})
            if candidate is None:
                skipped.append(SkippedOverride(key, value, reason))
            else:
                current = candidate
    if pair:
        candidate, reason = _try(current, pair)
        if candidate is not None:
            return candidate, skipped
        alone = (
            _try(current, {"STRATEGY": pair["STRATEGY"], "STRATEGY_PARAMS": {}})[0]
            if "STRATEGY" in pair
            else None
        )
        if alone is not None:
            params = pair.get("STRATEGY_PARAMS", current.STRATEGY_PARAMS)
            skipped.append(SkippedOverride("STRATEGY_PARAMS", params, reason))
            return alone, skipped
        skipped.extend(SkippedOverride(k, v, reason) for k, v in sorted(pair.items()))
    return current, skipped


def effective_settings(base: Settings, overrides: Mapping[str, Any]) -> Settings:
    """`base` with the stored overrides that still validate (see `apply_overrides`); the
    others are skipped and logged, never allowed to stop the start-up."""
    settings, skipped = apply_overrides(base, overrides)
    for skip in skipped:
        log.warning("settings.override_skipped", extra={"key": skip.key, "reason": skip.reason})
    return settings


def settings_with_overrides(
    session: Session, base: Settings, *, at: datetime, actor: str = "system"
) -> tuple[Settings, list[AuditRecord]]:
    """The settings a bot starts with: `base` and the stored overrides that still validate.

    Each skipped override is logged and audited ("setting.override_skipped", with the stored
    value and the reason) in `session`; the audit records are returned for the caller's
    alerts (`AlertDispatcher.on_audit`).
    """
    settings, skipped = apply_overrides(base, SettingsOverrideRepository(session).get_all())
    audit = AuditRepository(session)
    records: list[AuditRecord] = []
    for skip in skipped:
        log.warning("settings.override_skipped", extra={"key": skip.key, "reason": skip.reason})
        record = AuditRecord(
            event="setting.override_skipped",
            entity="setting",
            entity_id=skip.key,
            at=at,
            data={"value": jsonable(skip.value), "reason": skip.reason},
            actor=actor,
        )
        audit.add(record)
        records.append(record)
    return settings, records


def setting_changed(
    key: str, old: Settings, new: Settings, applied: str, *, actor: str, at: datetime
) -> AuditRecord:
    """The audit record of one changed setting (old and new value, how it applies, who)."""
    return AuditRecord(
        event="setting.changed",
        entity="setting",
        entity_id=key,
        at=at,
        data={
            "old": jsonable(getattr(old, key)),
            "new": jsonable(getattr(new, key)),
            "applied": applied,
        },
        actor=actor,
    )

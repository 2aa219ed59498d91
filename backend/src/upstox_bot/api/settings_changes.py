"""Runtime setting changes: validate against Settings, persist, audit, apply to a running bot.

Overrides (settings_overrides) win over the environment. `effective_settings` merges them; the
harness that starts the bot should build it from `effective_settings(settings, overrides)` so
that a change made through the API survives a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session

from upstox_bot.api.errors import PaperHistoryTooShort
from upstox_bot.config import Settings
from upstox_bot.db.base import jsonable
from upstox_bot.db.models import AccountMode
from upstox_bot.db.repositories.accounts import AccountRepository
from upstox_bot.db.repositories.audit import AuditRepository
from upstox_bot.db.repositories.settings_overrides import SettingsOverrideRepository
from upstox_bot.domain import AuditRecord
from upstox_bot.errors import ConfigError
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
SECRET_URLS = ("DATABASE_URL", "REDIS_URL")


def public_values(settings: Settings) -> dict[str, Any]:
    """The settings as JSON, secrets masked (SecretStr) and passwords hidden in URLs."""
    values: dict[str, Any] = settings.model_dump(mode="json")
    for key in SECRET_URLS:
        url = values.get(key)
        if url:
            try:
                values[key] = make_url(url).render_as_string(hide_password=True)
            except ArgumentError:
                values[key] = "**********"
    return values


def _invalid(key: str, message: str, value: Any) -> RequestValidationError:
    return RequestValidationError(
        [
            {
                "type": "value_error",
                "loc": ("body", "changes", key),
                "msg": message,
                "input": jsonable(value),
            }
        ]
    )


def validate_changes(current: Settings, changes: Mapping[str, Any]) -> Settings:
    """The settings with `changes` applied, validated as a whole.

    Raises:
        RequestValidationError: an unknown or unchangeable setting, an invalid value, or an
            invalid combination; the location names the setting (answered as FastAPI's 422).
    """
    for key, value in changes.items():
        if key not in Settings.model_fields:
            raise _invalid(key, f"unknown setting {key!r}", value)
        if key not in CHANGEABLE:
            raise _invalid(key, f"{key} cannot be changed through the API", value)
    try:
        new = Settings.model_validate({**current.model_dump(), **changes})
    except ValidationError as exc:
        err = exc.errors()[0]
        named = [str(part) for part in err["loc"] if str(part) in changes]
        key = named[0] if named else next(iter(changes))
        message = str(err["msg"]).removeprefix("Value error, ")
        raise _invalid(key, message, changes.get(key)) from None
    if LIVE_STRATEGY & set(changes):
        try:
            registry.create(new.STRATEGY, new.STRATEGY_PARAMS)
        except ConfigError as exc:
            key = "STRATEGY_PARAMS" if "STRATEGY_PARAMS" in changes else "STRATEGY"
            raise _invalid(key, str(exc), changes[key]) from None
    return new


def effective_settings(base: Settings, overrides: Mapping[str, Any]) -> Settings:
    """`base` with the stored overrides applied; an override that no longer validates is
    skipped (logged), never allowed to stop the start-up."""
    usable = {k: v for k, v in overrides.items() if k in CHANGEABLE}
    try:
        return Settings.model_validate({**base.model_dump(), **usable})
    except ValidationError:
        log.warning("settings.overrides_invalid", extra={"keys": sorted(usable)})
        return base


def wants_live_trading(old: Settings, new: Settings) -> bool:
    """Whether the change switches live trading on (either switch)."""
    return (old.PAPER_TRADING and not new.PAPER_TRADING) or (
        new.LIVE_TRADING_ENABLED and not old.LIVE_TRADING_ENABLED
    )


def paper_days(session: Session, account: str) -> int:
    """Trading days of paper history of the account (snapshots since its paper start)."""
    return AccountRepository(session).paper_days(account)


def check_live_trading(
    session: Session, settings: Settings, *, force: bool, reason: str | None
) -> int:
    """Refuse live trading before the paper-trading period, unless forced with a reason.

    Returns:
        The days of paper history.

    Raises:
        PaperHistoryTooShort: too few paper days and not forced.
        RequestValidationError: forced without a reason.
    """
    days = paper_days(session, settings.ACCOUNT_NAME)
    required = settings.PAPER_TRADING_DAYS_REQUIRED
    if days >= required:
        return days
    if not force:
        raise PaperHistoryTooShort(
            f"live trading needs {required} days of paper trading; the account has {days}. "
            "Send force=true with a reason to switch anyway (audited)."
        )
    if not reason or not reason.strip():
        raise RequestValidationError(
            [
                {
                    "type": "missing",
                    "loc": ("body", "reason"),
                    "msg": "a reason is required to force live trading",
                    "input": None,
                }
            ]
        )
    return days


def changed_keys(old: Settings, new: Settings, keys: Iterable[str]) -> list[str]:
    """The keys among `keys` whose value differs between `old` and `new`."""
    return [k for k in keys if getattr(old, k) != getattr(new, k)]


def persist(
    session: Session,
    *,
    old: Settings,
    new: Settings,
    keys: Iterable[str],
    applied: Mapping[str, str],
    actor: str,
    at: datetime,
    forced: dict[str, Any] | None,
    audit_changes: bool = True,
) -> None:
    """Store the overrides, keep the account's switches in step, and audit each change
    (unless `audit_changes` is off: a running kernel audits them when it applies them)."""
    overrides = SettingsOverrideRepository(session)
    audit = AuditRepository(session)
    accounts = AccountRepository(session)
    account = new.ACCOUNT_NAME
    for key in keys:
        value = getattr(new, key)
        overrides.set(key, value, updated_by=actor, at=at)
        if audit_changes:
            audit.add(setting_changed(key, old, new, applied[key], actor=actor, at=at))
    if accounts.get_or_none(account) is not None:
        if old.LIVE_TRADING_ENABLED != new.LIVE_TRADING_ENABLED:
            accounts.set_live_trading(account, enabled=new.LIVE_TRADING_ENABLED, at=at)
        if old.PAPER_TRADING != new.PAPER_TRADING:
            mode = AccountMode.PAPER if new.PAPER_TRADING else AccountMode.LIVE
            accounts.set_mode(account, mode=mode, at=at)
    if forced is not None:
        audit.add(
            AuditRecord(
                event="live_trading.forced",
                entity="account",
                entity_id=account,
                at=at,
                data=forced,
                actor=actor,
            )
        )


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

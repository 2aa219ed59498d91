"""Runtime setting changes: validate against Settings, persist, audit, apply to a running bot.

Overrides (settings_overrides) win over the environment. `effective_settings` merges them; the
harness that starts the bot builds it with `settings_with_overrides`, so that a change made
through the API survives a restart. A stored override that no longer validates, or a strategy
and parameters that no longer build, is skipped, never allowed to stop the start: the bot
starts with the rest, and the skip is logged, audited ("setting.override_skipped") and alerted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session

from upstox_bot.api.errors import PaperHistoryTooShort
from upstox_bot.api.queries import CLOCK_TIME
from upstox_bot.config import Settings, credential_names
from upstox_bot.db.base import jsonable
from upstox_bot.db.models import AccountMode
from upstox_bot.db.repositories.accounts import AccountRepository
from upstox_bot.db.repositories.audit import AuditRepository
from upstox_bot.db.repositories.settings_overrides import SettingsOverrideRepository
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
SECRET_URLS = ("DATABASE_URL", "REDIS_URL")
MASK = "***"


def _hide_password(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return MASK


def public_values(settings: Settings) -> dict[str, Any]:
    """The settings as JSON with no credential in them: each credential (config.py
    `credential_names`) is "***" when set, null when not; URLs lose their passwords."""
    values: dict[str, Any] = settings.model_dump(mode="json")
    for key in credential_names():
        values[key] = MASK if values.get(key) else None
    for key in SECRET_URLS:
        url = values.get(key)
        if url:
            values[key] = _hide_password(url)
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


@cache
def changeable_schema() -> dict[str, Any]:
    """The JSON schema of each setting PATCH /settings accepts, from Settings (times of day
    as HH:MM[:SS] in IST: JSON Schema's "time" format would ask for an offset)."""
    properties = Settings.model_json_schema()["properties"]
    out: dict[str, Any] = {}
    for key in sorted(CHANGEABLE):
        schema = dict(properties[key])
        if schema.get("format") == "time":
            del schema["format"]
            schema["pattern"] = CLOCK_TIME
        out[key] = schema
    return out


_JSON_TYPES: dict[type, tuple[str, ...]] = {
    bool: ("boolean",),
    int: ("integer", "number"),
    float: ("number",),
    str: ("string",),
    dict: ("object",),
    list: ("array",),
    type(None): ("null",),
}


def _json_type_error(schema: Mapping[str, Any], value: Any) -> str | None:
    # The setting's JSON type, as documented: JSON has no "2" for 2 nor 0 for false.
    allowed = {schema["type"]} if "type" in schema else set()
    allowed |= {option.get("type") for option in schema.get("anyOf", ())}
    allowed.discard(None)
    if not allowed or set(_JSON_TYPES.get(type(value), ())) & allowed:
        return None
    return f"must be a JSON {' or '.join(sorted(allowed))}"


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
        wrong_type = _json_type_error(changeable_schema()[key], value)
        if wrong_type is not None:
            raise _invalid(key, wrong_type, value)
    try:
        new = Settings.model_validate({**current.model_dump(), **changes})
    except ValidationError as exc:
        err = exc.errors()[0]
        named = [str(part) for part in err["loc"] if str(part) in changes]
        key = named[0] if named else next(iter(changes))
        message = str(err["msg"]).removeprefix("Value error, ")
        raise _invalid(key, message, changes.get(key)) from None
    if LIVE_STRATEGY & set(changes):
        problem = strategy_problem(new)
        if problem is not None:
            key = "STRATEGY_PARAMS" if "STRATEGY_PARAMS" in changes else "STRATEGY"
            raise _invalid(key, problem, changes[key])
    return new


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

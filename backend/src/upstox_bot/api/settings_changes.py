"""Runtime setting changes through the API: validate against Settings, persist and audit them.

What may change and how the stored overrides apply at a start are beside their repository
(`db/repositories/settings_overrides.py`); a running bot applies a change through its control
port.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
from upstox_bot.db.repositories.settings_overrides import (
    CHANGEABLE,
    LIVE_STRATEGY,
    SettingsOverrideRepository,
    setting_changed,
    strategy_problem,
)
from upstox_bot.domain import AuditRecord

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

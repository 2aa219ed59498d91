"""Models of the control endpoints: settings, strategies, risk, kill switch, commands, audit."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from upstox_bot.api.schemas.common import NO_NUL
from upstox_bot.domain import Direction, RiskRule


class OverrideRead(BaseModel):
    key: str
    value: Any
    updated_at: datetime
    updated_by: str


class SettingsRead(BaseModel):
    values: dict[str, Any] = Field(description="Effective settings; secrets are never shown.")
    overrides: list[OverrideRead] = Field(description="Settings changed at runtime.")
    changeable: list[str] = Field(description="Settings PATCH /settings accepts.")
    live: list[str] = Field(description="Of those, the ones applied to a running bot at once.")


def _changeable_settings(schema: dict[str, Any]) -> None:
    # Imported here: settings_changes imports the API, whose routers import these schemas.
    from upstox_bot.api.settings_changes import changeable_schema

    schema["properties"] = changeable_schema()
    schema["additionalProperties"] = False


class SettingsPatch(BaseModel):
    changes: dict[str, Any] = Field(
        min_length=1,
        description='New values by setting name, e.g. {"MAX_OPEN_POSITIONS": 2}; the settings '
        "and their types are listed here (GET /settings shows the current values).",
        json_schema_extra=_changeable_settings,
    )
    force: bool = Field(
        False,
        strict=True,
        description="Switch live trading on before the paper-trading period is over.",
    )
    reason: str | None = Field(
        None,
        max_length=500,
        pattern=NO_NUL,
        description="Why; required with force, recorded in the audit log.",
    )


class SettingChangeRead(BaseModel):
    key: str
    old: Any
    new: Any
    applied: Literal["live", "restart", "stored"] = Field(
        description="live: the running bot uses it now; restart: on the next start; "
        "stored: no bot runs here, it applies when one starts."
    )


class SettingsPatchRead(BaseModel):
    changes: list[SettingChangeRead]
    forced: bool


class ParamRead(BaseModel):
    name: str
    type: str
    default: int | float | bool
    value: int | float | bool
    minimum: float | None
    maximum: float | None
    description: str


class StrategyRead(BaseModel):
    name: str
    description: str
    active: bool = Field(description="The strategy the bot trades (the STRATEGY setting).")
    enabled: bool = Field(description="Same as active: one strategy trades at a time.")
    startup_candles: int
    parameters: list[ParamRead]


class StrategyParamsUpdate(BaseModel):
    params: dict[str, Any] = Field(description="Parameter values; omitted ones take defaults.")


class KillSwitchUpdate(BaseModel):
    active: bool = Field(strict=True)
    reason: str = Field(min_length=1, max_length=500, pattern=NO_NUL)


class KillSwitchRead(BaseModel):
    active: bool
    reason: str | None
    changed_at: datetime | None
    changed_by: str | None
    applied_to_running_bot: bool
    positions_closing: int = Field(description="Open positions whose exit is queued.")


class RiskStatusRead(BaseModel):
    source: Literal["engine", "database"]
    at: datetime
    kill_switch: bool
    kill_switch_reason: str | None
    open_positions: int
    max_open_positions: int
    day_pnl: Decimal
    daily_loss_limit: Decimal
    loss_limit_headroom: Decimal
    loss_limit_hit: bool
    orders_last_minute: int
    max_orders_per_minute: int
    min_order_interval_seconds: int
    seconds_until_next_order: float = Field(description="0 when an order may go now.")
    entry_window: str = Field(description="IST, e.g. 09:20-14:45.")
    allow_short: bool
    entries_paused: str | None = Field(
        None,
        description="Why new entries wait now (the Upstox token, Upstox refusing the account's "
        "orders); null when they do not.",
    )


class AuditRead(BaseModel):
    at: datetime
    event: str
    entity: str
    entity_id: str
    actor: str
    data: dict[str, Any]


class UpstoxAuthRead(BaseModel):
    market: str
    api_key_configured: bool
    access_token_present: bool
    paper_trading: bool


class ApiKeyRead(BaseModel):
    id: int
    name: str
    prefix: str
    scope: str
    created_at: datetime
    last_used_at: datetime | None


class AuthStatusRead(BaseModel):
    upstox: UpstoxAuthRead
    api_key: ApiKeyRead


class ManualTradeCreate(BaseModel):
    instrument_key: str = Field(min_length=1, max_length=64, pattern=NO_NUL)
    direction: Direction = Direction.LONG
    reason: str = Field("manual entry", min_length=1, max_length=200, pattern=NO_NUL)


class ManualTradeRead(BaseModel):
    accepted: bool
    client_order_id: str
    instrument_key: str
    direction: Direction
    quantity: int
    price: Decimal = Field(description="Last price the decision was made on.")
    stop: Decimal
    target: Decimal
    rule: RiskRule | None = None


class OrderModify(BaseModel):
    """A change to a working order; give at least one of price, quantity and trigger_price."""

    price: Decimal | None = Field(
        None,
        gt=0,
        max_digits=12,
        decimal_places=2,
        description="New limit price in rupees, on the instrument's tick (a MARKET order "
        "becomes a LIMIT at it).",
    )
    quantity: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="New total quantity in units: an entry's can only be reduced, in whole "
        "lots, above what already filled; an exit's cannot change.",
    )
    trigger_price: Decimal | None = Field(
        None,
        gt=0,
        max_digits=12,
        decimal_places=2,
        description="New trigger price in rupees (stop orders only).",
    )
    reason: str = Field("manual modify", min_length=1, max_length=200)

    @model_validator(mode="after")
    def _something(self) -> OrderModify:
        if self.price is None and self.quantity is None and self.trigger_price is None:
            raise ValueError("give a price, a quantity or a trigger_price")
        return self


class CommandRead(BaseModel):
    status: str = Field(description="What was done, e.g. exit_queued, cancelled.")
    detail: str


class AccountDayRead(BaseModel):
    trading_date: date
    capital: Decimal
    realised_pnl: Decimal
    unrealised_pnl: Decimal
    day_pnl: Decimal
    charges: Decimal
    open_positions: int
    trades: int
    orders: int
    daily_loss_limit: Decimal
    loss_limit_hit: bool
    kill_switch: bool


class PnlDayRead(BaseModel):
    trading_date: date
    trades: int
    gross_pnl: Decimal
    charges: Decimal
    net_pnl: Decimal


class PnlRead(BaseModel):
    start_date: date | None
    end_date: date | None
    trades: int
    wins: int
    losses: int
    win_rate: float | None = Field(description="Winning trades / trades (0-1).")
    gross_pnl: Decimal
    charges: Decimal
    net_pnl: Decimal
    best_trade: Decimal | None
    worst_trade: Decimal | None
    by_day: list[PnlDayRead]


class DayPnlRead(BaseModel):
    trading_date: date
    net_pnl: Decimal = Field(description="The day's realised P&L after charges.")


class StatsRead(BaseModel):
    """Performance over a span of trading dates; money in rupees."""

    start_date: date | None
    end_date: date | None
    trading_days: int = Field(description="Days with a daily snapshot (GET /account/days).")
    winning_days: int
    losing_days: int
    trades: int = Field(description="Closed trades (GET /trades).")
    wins: int
    losses: int
    win_rate: float | None = Field(description="Winning trades / trades (0-1).")
    gross_pnl: Decimal
    charges: Decimal
    net_pnl: Decimal = Field(description="Of the closed trades, after charges.")
    average_win: Decimal | None
    average_loss: Decimal | None
    profit_factor: float | None = Field(description="Net P&L of the winners / of the losers.")
    best_trade: Decimal | None
    worst_trade: Decimal | None
    best_day: DayPnlRead | None
    worst_day: DayPnlRead | None
    days_net_pnl: Decimal = Field(
        description="Sum of the days' realised P&L after charges (GET /account/days)."
    )
    max_drawdown: Decimal = Field(description="Largest fall of end-of-day capital from a peak.")
    max_drawdown_pct: float | None = Field(description="That fall, percent of the peak.")


class PeriodStatsRead(StatsRead):
    label: str = Field(description="2026-11-25 (day), 2026-W48 (week), 2026-11, 2026.")


class AccountStatsRead(StatsRead):
    period: str = Field(description="How `periods` are grouped: day, week, month or year.")
    periods: list[PeriodStatsRead]


class CheckRead(BaseModel):
    ok: bool
    detail: str


class ReadyRead(BaseModel):
    ready: bool
    checks: dict[str, CheckRead]


class RootRead(BaseModel):
    name: str
    version: str
    docs: str
    health: str
    stream: str

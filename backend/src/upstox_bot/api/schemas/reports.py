"""Response models of the day's reports: the equity curve and the performance per strategy."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field


class EquityPointRead(BaseModel):
    at: datetime = Field(description="Market time of the point (the end of a minute).")
    equity: Decimal = Field(description="Capital at the open plus the day's P&L at that time.")
    realised_pnl: Decimal = Field(description="Closed trades so far, net of charges.")
    unrealised_pnl: Decimal = Field(description="Open positions at the minute's close.")


class EquityCurveRead(BaseModel):
    """One trading date's equity, minute by minute, from the stored trades, positions and
    candles; its last point is the account's figure (GET /account) at `as_of`."""

    trading_date: date
    capital: Decimal = Field(description="Capital at the start of the trading date.")
    as_of: datetime | None = Field(description="Market time of the last point.")
    day_pnl: Decimal = Field(description="The account's day P&L at `as_of`.")
    source: Literal["engine", "database"] = Field(
        description="Where the last point comes from: the running engine or the stored "
        "daily snapshot."
    )
    points: list[EquityPointRead]


class StrategyPerformanceRead(BaseModel):
    strategy: str
    trades: int
    wins: int
    losses: int
    win_rate: float | None = Field(description="Winning trades / trades (0-1).")
    gross_pnl: Decimal
    charges: Decimal
    net_pnl: Decimal
    best_trade: Decimal | None
    worst_trade: Decimal | None


class StrategyPerformanceList(BaseModel):
    start_date: date | None
    end_date: date | None
    strategies: list[StrategyPerformanceRead] = Field(description="Best net P&L first.")

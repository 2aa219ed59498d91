"""Request and response models of /backtests: money in rupees as exact decimals, times aware."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from upstox_bot.api.schemas.common import NO_NUL
from upstox_bot.backtest.models import (
    BacktestRequest,
    BacktestResult,
    BacktestTrade,
    OpenPosition,
    Summary,
    price_rupees,
)
from upstox_bot.db.models_backtest import BacktestStatus
from upstox_bot.db.repositories.backtests import BacktestRecord
from upstox_bot.domain import paise_to_rupees


class BacktestCreate(BaseModel):
    """A backtest to run: the options of `upstox-bot backtest`. Unset options take the
    configured settings; 0 disables an exit."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(
        min_length=1,
        max_length=4096,
        pattern=NO_NUL,
        description="Server-side path of a CSV, a folder of CSVs or a candle cache folder, "
        "inside DATA_DIR or BACKTEST_DATA_DIRS; relative paths are relative to DATA_DIR.",
    )
    strategy: str = Field(
        min_length=1, max_length=64, pattern=NO_NUL, description="A strategy name."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Strategy parameters.")
    symbols: list[Annotated[str, Field(max_length=64, pattern=NO_NUL)]] = Field(
        default_factory=list, max_length=1000, description="Only these symbols; [] = all."
    )
    start: date | None = Field(None, description="First IST date, inclusive.")
    end: date | None = Field(None, description="Last IST date, inclusive.")
    timeframe: str | None = Field(
        None,
        max_length=16,
        pattern=NO_NUL,
        description="1m, 5m, 15m, 1h, 1d...; unset = the data's bars.",
    )
    quantity: int | None = Field(
        None, ge=1, strict=True, description="Fixed shares per entry instead of risk-based sizing."
    )
    capital_rupees: Decimal | None = Field(None, gt=0, allow_inf_nan=False)
    charges: Literal["upstox", "none"] = "upstox"
    stop_loss_pct: Decimal | None = Field(None, ge=0, lt=100, allow_inf_nan=False)
    take_profit_pct: Decimal | None = Field(None, ge=0, lt=100, allow_inf_nan=False)
    trailing_stop_pct: Decimal | None = Field(None, ge=0, lt=100, allow_inf_nan=False)
    slippage_bps: Decimal | None = Field(None, ge=0, le=500, allow_inf_nan=False)

    @model_validator(mode="after")
    def _dates_in_order(self) -> BacktestCreate:
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValueError("start is after end")
        return self

    def to_request(self, data: str | None = None) -> BacktestRequest:
        """The core request (with `data` replaced by the checked path, if given)."""
        return BacktestRequest(
            data=data if data is not None else self.data,
            strategy=self.strategy,
            params=dict(self.params),
            symbols=tuple(self.symbols),
            start=self.start,
            end=self.end,
            timeframe=self.timeframe,
            quantity=self.quantity,
            capital_rupees=self.capital_rupees,
            charges=self.charges,
            stop_loss_pct=self.stop_loss_pct,
            take_profit_pct=self.take_profit_pct,
            trailing_stop_pct=self.trailing_stop_pct,
            slippage_bps=self.slippage_bps,
        )


class BacktestSubmitted(BaseModel):
    id: str
    status: BacktestStatus


class BacktestSummaryRead(BaseModel):
    """The headline figures (docs/backtesting.md defines each); None: undefined for the run."""

    start_capital: Decimal
    final_equity: Decimal
    net_pnl: Decimal = Field(description="Closed trades, after charges.")
    gross_pnl: Decimal
    charges: Decimal
    return_pct: float
    cagr_pct: float | None
    sharpe: float | None
    sortino: float | None
    max_drawdown_pct: float
    win_rate_pct: float | None
    profit_factor: float | None
    exposure_pct: float
    trade_count: int
    wins: int
    losses: int
    sessions: int

    @classmethod
    def of(cls, s: Summary) -> BacktestSummaryRead:
        return cls(
            start_capital=paise_to_rupees(s.start_capital_paise),
            final_equity=paise_to_rupees(s.final_equity_paise),
            net_pnl=paise_to_rupees(s.net_pnl_paise),
            gross_pnl=paise_to_rupees(s.gross_pnl_paise),
            charges=paise_to_rupees(s.charges_paise),
            return_pct=s.return_pct,
            cagr_pct=s.cagr_pct,
            sharpe=s.sharpe,
            sortino=s.sortino,
            max_drawdown_pct=s.max_drawdown_pct,
            win_rate_pct=s.win_rate_pct,
            profit_factor=s.profit_factor,
            exposure_pct=s.exposure_pct,
            trade_count=s.trade_count,
            wins=s.wins,
            losses=s.losses,
            sessions=s.sessions,
        )


class BacktestTradeRead(BaseModel):
    symbol: str
    instrument_key: str
    side: str
    quantity: int
    entry_time: datetime
    entry_price: Decimal
    exit_time: datetime
    exit_price: Decimal
    gross_pnl: Decimal
    charges: Decimal
    pnl: Decimal = Field(description="Net of charges.")
    exit_reason: str

    @classmethod
    def of(cls, t: BacktestTrade) -> BacktestTradeRead:
        return cls(
            symbol=t.symbol,
            instrument_key=t.instrument_key,
            side=t.side,
            quantity=t.quantity,
            entry_time=t.entry_time,
            entry_price=price_rupees(t.entry_price_paise),
            exit_time=t.exit_time,
            exit_price=price_rupees(t.exit_price_paise),
            gross_pnl=paise_to_rupees(t.gross_pnl_paise),
            charges=paise_to_rupees(t.charges_paise),
            pnl=paise_to_rupees(t.pnl_paise),
            exit_reason=t.exit_reason,
        )


class BacktestOpenPositionRead(BaseModel):
    symbol: str
    instrument_key: str
    side: str
    quantity: int
    entry_time: datetime
    entry_price: Decimal
    last_price: Decimal
    unrealised_pnl: Decimal

    @classmethod
    def of(cls, p: OpenPosition) -> BacktestOpenPositionRead:
        return cls(
            symbol=p.symbol,
            instrument_key=p.instrument_key,
            side=p.side,
            quantity=p.quantity,
            entry_time=p.entry_time,
            entry_price=price_rupees(p.entry_price_paise),
            last_price=price_rupees(p.last_price_paise),
            unrealised_pnl=paise_to_rupees(p.unrealised_pnl_paise),
        )


class BacktestListItem(BaseModel):
    """A backtest in a list: its state, what it ran, and the summary once done."""

    id: str
    status: BacktestStatus
    strategy: str
    params: dict[str, Any] = Field(description="The strategy parameters it ran with.")
    data: str
    symbols: list[str] = Field(description="The symbols asked for; [] = all in the data.")
    start: date | None
    end: date | None
    source: Literal["api", "cli"] = Field(
        description="Submitted through the API (or the dashboard), or run by `upstox-bot backtest`."
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    summary: BacktestSummaryRead | None

    @classmethod
    def of(cls, r: BacktestRecord, summary: dict[str, Any] | None) -> BacktestListItem:
        request = r.request
        start, end = request.get("start"), request.get("end")
        params = request.get("params")
        return cls(
            id=r.id,
            status=r.status,
            strategy=str(request.get("strategy", "")),
            params=dict(params) if isinstance(params, dict) else {},
            data=str(request.get("data", "")),
            symbols=[str(x) for x in request.get("symbols") or ()],
            start=date.fromisoformat(start) if isinstance(start, str) and start else None,
            end=date.fromisoformat(end) if isinstance(end, str) and end else None,
            source="cli" if request.get("source") == "cli" else "api",
            created_at=r.created_at,
            started_at=r.started_at,
            finished_at=r.finished_at,
            error=r.error,
            summary=BacktestSummaryRead.of(Summary.from_dict(summary)) if summary else None,
        )


class BacktestRead(BaseModel):
    """One backtest: the request, its state, and once done the summary, trades and positions
    still open at the end of the data."""

    id: str
    status: BacktestStatus
    request: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None = Field(description="Why a failed run failed.")
    timeframe: str | None
    symbols: list[str] | None
    bars: int | None
    summary: BacktestSummaryRead | None
    trades: list[BacktestTradeRead] | None
    open_positions: list[BacktestOpenPositionRead] | None

    @classmethod
    def of(cls, r: BacktestRecord) -> BacktestRead:
        result = BacktestResult.from_dict(r.result) if r.result is not None else None
        return cls(
            id=r.id,
            status=r.status,
            request=r.request,
            created_at=r.created_at,
            started_at=r.started_at,
            finished_at=r.finished_at,
            error=r.error,
            timeframe=result.timeframe if result else None,
            symbols=list(result.symbols) if result else None,
            bars=result.bars if result else None,
            summary=BacktestSummaryRead.of(result.summary) if result else None,
            trades=[BacktestTradeRead.of(t) for t in result.trades] if result else None,
            open_positions=(
                [BacktestOpenPositionRead.of(p) for p in result.open_positions] if result else None
            ),
        )


class BacktestDataRead(BaseModel):
    """Bars a backtest may read: a CSV file or a folder of them under an allowed folder."""

    path: str = Field(description="The value to give as `data` (relative to DATA_DIR when inside).")
    kind: Literal["file", "folder"]
    files: int = Field(description="CSV files (in a folder: at its top and one level down).")

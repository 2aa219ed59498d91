"""The request and result of a backtest, as plain values that round-trip through JSON.

Money inside is integer paise; the JSON shows rupees (numbers with at most two decimals) and
ISO-8601 times with their offset. A trade's prices are paise too, as an int, or a Decimal when the
data had more decimals (split-adjusted history: 142.7083 paise is shown as 1.427083 rupees).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from upstox_bot.domain import paise_to_rupees, rupees_to_paise

CHARGES_MODELS = ("upstox", "none")


def _rupees(paise: int) -> float:
    return float(paise_to_rupees(paise))


def _paise(value: Any) -> int:
    return rupees_to_paise(Decimal(str(value)))


Price = int | Decimal  # paise; a Decimal when finer than the paisa


def price_rupees(paise: Price) -> Decimal:
    """A price in rupees: two places, or as many as a finer-than-paisa price needs."""
    if isinstance(paise, int) or paise == paise.to_integral_value():
        return paise_to_rupees(int(paise))
    return (paise / 100).normalize()


def _price(paise: Price) -> float:
    return float(price_rupees(paise))


def _price_paise(value: Any) -> Price:
    paise = Decimal(str(value)) * 100
    return int(paise) if paise == paise.to_integral_value() else paise.normalize()


def _decimal_or_none(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _str_or_none(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class BacktestRequest:
    """What to backtest. Unset options take the configured settings (risk rules, exits).

    Percent options: 0 disables that exit (see docs/backtesting.md).
    """

    data: str  # a CSV, a folder of CSVs, or a cache folder
    strategy: str
    params: Mapping[str, Any] = field(default_factory=dict)
    symbols: tuple[str, ...] = ()
    start: date | None = None  # first IST date, inclusive
    end: date | None = None  # last IST date, inclusive
    timeframe: str | None = None  # "1m", "5m", "1h", "1d"...; None: the data's interval
    quantity: int | None = None  # fixed shares per entry instead of risk-based sizing
    capital_rupees: Decimal | None = None
    charges: str = "upstox"
    stop_loss_pct: Decimal | None = None
    take_profit_pct: Decimal | None = None
    trailing_stop_pct: Decimal | None = None
    slippage_bps: Decimal | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return {
            "data": self.data,
            "strategy": self.strategy,
            "params": dict(self.params),
            "symbols": list(self.symbols),
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "timeframe": self.timeframe,
            "quantity": self.quantity,
            "capital_rupees": _str_or_none(self.capital_rupees),
            "charges": self.charges,
            "stop_loss_pct": _str_or_none(self.stop_loss_pct),
            "take_profit_pct": _str_or_none(self.take_profit_pct),
            "trailing_stop_pct": _str_or_none(self.trailing_stop_pct),
            "slippage_bps": _str_or_none(self.slippage_bps),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BacktestRequest:
        """Build from `to_dict` output (or the same keys from an API body).

        Raises:
            ValueError: a missing key or a value of the wrong shape.
        """
        try:
            start, end = data.get("start"), data.get("end")
            return cls(
                data=str(data["data"]),
                strategy=str(data["strategy"]),
                params=dict(data.get("params") or {}),
                symbols=tuple(str(s) for s in data.get("symbols") or ()),
                start=date.fromisoformat(start) if start else None,
                end=date.fromisoformat(end) if end else None,
                timeframe=data.get("timeframe"),
                quantity=None if data.get("quantity") is None else int(data["quantity"]),
                capital_rupees=_decimal_or_none(data.get("capital_rupees")),
                charges=str(data.get("charges") or "upstox"),
                stop_loss_pct=_decimal_or_none(data.get("stop_loss_pct")),
                take_profit_pct=_decimal_or_none(data.get("take_profit_pct")),
                trailing_stop_pct=_decimal_or_none(data.get("trailing_stop_pct")),
                slippage_bps=_decimal_or_none(data.get("slippage_bps")),
            )
        except KeyError as e:
            raise ValueError(f"backtest request: missing {e.args[0]!r}") from None
        except (TypeError, ArithmeticError) as e:
            raise ValueError(f"backtest request: {e}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class BacktestTrade:
    """One closed round trip (money in paise)."""

    symbol: str
    instrument_key: str
    side: str  # "long" or "short"
    quantity: int
    entry_time: datetime
    entry_price_paise: Price
    exit_time: datetime
    exit_price_paise: Price
    gross_pnl_paise: int
    charges_paise: int
    pnl_paise: int  # net of charges
    exit_reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "instrument_key": self.instrument_key,
            "side": self.side,
            "quantity": self.quantity,
            "entry_time": self.entry_time.isoformat(),
            "entry_price": _price(self.entry_price_paise),
            "exit_time": self.exit_time.isoformat(),
            "exit_price": _price(self.exit_price_paise),
            "gross_pnl": _rupees(self.gross_pnl_paise),
            "charges": _rupees(self.charges_paise),
            "pnl": _rupees(self.pnl_paise),
            "exit_reason": self.exit_reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BacktestTrade:
        return cls(
            symbol=str(data["symbol"]),
            instrument_key=str(data["instrument_key"]),
            side=str(data["side"]),
            quantity=int(data["quantity"]),
            entry_time=datetime.fromisoformat(data["entry_time"]),
            entry_price_paise=_price_paise(data["entry_price"]),
            exit_time=datetime.fromisoformat(data["exit_time"]),
            exit_price_paise=_price_paise(data["exit_price"]),
            gross_pnl_paise=_paise(data["gross_pnl"]),
            charges_paise=_paise(data["charges"]),
            pnl_paise=_paise(data["pnl"]),
            exit_reason=str(data["exit_reason"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenPosition:
    """A position still open when the data ended, marked at the last price (paise)."""

    symbol: str
    instrument_key: str
    side: str
    quantity: int
    entry_time: datetime
    entry_price_paise: Price
    last_price_paise: Price
    unrealised_pnl_paise: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "instrument_key": self.instrument_key,
            "side": self.side,
            "quantity": self.quantity,
            "entry_time": self.entry_time.isoformat(),
            "entry_price": _price(self.entry_price_paise),
            "last_price": _price(self.last_price_paise),
            "unrealised_pnl": _rupees(self.unrealised_pnl_paise),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OpenPosition:
        return cls(
            symbol=str(data["symbol"]),
            instrument_key=str(data["instrument_key"]),
            side=str(data["side"]),
            quantity=int(data["quantity"]),
            entry_time=datetime.fromisoformat(data["entry_time"]),
            entry_price_paise=_price_paise(data["entry_price"]),
            last_price_paise=_price_paise(data["last_price"]),
            unrealised_pnl_paise=_paise(data["unrealised_pnl"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class EquityPoint:
    """Equity (capital + realised net + unrealised) at the close of one session, in paise."""

    day: date
    equity_paise: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    """The headline figures; docs/backtesting.md defines each. None: not defined for the run."""

    start_capital_paise: int
    final_equity_paise: int
    net_pnl_paise: int  # closed trades, after charges
    gross_pnl_paise: int
    charges_paise: int
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "start_capital": _rupees(self.start_capital_paise),
            "final_equity": _rupees(self.final_equity_paise),
            "net_pnl": _rupees(self.net_pnl_paise),
            "gross_pnl": _rupees(self.gross_pnl_paise),
            "charges": _rupees(self.charges_paise),
            "return_pct": self.return_pct,
            "cagr_pct": self.cagr_pct,
            "sharpe": self.sharpe,
            "sortino": self.sortino,
            "max_drawdown_pct": self.max_drawdown_pct,
            "win_rate_pct": self.win_rate_pct,
            "profit_factor": self.profit_factor,
            "exposure_pct": self.exposure_pct,
            "trade_count": self.trade_count,
            "wins": self.wins,
            "losses": self.losses,
            "sessions": self.sessions,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Summary:
        def number(name: str) -> float | None:
            value = data.get(name)
            return None if value is None else float(value)

        return cls(
            start_capital_paise=_paise(data["start_capital"]),
            final_equity_paise=_paise(data["final_equity"]),
            net_pnl_paise=_paise(data["net_pnl"]),
            gross_pnl_paise=_paise(data["gross_pnl"]),
            charges_paise=_paise(data["charges"]),
            return_pct=float(data["return_pct"]),
            cagr_pct=number("cagr_pct"),
            sharpe=number("sharpe"),
            sortino=number("sortino"),
            max_drawdown_pct=float(data["max_drawdown_pct"]),
            win_rate_pct=number("win_rate_pct"),
            profit_factor=number("profit_factor"),
            exposure_pct=float(data["exposure_pct"]),
            trade_count=int(data["trade_count"]),
            wins=int(data["wins"]),
            losses=int(data["losses"]),
            sessions=int(data["sessions"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class BacktestResult:
    """Everything a backtest produced."""

    strategy: str
    params: Mapping[str, Any]
    timeframe: str
    symbols: tuple[str, ...]
    bars: int
    skipped_bars: int
    trades: tuple[BacktestTrade, ...]
    open_positions: tuple[OpenPosition, ...]
    summary: Summary
    equity: tuple[EquityPoint, ...]
    unfilled_orders: int = 0  # orders placed on the last bar, with no later trade to fill at
    request: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (`trades`, `open_positions`, `summary`, `equity`, ...)."""
        return {
            "strategy": self.strategy,
            "params": dict(self.params),
            "timeframe": self.timeframe,
            "symbols": list(self.symbols),
            "bars": self.bars,
            "skipped_bars": self.skipped_bars,
            "unfilled_orders": self.unfilled_orders,
            "summary": self.summary.to_dict(),
            "trades": [t.to_dict() for t in self.trades],
            "open_positions": [p.to_dict() for p in self.open_positions],
            "equity": [
                {"date": p.day.isoformat(), "equity": _rupees(p.equity_paise)} for p in self.equity
            ],
            "request": dict(self.request) if self.request is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BacktestResult:
        """Rebuild a result from `to_dict` output (e.g. a stored result)."""
        return cls(
            strategy=str(data["strategy"]),
            params=dict(data.get("params") or {}),
            timeframe=str(data["timeframe"]),
            symbols=tuple(data.get("symbols") or ()),
            bars=int(data["bars"]),
            skipped_bars=int(data.get("skipped_bars") or 0),
            unfilled_orders=int(data.get("unfilled_orders") or 0),
            summary=Summary.from_dict(data["summary"]),
            trades=tuple(BacktestTrade.from_dict(t) for t in data.get("trades") or ()),
            open_positions=tuple(
                OpenPosition.from_dict(p) for p in data.get("open_positions") or ()
            ),
            equity=tuple(
                EquityPoint(day=date.fromisoformat(p["date"]), equity_paise=_paise(p["equity"]))
                for p in data.get("equity") or ()
            ),
            request=data.get("request"),
        )

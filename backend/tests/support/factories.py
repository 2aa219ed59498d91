"""Builders for domain objects and a wired engine, with keyword overrides."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from upstox_bot.domain import (
    Candle,
    ClientOrderId,
    Direction,
    Instrument,
    Position,
    Tick,
    datetime_to_ms,
)
from upstox_bot.risk.checks import RiskManager
from upstox_bot.risk.kill_switch import KillSwitch
from upstox_bot.risk.limits import RiskLimits
from upstox_bot.risk.rate_limit import OrderRateLimiter
from upstox_bot.signals.base import Strategy
from upstox_bot.trading.engine import Engine, EngineConfig
from upstox_bot.trading.exits import ExitManager, ExitRules
from upstox_bot.trading.journal import MemoryJournal

IST = ZoneInfo("Asia/Kolkata")
TRADING_DATE = date(2026, 11, 25)  # a Wednesday, an NSE trading day


def ist(hour: int, minute: int = 0, second: int = 0, day: date = TRADING_DATE) -> datetime:
    return datetime.combine(day, time(hour, minute, second), tzinfo=IST)


def ist_ms(hour: int, minute: int = 0, second: int = 0, day: date = TRADING_DATE) -> int:
    return datetime_to_ms(ist(hour, minute, second, day))


class ManualClock:
    """A clock moved by hand (tests)."""

    def __init__(self, start: datetime) -> None:
        self._ms = datetime_to_ms(start)

    def now_ms(self) -> int:
        return self._ms

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._ms / 1000, tz=UTC)

    def set_ms(self, ms: int) -> None:
        if ms < self._ms:
            raise ValueError("clock moved backwards")
        self._ms = ms


def make_instrument(**overrides: Any) -> Instrument:
    values: dict[str, Any] = {
        "instrument_key": "NSE_EQ|INE062A01020",
        "trading_symbol": "SBIN",
        "name": "State Bank of India",
        "isin": "INE062A01020",
        "lot_size": 1,
    }
    values.update(overrides)
    return Instrument(**values)


def make_tick(**overrides: Any) -> Tick:
    values: dict[str, Any] = {
        "instrument_key": "NSE_EQ|INE062A01020",
        "ts_ms": ist_ms(10, 0),
        "ltp_paise": 94_050,
        "ltq": 10,
        "volume": 0,
    }
    values.update(overrides)
    return Tick(**values)


def make_candle(**overrides: Any) -> Candle:
    values: dict[str, Any] = {
        "instrument_key": "NSE_EQ|INE062A01020",
        "interval_s": 60,
        "start_ms": ist_ms(10, 0),
        "open_paise": 10_000,
        "high_paise": 10_000,
        "low_paise": 10_000,
        "close_paise": 10_000,
        "volume": 100,
    }
    values.update(overrides)
    return Candle(**values)


def make_limits(**overrides: Any) -> RiskLimits:
    values: dict[str, Any] = {
        "capital_paise": 10_000_000,  # Rs 1,00,000
        "risk_per_trade_pct": Decimal(5),
        "position_size_pct": Decimal(30),
        "max_open_positions": 3,
        "daily_loss_limit_pct": Decimal(2),
        "max_orders_per_minute": 10,
        "min_order_interval_s": 30,
        "entry_start": time(9, 20),
        "entry_end": time(14, 45),
        "allow_short": False,
    }
    values.update(overrides)
    return RiskLimits(**values)


def make_exit_rules(**overrides: Any) -> ExitRules:
    values: dict[str, Any] = {
        "stop_loss_pct": Decimal(5),
        "take_profit_pct": Decimal(4),
        "trailing_stop_pct": Decimal(2),
        "square_off": time(15, 15),
    }
    values.update(overrides)
    return ExitRules(**values)


def make_position(**overrides: Any) -> Position:
    values: dict[str, Any] = {
        "instrument_key": "NSE_EQ|INE062A01020",
        "direction": Direction.LONG,
        "quantity": 10,
        "lots": 10,
        "entry_price_paise": 10_000,
        "entry_at": ist(10, 0),
        "entry_order_id": ClientOrderId("ub-test"),
        "stop_paise": 9_500,
        "target_paise": 10_400,
        "best_price_paise": 10_000,
        "last_price_paise": 10_000,
    }
    values.update(overrides)
    return Position(**values)


def flat_charges(**_: Any) -> int:
    return 0


def make_engine(
    strategy: Strategy,
    *,
    instruments: list[Instrument] | None = None,
    clock: ManualClock | None = None,
    limits: RiskLimits | None = None,
    exit_rules: ExitRules | None = None,
    journal: MemoryJournal | None = None,
    charges: Any = flat_charges,
    **config: Any,
) -> tuple[Engine, MemoryJournal, ManualClock]:
    clock = clock or ManualClock(ist(9, 15))
    journal = journal if journal is not None else MemoryJournal()
    limits = limits or make_limits()
    instruments = instruments or [make_instrument()]
    engine = Engine(
        config=EngineConfig(account="test", capital_paise=limits.capital_paise, **config),
        instruments={i.instrument_key: i for i in instruments},
        strategy=strategy,
        risk=RiskManager(
            limits,
            OrderRateLimiter(limits.max_orders_per_minute, limits.min_order_interval_s),
            KillSwitch(),
        ),
        exits=ExitManager(exit_rules or make_exit_rules()),
        journal=journal,
        charges=charges,
        clock=clock,
    )
    return engine, journal, clock


class ScriptedStrategy(Strategy):
    """Says what the script says for a candle start time (epoch ms) and nothing else."""

    name = "scripted"

    def __init__(self, script: dict[int, list[Any]] | None = None) -> None:
        super().__init__()
        self.script = script or {}
        self.seen: list[int] = []

    @property
    def startup_candles(self) -> int:
        return 1

    def evaluate(self, candles: Any, *, position: Direction | None, now: datetime) -> list[Any]:
        from upstox_bot.signals.base import StrategySignal

        start = int(candles.start_ms[-1])
        self.seen.append(start)
        return [
            StrategySignal(
                type=t,
                strength=0.5,
                reason=f"scripted {t.value}",
                indicators={"close": float(candles.close[-1])},
            )
            for t in self.script.get(start, [])
        ]

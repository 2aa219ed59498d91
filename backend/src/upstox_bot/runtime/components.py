"""Turn settings into the core's frozen per-component configs (the composition root's half)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from upstox_bot.config import Settings
from upstox_bot.domain import Direction, InstrumentKind, Side, rupees_to_paise
from upstox_bot.risk.limits import RiskLimits
from upstox_bot.signals import registry
from upstox_bot.signals.base import Strategy
from upstox_bot.trading.charges import BrokeragePlan, ChargeSegment, round_trip_charges
from upstox_bot.trading.desk import OrderDesk
from upstox_bot.trading.engine import Engine
from upstox_bot.trading.execution import OrderExecutor
from upstox_bot.trading.exits import ExitRules
from upstox_bot.trading.lifecycle import LifecycleConfig, OrderLifecycle
from upstox_bot.trading.order_gate import OrderGate
from upstox_bot.trading.ports import ChargesModel


def risk_limits(settings: Settings, capital_paise: int | None = None) -> RiskLimits:
    """The hard limits; capital defaults to ACCOUNT_SIZE."""
    return RiskLimits(
        capital_paise=capital_paise
        if capital_paise is not None
        else rupees_to_paise(settings.ACCOUNT_SIZE),
        risk_per_trade_pct=settings.RISK_PER_TRADE,
        position_size_pct=settings.POSITION_SIZE_PERCENT,
        max_open_positions=settings.MAX_OPEN_POSITIONS,
        daily_loss_limit_pct=settings.DAILY_LOSS_LIMIT,
        max_orders_per_minute=settings.MAX_ORDERS_PER_MINUTE,
        min_order_interval_s=settings.MIN_ORDER_INTERVAL_SECONDS,
        entry_start=settings.ENTRY_START_TIME,
        entry_end=settings.ENTRY_END_TIME,
        allow_short=settings.ALLOW_SHORT,
    )


def exit_rules(settings: Settings) -> ExitRules:
    return ExitRules(
        stop_loss_pct=settings.STOP_LOSS_PERCENT,
        take_profit_pct=settings.TAKE_PROFIT_PERCENT,
        trailing_stop_pct=settings.TRAILING_STOP_PERCENT,
        square_off=settings.SQUARE_OFF_TIME,
    )


def lifecycle_config(settings: Settings) -> LifecycleConfig:
    """Deadlines and re-pricing of working orders (trading/lifecycle.py)."""
    return LifecycleConfig(
        entry_timeout_ms=settings.ENTRY_ORDER_TIMEOUT_SECONDS * 1000,
        exit_timeout_ms=settings.EXIT_ORDER_TIMEOUT_SECONDS * 1000,
        exit_reprice_bps=int(settings.EXIT_REPRICE_PERCENT * 100),
        exit_reprice_attempts=settings.EXIT_REPRICE_ATTEMPTS,
        escalated_every_ms=max(60, 6 * settings.EXIT_ORDER_TIMEOUT_SECONDS) * 1000,
    )


def order_desk(
    settings: Settings,
    *,
    engine: Engine,
    executor: OrderExecutor,
    tick_size_paise: Callable[[str], int],
) -> OrderDesk:
    """The order desk of an engine and its executor: deadlines, re-pricing, the order gate."""
    return OrderDesk(
        engine=engine,
        executor=executor,
        journal=engine.journal,
        lifecycle=OrderLifecycle(lifecycle_config(settings)),
        gate=OrderGate(retry_every_ms=settings.ORDER_BLOCK_RETRY_SECONDS * 1000),
        tick_size_paise=tick_size_paise,
    )


def strategy(settings: Settings) -> Strategy:
    return registry.create(
        settings.STRATEGY, settings.STRATEGY_PARAMS, strategies_dir=settings.STRATEGIES_DIR
    )


class IntradayCharges:
    """Charges of an intraday round trip on one contract note (Upstox standard plan), in the
    segment of what is traded: the stock (equity intraday), its future or its option."""

    def __init__(
        self, plan: BrokeragePlan, segment: ChargeSegment = ChargeSegment.EQUITY_INTRADAY
    ) -> None:
        self.plan = plan
        self.segment = segment

    def __call__(
        self,
        *,
        direction: Direction,
        entry_price_paise: int,
        exit_price_paise: int,
        quantity: int,
        trading_date: date,
    ) -> int:
        breakdown = round_trip_charges(
            segment=self.segment,
            trade_date=trading_date,
            entry_side=Side.BUY if direction is Direction.LONG else Side.SELL,
            entry_price_paise=entry_price_paise,
            exit_price_paise=exit_price_paise,
            quantity=quantity,
            plan=self.plan,
        )
        return breakdown.total_paise


SEGMENT_OF_TRADE = {
    InstrumentKind.EQUITY: ChargeSegment.EQUITY_INTRADAY,
    InstrumentKind.FUTURE: ChargeSegment.FUTURES,
    InstrumentKind.OPTION: ChargeSegment.OPTIONS,
}


def charges_model(settings: Settings) -> ChargesModel:
    return IntradayCharges(
        BrokeragePlan(flat_per_order=settings.BROKERAGE_PER_ORDER),
        SEGMENT_OF_TRADE[settings.TRADE_INSTRUMENT],
    )

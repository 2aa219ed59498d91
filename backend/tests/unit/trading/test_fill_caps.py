"""The position cap and the risk per trade hold at the fill, not only at the price an entry was
decided at: a whole simulated session of the default strategy, with the default slippage."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

from upstox_bot.clock import NseCalendar, SimClock
from upstox_bot.config import Settings
from upstox_bot.domain import OrderPurpose, datetime_to_ms
from upstox_bot.feed.sim import SimulatedMarket, load_universe
from upstox_bot.risk.checks import RiskManager
from upstox_bot.risk.kill_switch import KillSwitch
from upstox_bot.risk.rate_limit import OrderRateLimiter
from upstox_bot.runtime import components
from upstox_bot.trading.brokers.paper import PaperBroker
from upstox_bot.trading.engine import Engine, EngineConfig
from upstox_bot.trading.execution import OrderExecutor
from upstox_bot.trading.exits import ExitManager
from upstox_bot.trading.journal import MemoryJournal

DAY = date(2026, 11, 25)


def test_every_entry_of_a_session_fills_within_the_cap_and_the_risk_budget() -> None:
    settings = Settings(_env_file=None, SIGNAL_COOLDOWN_MINUTES=1)
    calendar = NseCalendar.default()
    universe = load_universe(limit=40)
    instruments = {i.instrument_key: replace(i, lot_size=1) for i, _ in universe}
    prices = {i.instrument_key: p for i, p in universe}
    clock = SimClock(calendar.session_open(DAY))
    journal = MemoryJournal()
    limits = components.risk_limits(settings)
    assert limits.slippage_bps == Decimal(5)  # SLIPPAGE_BPS's default
    engine = Engine(
        config=EngineConfig(account="test", capital_paise=limits.capital_paise),
        instruments=instruments,
        strategy=components.strategy(settings),
        risk=RiskManager(
            limits,
            OrderRateLimiter(limits.max_orders_per_minute, limits.min_order_interval_s),
            KillSwitch(),
        ),
        exits=ExitManager(components.exit_rules(settings)),
        journal=journal,
        charges=components.charges_model(settings),
        clock=clock,
    )
    broker = PaperBroker(
        clock=clock,
        slippage_bps=settings.SLIPPAGE_BPS,
        tick_size_paise=lambda key: instruments[key].tick_size_paise,
    )
    executor = OrderExecutor(engine=engine, broker=broker, journal=journal)
    market = SimulatedMarket(
        list(instruments.values()), prices, seed=11, trading_date=DAY, calendar=calendar
    )
    for tick in market.iter_ticks():
        clock.advance_to(tick.ts_ms)
        executor.apply_fills(broker.on_tick(tick))
        executor.execute(engine.on_tick(tick))
    close_ms = datetime_to_ms(calendar.session_close(DAY))
    clock.advance_to(close_ms)
    executor.execute(engine.on_timer(close_ms))

    entries = [o for o in journal.orders.values() if o.purpose is OrderPurpose.ENTRY]
    filled = [o for o in entries if o.filled_quantity]
    assert len(filled) >= 10, "the session should trade"
    cap = limits.max_position_value_paise  # 30 % of Rs 1,00,000 = 30,00,000 paise
    budget = limits.risk_per_trade_paise  # 5 % of Rs 1,00,000 = 5,00,000 paise
    for order in filled:
        fill = order.average_price_paise
        assert fill is not None
        value = fill * order.filled_quantity
        assert value <= cap, f"{order.instrument_key}: {order.filled_quantity} x {fill} > cap"
        # the stop is 5 % from the fill: the loss there is 5 % of the value, within the budget
        assert value * 5 // 100 <= budget
    # the cap binds: some entry uses most of it (not sized far below to pass trivially)
    assert max(o.average_price_paise * o.filled_quantity for o in filled) > cap * 99 // 100  # type: ignore[operator]

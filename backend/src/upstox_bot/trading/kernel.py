"""The per-tick step of every harness, written once: move the market clock, fill the paper
broker's working orders at the trade, let the engine act on it, execute what it decides.

The embedded loop, the distributed account holder, the replay and the backtest (where it steps)
all drive an account through `TradingCore`; they differ only in where the trades come from and
where the records go (runtime/kernel.py builds the rest of an account around it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from upstox_bot.clock import MarketClock
from upstox_bot.domain import Fill, OrderIntent, Tick
from upstox_bot.trading.engine import Engine
from upstox_bot.trading.execution import OrderExecutor


class PaperFills(Protocol):
    """A broker that fills its working orders on the market's trades (the paper brokers)."""

    @property
    def working_count(self) -> int: ...

    def on_trade(self, instrument_key: str, price_paise: int) -> Sequence[Fill]: ...


class TradingCore:
    """Steps one account's engine through the market, in market time.

    Args:
        engine: the account's engine.
        executor: places what the engine decides (durable before each send).
        clock: the engine's market clock, moved forward here.
        paper: the broker that fills on trades, or None when fills come from elsewhere (a live
            broker's order updates, `executor.apply_fills`).
    """

    def __init__(
        self,
        *,
        engine: Engine,
        executor: OrderExecutor,
        clock: MarketClock,
        paper: PaperFills | None,
    ) -> None:
        self.engine = engine
        self.executor = executor
        self.clock = clock
        self.paper = paper

    def step_tick(self, tick: Tick) -> list[OrderIntent]:
        """Apply one tick; returns the intents it caused (already executed)."""
        return self.step_trade(
            tick.instrument_key, tick.ts_ms, tick.ltp_paise, tick.ltq, tick.volume
        )

    def step_trade(
        self, key: str, ts_ms: int, price_paise: int, ltq: int, volume: int = 0
    ) -> list[OrderIntent]:
        """`step_tick` for a trade given by its fields (a backtest has no Ticks)."""
        self.clock.advance_to(ts_ms)
        paper = self.paper
        if paper is not None and paper.working_count:
            self.executor.apply_fills(paper.on_trade(key, price_paise))
        intents = self.engine.on_trade(key, ts_ms, price_paise, ltq, volume)
        if intents:
            self.executor.execute(intents)
        return intents

    def fire_timer(self, now_ms: int) -> list[OrderIntent]:
        """Move market time to `now_ms` without a trade (minute ends, the open, the close,
        square-off, queued exits); returns the intents it caused (already executed)."""
        self.clock.advance_to(now_ms)
        intents = self.engine.on_timer(self.clock.now_ms())
        if intents:
            self.executor.execute(intents)
        return intents

    def execute(self, intents: list[OrderIntent]) -> None:
        """Execute intents the engine returned outside a step (a command)."""
        if intents:
            self.executor.execute(intents)

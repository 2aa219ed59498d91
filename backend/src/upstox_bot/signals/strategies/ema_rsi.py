"""EMA crossover filtered by RSI."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np

from upstox_bot.domain import Direction, SignalType
from upstox_bot.errors import ConfigError
from upstox_bot.signals import indicators
from upstox_bot.signals.base import Param, Strategy, StrategySignal
from upstox_bot.signals.series import CandleSeries


class EmaRsiStrategy(Strategy):
    """Long when EMA(fast) crosses above EMA(slow) while RSI is below the overbought level;
    out when it crosses back below. Short (if the bot allows shorts) mirrors it with RSI above
    the oversold level. Strength grows with the EMA gap and the RSI's room to the extreme.
    """

    name = "ema_rsi"
    description = "EMA(fast)/EMA(slow) crossover, entries filtered by RSI"
    parameters = (
        Param(
            name="fast",
            kind=int,
            default=9,
            minimum=2,
            maximum=200,
            description="fast EMA period (candles)",
        ),
        Param(
            name="slow",
            kind=int,
            default=21,
            minimum=3,
            maximum=500,
            description="slow EMA period (candles)",
        ),
        Param(
            name="rsi_period",
            kind=int,
            default=14,
            minimum=2,
            maximum=200,
            description="RSI period (candles)",
        ),
        Param(
            name="rsi_overbought",
            kind=float,
            default=70.0,
            minimum=50,
            maximum=100,
            description="no long entry at or above this RSI",
        ),
        Param(
            name="rsi_oversold",
            kind=float,
            default=30.0,
            minimum=0,
            maximum=50,
            description="no short entry at or below this RSI",
        ),
    )

    def validate(self) -> None:
        if self.params["fast"] >= self.params["slow"]:
            raise ConfigError("parameter fast: must be smaller than slow")

    @property
    def startup_candles(self) -> int:
        return int(max(self.params["slow"], self.params["rsi_period"])) + 2

    def evaluate(
        self, candles: CandleSeries, *, position: Direction | None, now: datetime
    ) -> Sequence[StrategySignal]:
        if len(candles) < self.startup_candles:
            return ()
        close = candles.close
        fast = indicators.ema(close, int(self.params["fast"]))
        slow = indicators.ema(close, int(self.params["slow"]))
        rsi = indicators.rsi(close, int(self.params["rsi_period"]))
        last_rsi = float(rsi[-1])
        if np.isnan(last_rsi):
            return ()
        snapshot = {
            "close": float(close[-1]),
            "ema_fast": round(float(fast[-1]), 4),
            "ema_slow": round(float(slow[-1]), 4),
            "rsi": round(last_rsi, 4),
        }
        gap = abs(float(fast[-1]) - float(slow[-1])) / float(close[-1])
        overbought = float(self.params["rsi_overbought"])
        oversold = float(self.params["rsi_oversold"])
        out: list[StrategySignal] = []
        if indicators.crossed_above(fast, slow):
            if position is Direction.SHORT:
                out.append(
                    StrategySignal(
                        type=SignalType.EXIT_SHORT,
                        strength=1.0,
                        reason="EMA fast crossed above slow",
                        indicators=snapshot,
                    )
                )
            if last_rsi < overbought:
                strength = min(
                    1.0,
                    0.5 * min(1.0, gap * 500)
                    + 0.5 * (overbought - last_rsi) / max(overbought - 50.0, 1.0),
                )
                out.append(
                    StrategySignal(
                        type=SignalType.ENTRY_LONG,
                        strength=round(max(0.0, strength), 4),
                        reason=f"EMA{self.params['fast']} crossed above EMA{self.params['slow']}, "
                        f"RSI {last_rsi:.1f} < {overbought:g}",
                        indicators=snapshot,
                    )
                )
        elif indicators.crossed_below(fast, slow):
            if position is Direction.LONG:
                out.append(
                    StrategySignal(
                        type=SignalType.EXIT_LONG,
                        strength=1.0,
                        reason="EMA fast crossed below slow",
                        indicators=snapshot,
                    )
                )
            if last_rsi > oversold:
                strength = min(
                    1.0,
                    0.5 * min(1.0, gap * 500)
                    + 0.5 * (last_rsi - oversold) / max(50.0 - oversold, 1.0),
                )
                out.append(
                    StrategySignal(
                        type=SignalType.ENTRY_SHORT,
                        strength=round(max(0.0, strength), 4),
                        reason=f"EMA{self.params['fast']} crossed below EMA{self.params['slow']}, "
                        f"RSI {last_rsi:.1f} > {oversold:g}",
                        indicators=snapshot,
                    )
                )
        return out

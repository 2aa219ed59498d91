"""The Strategy interface: parameters with types and ranges, closed candles in, signals out."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from upstox_bot.domain import Direction, SignalType, StrategySignal
from upstox_bot.errors import ConfigError
from upstox_bot.signals.series import CandleSeries

__all__ = [
    "CandleHistory",
    "Param",
    "Strategy",
    "StrategySignal",
    "reversal_signals",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Param:
    """A strategy parameter: its type, default and inclusive range."""

    name: str
    kind: type[int] | type[float] | type[bool]
    default: int | float | bool
    minimum: float | None = None
    maximum: float | None = None
    description: str = ""

    def coerce(self, value: Any) -> int | float | bool:
        """Return value as this parameter's type, or raise ConfigError naming the parameter
        (a number must be finite and inside the range)."""
        try:
            if self.kind is bool:
                if isinstance(value, str):
                    if value.lower() not in ("true", "false", "1", "0"):
                        raise ValueError(value)
                    return value.lower() in ("true", "1")
                return bool(value)
            if isinstance(value, int | float | str) and not math.isfinite(float(value)):
                raise ConfigError(
                    f"parameter {self.name}: must be a finite number, got {value!r:.40}"
                )
            if self.kind is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError(value)
                number: int | float = int(value)
            else:
                number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(
                f"parameter {self.name}: expected {self.kind.__name__}, got {value!r:.40}"
            ) from None
        if self.minimum is not None and number < self.minimum:
            raise ConfigError(f"parameter {self.name}: {number} is below {self.minimum}")
        if self.maximum is not None and number > self.maximum:
            raise ConfigError(f"parameter {self.name}: {number} is above {self.maximum}")
        return number


@dataclass(frozen=True, slots=True, kw_only=True)
class CandleHistory:
    """Every closed candle of one instrument, oldest first, as parallel int64 arrays (paise).

    What a backtest hands to `Strategy.signal_candidates`: the candles the engine's window will
    have held, one after the other.
    """

    start_ms: npt.NDArray[np.int64]
    open_paise: npt.NDArray[np.int64]
    high_paise: npt.NDArray[np.int64]
    low_paise: npt.NDArray[np.int64]
    close_paise: npt.NDArray[np.int64]
    volume: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.start_ms)


def reversal_signals(
    turn: Direction,
    *,
    position: Direction | None,
    strength: float,
    entry_reason: str,
    exit_reason: str,
    indicators: Mapping[str, float],
) -> list[StrategySignal]:
    """The signals of a turn to `turn`: close a position held the other way, then enter.

    The built-in trend strategies share this convention: the exit comes first so that the
    engine frees the slot before it judges the entry.
    """
    out: list[StrategySignal] = []
    if position is not None and position is not turn:
        exit_type = SignalType.EXIT_LONG if position is Direction.LONG else SignalType.EXIT_SHORT
        out.append(
            StrategySignal(type=exit_type, strength=1.0, reason=exit_reason, indicators=indicators)
        )
    entry_type = SignalType.ENTRY_LONG if turn is Direction.LONG else SignalType.ENTRY_SHORT
    out.append(
        StrategySignal(
            type=entry_type, strength=strength, reason=entry_reason, indicators=indicators
        )
    )
    return out


class Strategy(ABC):
    """Base of every strategy. Subclasses declare name, parameters and implement evaluate().

    A strategy is pure: it reads closed candles and the current position direction and returns
    signals. It never places orders, reads the clock or keeps state that a restart would lose
    (its indicators are recomputed from the candle window).
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    parameters: ClassVar[tuple[Param, ...]] = ()

    def __init__(self, **params: Any) -> None:
        known = {p.name: p for p in self.parameters}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ConfigError(f"strategy {self.name}: unknown parameter(s) {', '.join(unknown)}")
        self.params: dict[str, int | float | bool] = {
            name: p.coerce(params[name]) if name in params else p.default
            for name, p in known.items()
        }
        self.validate()

    def validate(self) -> None:  # noqa: B027 - an optional hook, not an abstract method
        """Check relations between parameters; raise ConfigError when they do not hold."""

    @property
    @abstractmethod
    def startup_candles(self) -> int:
        """Closed candles needed before the strategy's signals are meaningful."""

    @abstractmethod
    def evaluate(
        self, candles: CandleSeries, *, position: Direction | None, now: datetime
    ) -> Sequence[StrategySignal]:
        """Return the signals for the candle just closed (the last one of `candles`)."""

    def may_signal(self, candles: CandleSeries) -> bool:
        """Whether `evaluate` could say anything on the candle just closed, answered cheaply
        (optional). False promises it says nothing, and the engine skips the call; True (the
        default) evaluates. A backtest that knows its candidates answers from them."""
        return True

    def signal_candidates(
        self, history: CandleHistory, *, window: int
    ) -> npt.NDArray[np.bool_] | None:
        """The candles after whose close `evaluate` may return a signal, all at once (optional).

        A backtest uses it to step the engine only where a decision can be taken. The answer
        must be a superset: True wherever `evaluate`, given the last `window` candles up to and
        including that one (whatever the position and the time), could return anything;
        False promises it returns nothing. None (the default) means the strategy has no such
        form, and the backtest evaluates every candle.
        """
        return None

    def describe(self) -> dict[str, Any]:
        """Name, description and parameters with their current values (for the API and CLI)."""
        return {
            "name": self.name,
            "description": self.description,
            "parameters": [
                {
                    "name": p.name,
                    "type": p.kind.__name__,
                    "default": p.default,
                    "value": self.params[p.name],
                    "minimum": p.minimum,
                    "maximum": p.maximum,
                    "description": p.description,
                }
                for p in self.parameters
            ],
        }

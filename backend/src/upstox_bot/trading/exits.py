"""The exit manager: stop loss, take profit that arms a trailing stop, and square-off time.

Long: stop at entry - SL%, target at entry + TP%. Touching the target does not sell: it arms a
trailing stop TRAIL% below the highest price since (the hard stop stays). Shorts mirror it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time
from decimal import ROUND_HALF_UP, Decimal

from upstox_bot.domain import Direction, ExitReason, Position, reduce_to_fields


def pct_move(price_paise: int, pct: Decimal, up: bool) -> int:
    """The price `pct` percent above (`up`) or below `price_paise`, rounded half up."""
    pct = Decimal(pct)
    factor = (100 + pct) / 100 if up else (100 - pct) / 100
    return int((Decimal(price_paise) * factor).to_integral_value(rounding=ROUND_HALF_UP))


@dataclass(frozen=True, slots=True, kw_only=True)
class ExitRules:
    stop_loss_pct: Decimal
    take_profit_pct: Decimal
    trailing_stop_pct: Decimal
    square_off: time | None  # IST; None: positions are carried (no intraday square-off)

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)

    def levels(self, direction: Direction, entry_paise: int) -> tuple[int, int]:
        """(stop, target) in paise for an entry price."""
        long = direction is Direction.LONG
        stop = pct_move(entry_paise, self.stop_loss_pct, up=not long)
        target = pct_move(entry_paise, self.take_profit_pct, up=long)
        return stop, target

    def trail_from(self, direction: Direction, best_paise: int) -> int:
        return pct_move(best_paise, self.trailing_stop_pct, up=direction is Direction.SHORT)


class ExitManager:
    """Moves a position's stop state on each price and says when it must be closed."""

    def __init__(self, rules: ExitRules) -> None:
        self.rules = rules

    def on_price(self, position: Position, price_paise: int) -> tuple[ExitReason | None, bool]:
        """Apply a last price to a position.

        Returns:
            (the exit reason if the position must be closed now, whether its stop state changed
            in a way that must be persisted: trailing armed or high-water mark moved).
        """
        position.last_price_paise = price_paise
        changed = False
        if position.direction is Direction.LONG:
            if position.trailing_active:
                if price_paise > position.best_price_paise:
                    position.best_price_paise = price_paise
                    position.trail_stop_paise = self.rules.trail_from(Direction.LONG, price_paise)
                    changed = True
            elif price_paise >= position.target_paise:
                position.trailing_active = True
                position.best_price_paise = price_paise
                position.trail_stop_paise = self.rules.trail_from(Direction.LONG, price_paise)
                changed = True
            if price_paise <= position.stop_paise:
                return ExitReason.STOP_LOSS, changed
            if position.trail_stop_paise is not None and price_paise <= position.trail_stop_paise:
                return ExitReason.TRAILING_STOP, changed
            return None, changed
        if position.trailing_active:
            if price_paise < position.best_price_paise:
                position.best_price_paise = price_paise
                position.trail_stop_paise = self.rules.trail_from(Direction.SHORT, price_paise)
                changed = True
        elif price_paise <= position.target_paise:
            position.trailing_active = True
            position.best_price_paise = price_paise
            position.trail_stop_paise = self.rules.trail_from(Direction.SHORT, price_paise)
            changed = True
        if price_paise >= position.stop_paise:
            return ExitReason.STOP_LOSS, changed
        if position.trail_stop_paise is not None and price_paise >= position.trail_stop_paise:
            return ExitReason.TRAILING_STOP, changed
        return None, changed

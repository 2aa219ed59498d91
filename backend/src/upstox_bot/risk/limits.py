"""The hard risk limits, as one frozen value built from settings by the composition root."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time
from decimal import ROUND_FLOOR, Decimal

from upstox_bot.domain import reduce_to_fields


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskLimits:
    capital_paise: int
    risk_per_trade_pct: Decimal  # 0-100, of capital lost if the stop is hit
    position_size_pct: Decimal  # 0-100, of capital in one position
    max_open_positions: int
    daily_loss_limit_pct: Decimal  # 0-100, realised + unrealised
    max_orders_per_minute: int
    min_order_interval_s: int
    entry_start: time  # IST
    entry_end: time  # IST
    allow_short: bool = False
    # Entries are sized for the worst fill: the price slipped by this much against the trader,
    # rounded up to the tick, plus one tick of room for the next trade (SLIPPAGE_BPS).
    slippage_bps: Decimal = Decimal(0)
    # A future blocks this percentage of its notional value as margin (FUTURES_MARGIN_PERCENT);
    # the position cap and the cash apply to that margin, the risk at the stop to the notional.
    futures_margin_pct: Decimal = Decimal(100)

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)

    def pct_of_capital_paise(self, pct: Decimal) -> int:
        """Whole paise of capital at pct percent, rounded down."""
        value = Decimal(self.capital_paise) * pct / 100
        return int(value.to_integral_value(rounding=ROUND_FLOOR))

    @property
    def daily_loss_limit_paise(self) -> int:
        return self.pct_of_capital_paise(self.daily_loss_limit_pct)

    @property
    def risk_per_trade_paise(self) -> int:
        return self.pct_of_capital_paise(self.risk_per_trade_pct)

    @property
    def max_position_value_paise(self) -> int:
        return self.pct_of_capital_paise(self.position_size_pct)

"""Position sizing: the risk at the stop, the position cap and the cash, in whole lots.

An entry is decided at the last price but fills at the next trade, slipped against the trader.
So that the caps hold at the fill, it is sized at the worst fill it may get (`worst_fill_paise`):
the price slipped by SLIPPAGE_BPS, rounded up to the tick, plus one tick of room. The stop is set
at the same percentage from the fill, so the risk per share grows with the fill in proportion.
A future is bought on margin: the position cap and the cash apply to the margin it blocks, while
the risk at the stop stays on its full exposure (quantity x price move).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

from upstox_bot.domain import RiskRule, reduce_to_fields
from upstox_bot.money import format_rupees


@dataclass(frozen=True, slots=True, kw_only=True)
class Sizing:
    lots: int
    quantity: int  # lots * lot_size
    binding_rule: RiskRule  # the limit that decided the size
    reason: str

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)


_BPS = Decimal(10_000)


def worst_fill_paise(price_paise: int, *, slippage_bps: Decimal, tick_paise: int) -> int:
    """The highest fill an entry decided at `price_paise` is sized for: the price slipped by
    `slippage_bps` against the trader, rounded up to the tick, plus one tick of room for the
    next trade (a buy fills at or below it unless the market jumps by more than a tick)."""
    tick = max(tick_paise, 1)
    if slippage_bps == slippage_bps.to_integral_value():
        # Whole basis points (the usual case): integers only, no Decimal per entry.
        scale = 10_000 + int(slippage_bps)
        return -(-price_paise * scale // (10_000 * tick)) * tick + tick
    slipped = Decimal(price_paise) * (_BPS + slippage_bps) / _BPS / tick
    return int(slipped.to_integral_value(rounding=ROUND_CEILING)) * tick + tick


def margin_paise(value_paise: int, margin_fraction: Decimal | None) -> int:
    """The cash a position of `value_paise` blocks: all of it, or its margin (rounded up)."""
    if margin_fraction is None:
        return value_paise
    return int((value_paise * margin_fraction).to_integral_value(rounding=ROUND_CEILING))


def size_position(
    *,
    price_paise: int,
    stop_paise: int,
    lot_size: int,
    risk_budget_paise: int,
    max_position_value_paise: int,
    available_paise: int,
    fill_paise: int | None = None,
    margin_fraction: Decimal | None = None,
) -> Sizing:
    """Size an entry in whole lots under three caps: risk at the stop, position value, cash.

    Args:
        price_paise: expected entry price per share (the last price).
        stop_paise: stop price per share at that price; the stop moves with the fill, so the
            risk per share at a fill F is |price - stop| x F / price (rounded up).
        lot_size: shares per lot (1 for cash equity).
        risk_budget_paise: the most the trade may lose if the stop is hit.
        max_position_value_paise: the most one position may be worth (a future: may block)
            at entry.
        available_paise: cash not tied up in open positions.
        fill_paise: the worst fill to size for (`worst_fill_paise`); None: the price itself.
        margin_fraction: a future's margin as a fraction of its value; None: the full value
            (stocks, options). The risk at the stop is always on the full exposure.

    Returns:
        The size; lots == 0 means the smallest lot breaks a cap (named by binding_rule).
    """
    if price_paise <= 0 or lot_size <= 0:
        raise ValueError("price and lot size must be positive")
    stop_distance = abs(price_paise - stop_paise)
    if stop_distance == 0:
        raise ValueError("the stop must differ from the entry price")
    fill = price_paise if fill_paise is None else max(fill_paise, price_paise)
    per_share_risk = -(-stop_distance * fill // price_paise)
    per_share_value = margin_paise(fill, margin_fraction)
    caps = (
        (RiskRule.RISK_PER_TRADE, risk_budget_paise // per_share_risk),
        (RiskRule.POSITION_SIZE, max_position_value_paise // per_share_value),
        (RiskRule.CAPITAL, max(available_paise, 0) // per_share_value),
    )
    rule, shares = min(caps, key=lambda cap: cap[1])
    lots = shares // lot_size
    quantity = lots * lot_size
    if lots == 0:
        worth = "blocking a margin of" if margin_fraction is not None else "worth"
        what = {
            RiskRule.RISK_PER_TRADE: "risk at the stop "
            f"{format_rupees(per_share_risk * lot_size)} per lot exceeds the risk budget "
            f"{format_rupees(risk_budget_paise)}",
            RiskRule.POSITION_SIZE: f"one lot {worth} {format_rupees(per_share_value * lot_size)}"
            f" at a fill of {format_rupees(fill)} exceeds the position cap "
            f"{format_rupees(max_position_value_paise)}",
            RiskRule.CAPITAL: f"one lot {worth} {format_rupees(per_share_value * lot_size)} at a "
            f"fill of {format_rupees(fill)} exceeds the available cash "
            f"{format_rupees(available_paise)}",
        }[rule]
        return Sizing(lots=0, quantity=0, binding_rule=rule, reason=what)
    return Sizing(
        lots=lots,
        quantity=quantity,
        binding_rule=rule,
        reason=f"{lots} lot(s) x {lot_size}, limited by {rule.value}",
    )

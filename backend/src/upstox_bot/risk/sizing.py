"""Position sizing: the risk at the stop, the position cap and the cash, in whole lots."""

from __future__ import annotations

from dataclasses import dataclass

from upstox_bot.domain import RiskRule, reduce_to_fields
from upstox_bot.money import format_rupees


@dataclass(frozen=True, slots=True, kw_only=True)
class Sizing:
    lots: int
    quantity: int  # lots * lot_size
    binding_rule: RiskRule  # the limit that decided the size
    reason: str

    def __init__(
        self,
        *,
        lots: int,
        quantity: int,
        binding_rule: RiskRule,
        reason: str,
    ) -> None:
        object.__setattr__(self, "lots", lots)
        object.__setattr__(self, "quantity", quantity)
        object.__setattr__(self, "binding_rule", binding_rule)
        object.__setattr__(self, "reason", reason)

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)


def size_position(
    *,
    price_paise: int,
    stop_paise: int,
    lot_size: int,
    risk_budget_paise: int,
    max_position_value_paise: int,
    available_paise: int,
) -> Sizing:
    """Size an entry in whole lots under three caps: risk at the stop, position value, cash.

    Args:
        price_paise: expected entry price per share.
        stop_paise: stop price per share; the risk per share is |price - stop|.
        lot_size: shares per lot (1 for cash equity).
        risk_budget_paise: the most the trade may lose if the stop is hit.
        max_position_value_paise: the most one position may be worth at entry.
        available_paise: cash not tied up in open positions.

    Returns:
        The size; lots == 0 means the smallest lot breaks a cap (named by binding_rule).
    """
    if price_paise <= 0 or lot_size <= 0:
        raise ValueError("price and lot size must be positive")
    per_share_risk = abs(price_paise - stop_paise)
    if per_share_risk == 0:
        raise ValueError("the stop must differ from the entry price")
    caps = (
        (RiskRule.RISK_PER_TRADE, risk_budget_paise // per_share_risk),
        (RiskRule.POSITION_SIZE, max_position_value_paise // price_paise),
        (RiskRule.CAPITAL, max(available_paise, 0) // price_paise),
    )
    rule, shares = min(caps, key=lambda cap: cap[1])
    lots = shares // lot_size
    quantity = lots * lot_size
    if lots == 0:
        what = {
            RiskRule.RISK_PER_TRADE: "risk at the stop "
            f"{format_rupees(per_share_risk * lot_size)} per lot exceeds the risk budget "
            f"{format_rupees(risk_budget_paise)}",
            RiskRule.POSITION_SIZE: f"one lot worth {format_rupees(price_paise * lot_size)} "
            f"exceeds the position cap {format_rupees(max_position_value_paise)}",
            RiskRule.CAPITAL: f"one lot worth {format_rupees(price_paise * lot_size)} exceeds "
            f"the available cash {format_rupees(available_paise)}",
        }[rule]
        return Sizing(lots=0, quantity=0, binding_rule=rule, reason=what)
    return Sizing(
        lots=lots,
        quantity=quantity,
        binding_rule=rule,
        reason=f"{lots} lot(s) x {lot_size}, limited by {rule.value}",
    )

"""Backtest options on top of the live rules: disabled exits, a fixed size, charges to pick.

Each class extends the live component and changes only what its option asks for: with every
exit enabled and no fixed quantity, the live `ExitManager.on_price` and
`RiskManager.check_entry` run unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from functools import lru_cache

from upstox_bot.domain import (
    Direction,
    ExitReason,
    InstrumentKind,
    Position,
    RiskDecision,
    RiskRule,
)
from upstox_bot.risk.checks import BookState, EntryRequest, RiskManager
from upstox_bot.risk.kill_switch import KillSwitch
from upstox_bot.risk.limits import RiskLimits
from upstox_bot.risk.rate_limit import OrderRateLimiter
from upstox_bot.risk.sizing import margin_paise
from upstox_bot.trading.charges import (
    BrokeragePlan,
    ChargeSegment,
    ExecutedOrder,
    OrderExecution,
    contract_note_charges,
)
from upstox_bot.trading.exits import ExitManager, ExitRules, pct_move
from upstox_bot.trading.ports import ChargesModel

# The charge tables start here; earlier trades are charged at these earliest known rates.
EARLIEST_RATES = date(2023, 4, 1)
_SIZING_RULES = (RiskRule.RISK_PER_TRADE, RiskRule.POSITION_SIZE, RiskRule.CAPITAL)


@dataclass(frozen=True, slots=True, kw_only=True)
class BacktestExitRules(ExitRules):
    """Exit rules where each exit can be switched off.

    A disabled stop or target has level 0 on the position (no level). `take_profit=False` also
    leaves the trailing stop unarmed (the target arms it); `trailing_stop=False` makes touching
    the target close the position (exit reason take_profit).
    """

    stop_loss: bool = True
    take_profit: bool = True
    trailing_stop: bool = True

    @property
    def all_enabled(self) -> bool:
        return self.stop_loss and self.take_profit and self.trailing_stop

    def levels(self, direction: Direction, entry_paise: int) -> tuple[int, int]:
        """(stop, target) in paise; 0 for a disabled one."""
        if not (self.stop_loss or self.take_profit):
            return 0, 0
        # Keyed by the rules' values: hashing the frozen dataclass costs more than the lookup.
        return _levels(
            self.stop_loss_pct if self.stop_loss else None,
            self.take_profit_pct if self.take_profit else None,
            direction,
            entry_paise,
        )


@lru_cache(maxsize=1 << 16)
def _levels(
    stop_pct: Decimal | None, target_pct: Decimal | None, direction: Direction, entry_paise: int
) -> tuple[int, int]:
    # Decimal arithmetic per entry and per fill adds up over a long backtest; prices repeat.
    long = direction is Direction.LONG
    stop = 0 if stop_pct is None else pct_move(entry_paise, stop_pct, up=not long)
    target = 0 if target_pct is None else pct_move(entry_paise, target_pct, up=long)
    return stop, target


class BacktestExitManager(ExitManager):
    """The live exit manager, with the exits its rules disable left out."""

    def __init__(self, rules: BacktestExitRules) -> None:
        super().__init__(rules)
        self.options = rules

    def on_price(self, position: Position, price_paise: int) -> tuple[ExitReason | None, bool]:
        """Apply a last price (see `ExitManager.on_price`), skipping disabled exits."""
        options = self.options
        if options.all_enabled:
            return super().on_price(position, price_paise)
        position.last_price_paise = price_paise
        long = position.direction is Direction.LONG
        changed = False
        if options.take_profit:
            reached = (
                price_paise >= position.target_paise
                if long
                else price_paise <= position.target_paise
            )
            if not options.trailing_stop:
                if reached:
                    return ExitReason.TAKE_PROFIT, False
            elif position.trailing_active:
                better = (
                    price_paise > position.best_price_paise
                    if long
                    else price_paise < position.best_price_paise
                )
                if better:
                    position.best_price_paise = price_paise
                    position.trail_stop_paise = options.trail_from(position.direction, price_paise)
                    changed = True
            elif reached:
                position.trailing_active = True
                position.best_price_paise = price_paise
                position.trail_stop_paise = options.trail_from(position.direction, price_paise)
                changed = True
        if options.stop_loss and (
            price_paise <= position.stop_paise if long else price_paise >= position.stop_paise
        ):
            return ExitReason.STOP_LOSS, changed
        trail = position.trail_stop_paise
        if trail is not None and (price_paise <= trail if long else price_paise >= trail):
            return ExitReason.TRAILING_STOP, changed
        return None, changed


class BacktestRiskManager(RiskManager):
    """The live risk manager; with a fixed quantity, or without a stop, it sizes differently.

    Every rule before sizing (kill switch, entry window, daily loss, positions, shorts, order
    rate) is the live one. A fixed quantity replaces the three sizing caps by one check: the
    cash must cover it. Without a stop there is no risk at the stop to size by, so the size is
    the largest that the position cap and the cash allow.
    """

    def __init__(
        self,
        limits: RiskLimits,
        rate_limiter: OrderRateLimiter,
        kill_switch: KillSwitch,
        *,
        quantity: int | None = None,
        stop_loss: bool = True,
    ) -> None:
        if quantity is not None and quantity <= 0:
            raise ValueError("quantity must be positive")
        super().__init__(limits, rate_limiter, kill_switch)
        self.quantity = quantity
        self.stop_loss = stop_loss

    def check_entry(self, req: EntryRequest, book: BookState) -> RiskDecision:
        """Approve and size an entry, or refuse it naming the first rule it breaks."""
        decision = super().check_entry(req, book)
        if self.quantity is None and self.stop_loss:
            return decision
        if not decision.approved and decision.rule not in _SIZING_RULES:
            return decision
        lot = req.lot_size
        price = req.price_paise
        # Sized at the worst fill, like the live rules (a future at its margin).
        per_share = margin_paise(self.sizing_fill_paise(price, req.tick_paise), req.margin_fraction)
        if self.quantity is not None:
            lots = self.quantity // lot
            rule = RiskRule.CAPITAL
            if lots * lot * per_share > book.available_paise:
                lots = 0
            reason = f"fixed size {self.quantity}"
        else:
            cap = self._max_position_value_paise // per_share
            cash = max(book.available_paise, 0) // per_share
            rule = RiskRule.POSITION_SIZE if cap <= cash else RiskRule.CAPITAL
            lots = min(cap, cash) // lot
            reason = f"{lots} lot(s) x {lot}, limited by {rule.value} (no stop loss)"
        if lots == 0:
            return RiskDecision(
                approved=False,
                rule=rule,
                reason=f"{reason}: one more lot than the {rule.value} allows",
                instrument_key=req.instrument_key,
                signal_id=req.signal_id,
                price_paise=price,
                stop_paise=req.stop_paise,
                target_paise=req.target_paise,
                decided_at=req.at,
            )
        return RiskDecision(
            approved=True,
            rule=None,
            reason=reason,
            instrument_key=req.instrument_key,
            signal_id=req.signal_id,
            quantity=lots * lot,
            lots=lots,
            price_paise=price,
            stop_paise=req.stop_paise,
            target_paise=req.target_paise,
            decided_at=req.at,
        )


def no_charges(
    *,
    direction: Direction,
    entry_price_paise: int,
    exit_price_paise: int,
    quantity: int,
    trading_date: date,
    kind: InstrumentKind,
    instrument_key: str,
    entry_order: OrderExecution,
    exit_order: OrderExecution,
) -> int:
    """The zero charges model (`--charges none`)."""
    return 0


class DatedCharges:
    """A charges model that charges trades before the rate tables at the earliest rates."""

    def __init__(self, model: ChargesModel) -> None:
        self.model = model

    def __call__(
        self,
        *,
        direction: Direction,
        entry_price_paise: int,
        exit_price_paise: int,
        quantity: int,
        trading_date: date,
        kind: InstrumentKind,
        instrument_key: str,
        entry_order: OrderExecution,
        exit_order: OrderExecution,
    ) -> int:
        return self.model(
            direction=direction,
            entry_price_paise=entry_price_paise,
            exit_price_paise=exit_price_paise,
            quantity=quantity,
            trading_date=max(trading_date, EARLIEST_RATES),
            kind=kind,
            instrument_key=instrument_key,
            entry_order=entry_order,
            exit_order=exit_order,
        )


class DeliveryCharges:
    """Charges of a cash delivery round trip (daily backtests carry positions overnight).

    Both orders are charged on one contract note of the exit date: the model is told only the
    exit date, which is also the rates' date. Each order is charged at its exact value.
    """

    def __init__(self, brokerage_per_order: Decimal) -> None:
        self.plan = BrokeragePlan(flat_per_order=brokerage_per_order)

    def __call__(
        self,
        *,
        direction: Direction,
        entry_price_paise: int,
        exit_price_paise: int,
        quantity: int,
        trading_date: date,
        kind: InstrumentKind,
        instrument_key: str,
        entry_order: OrderExecution,
        exit_order: OrderExecution,
    ) -> int:
        orders = [
            ExecutedOrder.of_value(o.side, o.value_paise, o.quantity)
            for o in (entry_order, exit_order)
        ]
        return contract_note_charges(
            orders, segment=ChargeSegment.EQUITY_DELIVERY, trade_date=trading_date, plan=self.plan
        ).total_paise


def _units_to_paise(units: int, scale: int) -> int:
    whole = (2 * abs(units) + scale) // (2 * scale)
    return whole if units >= 0 else -whole


class ScaledCharges:
    """A charges model for prices counted in `scale` units per paisa (exact historical prices):
    the trade is charged in paise, at its values rounded to the paisa, and the charges come
    back in the same units."""

    def __init__(self, model: ChargesModel, scale: int) -> None:
        self.model = model
        self.scale = scale

    def __call__(
        self,
        *,
        direction: Direction,
        entry_price_paise: int,
        exit_price_paise: int,
        quantity: int,
        trading_date: date,
        kind: InstrumentKind,
        instrument_key: str,
        entry_order: OrderExecution,
        exit_order: OrderExecution,
    ) -> int:
        scale = self.scale
        charged = self.model(
            direction=direction,
            entry_price_paise=_units_to_paise(entry_price_paise, scale),
            exit_price_paise=_units_to_paise(exit_price_paise, scale),
            quantity=quantity,
            trading_date=trading_date,
            kind=kind,
            instrument_key=instrument_key,
            entry_order=replace(
                entry_order, value_paise=_units_to_paise(entry_order.value_paise, scale)
            ),
            exit_order=replace(
                exit_order, value_paise=_units_to_paise(exit_order.value_paise, scale)
            ),
        )
        return charged * scale

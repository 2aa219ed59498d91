"""What to trade on a signal: the stock, its current future or its at-the-money option.

Pure functions over domain instruments and the NSE calendar. Stock F&O settle physically, so no
position is held into an expiry day: a contract stops being eligible for entries on its expiry
exit date (a configured number of sessions before expiry), when open positions in it are closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from upstox_bot.clock import NseCalendar
from upstox_bot.domain import (
    Direction,
    Instrument,
    InstrumentKind,
    OptionType,
    RiskDecision,
    SignalId,
)
from upstox_bot.risk.limits import RiskLimits
from upstox_bot.risk.sizing import size_position


@dataclass(frozen=True, slots=True, kw_only=True)
class ContractChoice:
    """The instrument to trade for a signal on an underlying, or why there is none.

    Attributes:
        instrument: the chosen instrument; None when nothing suitable exists (see reason).
        direction: the position to take on `instrument`: the signal's own for the stock and the
            future; always LONG for an option (a call is bought for a long signal, a put for a
            short one). None with no instrument.
        reason: what was chosen and why, or why nothing was.
        expiry: the contract's expiry date (None for the stock).
        exit_date: the last session a position in it may be open: the engine closes it that day
            and takes no new entry in it from then on (None for the stock).
    """

    instrument: Instrument | None
    direction: Direction | None
    reason: str
    expiry: date | None = None
    exit_date: date | None = None


def expiry_exit_date(expiry: date, sessions: int, calendar: NseCalendar) -> date:
    """The trading day `sessions` sessions before `expiry`, on which positions are closed.

    Args:
        expiry: the contract's expiry date (IST).
        sessions: how many sessions before expiry (1 = the session before the expiry day).
        calendar: the NSE calendar (holidays are skipped).

    Raises:
        ValueError: `sessions` is below 1.
    """
    if sessions < 1:
        raise ValueError("sessions must be at least 1: no position is held into its expiry day")
    day = expiry
    for _ in range(sessions):
        day = calendar.previous_trading_day(day)
    return day


def contract_expiry(contract: Instrument) -> date:
    """The expiry date of a derivative instrument.

    Raises:
        ValueError: the instrument has no (ISO) expiry date.
    """
    if contract.expiry is None:
        raise ValueError(f"{contract.instrument_key} has no expiry")
    return date.fromisoformat(contract.expiry[:10])


def select_contract(
    *,
    underlying: Instrument,
    contracts: Sequence[Instrument],
    spot_paise: int,
    direction: Direction,
    trading_date: date,
    calendar: NseCalendar,
    trade: InstrumentKind,
    option_min_days_to_expiry: int,
    expiry_exit_sessions: int,
) -> ContractChoice:
    """Choose what to trade for an entry signal on `underlying`.

    * EQUITY: the underlying itself, in the signal's direction.
    * FUTURE: the nearest-expiry future still before its expiry exit date (the current month's;
      the next month's once the current one is inside its exit window), in the signal's
      direction.
    * OPTION: in the nearest expiry with more than `option_min_days_to_expiry` calendar days left
      (and before its exit date), the call for a long signal or the put for a short one whose
      strike is nearest the spot (a tie goes to the lower strike); always bought.

    Args:
        underlying: the stock the signal is on.
        contracts: its F&O contracts (others, and contracts of other kinds, are ignored).
        spot_paise: the stock's last price.
        direction: the signal's direction.
        trading_date: today's IST session date.
        calendar: the NSE calendar.
        trade: what to trade (TRADE_INSTRUMENT).
        option_min_days_to_expiry: OPTION_MIN_DAYS_TO_EXPIRY.
        expiry_exit_sessions: EXPIRY_EXIT_SESSIONS (at least 1).

    Returns:
        The choice; `instrument` None (with the reason) when no contract qualifies.

    Raises:
        ValueError: a non-positive spot, expiry_exit_sessions below 1, or a contract without
            an expiry.
    """
    if spot_paise <= 0:
        raise ValueError("spot must be positive")
    if trade is InstrumentKind.EQUITY:
        return ContractChoice(
            instrument=underlying,
            direction=direction,
            reason=f"{underlying.trading_symbol} itself, intraday",
        )
    symbol = underlying.trading_symbol
    own = [
        c for c in contracts if c.kind is trade and c.underlying_symbol == symbol and c.lot_size > 0
    ]
    # Expiry -> exit date, for the expiries still open for entries today.
    open_expiries: dict[date, date] = {}
    for expiry in sorted({contract_expiry(c) for c in own}):
        exit_date = expiry_exit_date(expiry, expiry_exit_sessions, calendar)
        if trading_date < exit_date:
            open_expiries[expiry] = exit_date
    if trade is InstrumentKind.FUTURE:
        futures = sorted(
            (c for c in own if contract_expiry(c) in open_expiries), key=contract_expiry
        )
        if not futures:
            return ContractChoice(
                instrument=None,
                direction=None,
                reason=f"no {symbol} future before its expiry exit window "
                f"({expiry_exit_sessions} session(s) before expiry)",
            )
        chosen = futures[0]
        expiry = contract_expiry(chosen)
        return ContractChoice(
            instrument=chosen,
            direction=direction,
            reason=f"{chosen.trading_symbol}: nearest future, expiry {expiry.isoformat()}",
            expiry=expiry,
            exit_date=open_expiries[expiry],
        )
    option_type = OptionType.CALL if direction is Direction.LONG else OptionType.PUT
    far_enough = [e for e in open_expiries if (e - trading_date).days > option_min_days_to_expiry]
    for expiry in far_enough:
        chain = [
            (c.strike_paise, c)
            for c in own
            if contract_expiry(c) == expiry
            and c.option_type is option_type
            and c.strike_paise is not None
        ]
        if not chain:
            continue
        strike, chosen = min(chain, key=lambda sc: (abs(sc[0] - spot_paise), sc[0]))
        return ContractChoice(
            instrument=chosen,
            direction=Direction.LONG,
            reason=f"{chosen.trading_symbol}: at the money (strike {strike / 100:g}, "
            f"spot {spot_paise / 100:g}), expiry {expiry.isoformat()} "
            f"({(expiry - trading_date).days} days left)",
            expiry=expiry,
            exit_date=open_expiries[expiry],
        )
    return ContractChoice(
        instrument=None,
        direction=None,
        reason=f"no {symbol} {option_type.value} with more than {option_min_days_to_expiry} "
        "days to expiry",
    )


def check_smallest_lot(
    *,
    contract: Instrument,
    price_paise: int,
    stop_paise: int,
    limits: RiskLimits,
    signal_id: SignalId | None = None,
    at: datetime | None = None,
    fill_paise: int | None = None,
    margin_fraction: Decimal | None = None,
) -> RiskDecision:
    """Refuse a contract whose smallest lot breaks the position cap or the risk per trade.

    Sizes with `risk.sizing.size_position` under those two caps only (cash is the risk manager's
    check at entry time, against the book of that moment).

    Args:
        contract: the instrument to trade (its `lot_size` is the smallest quantity).
        price_paise: expected entry price per unit (the premium for an option).
        stop_paise: stop price per unit.
        limits: the hard limits (risk per trade and position cap).
        signal_id: the signal, copied onto the decision.
        at: decision time, copied onto the decision.
        fill_paise: the worst fill to size for (risk.sizing.worst_fill_paise); None: the price.
        margin_fraction: a future's margin as a fraction of its value (None: the full value).

    Returns:
        Approved with the most whole lots the two caps allow, or refused naming the rule
        (POSITION_SIZE or RISK_PER_TRADE) and the numbers.

    Raises:
        ValueError: non-positive price or lot size, or a stop equal to the price.
    """
    cap = limits.max_position_value_paise
    # Cash set to the position cap so that it never binds alone (ties go to the earlier rule).
    sizing = size_position(
        price_paise=price_paise,
        stop_paise=stop_paise,
        lot_size=contract.lot_size,
        risk_budget_paise=limits.risk_per_trade_paise,
        max_position_value_paise=cap,
        available_paise=cap,
        fill_paise=fill_paise,
        margin_fraction=margin_fraction,
    )
    approved = sizing.lots > 0
    return RiskDecision(
        approved=approved,
        rule=None if approved else sizing.binding_rule,
        reason=sizing.reason
        if approved
        else f"{contract.trading_symbol} (lot {contract.lot_size}): {sizing.reason}",
        instrument_key=contract.instrument_key,
        signal_id=signal_id,
        quantity=sizing.quantity,
        lots=sizing.lots,
        price_paise=price_paise,
        stop_paise=stop_paise,
        decided_at=at,
    )

"""Charges on NSE trades through Upstox: brokerage, STT, exchange, SEBI, stamp duty, DP and GST.

Every statutory rate is effective-dated and looked up by the trade date (an IST calendar date).
Rates and rules follow the CHARGES fact sheet; each table below cites it with the dates it covers.
Amounts are Decimal rupees, rounded half up as one contract note does it: brokerage per order to
the paisa, STT on the note to the rupee, the other lines on the note to the paisa. The contract
note is final; these figures are the best estimate before it arrives.

Not covered: STT on exercised options and on physically settled stock F&O, auto square-off and
call-and-trade fees, BSE, MCX, currency, MTF.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import TypeVar

from upstox_bot.domain import Side, reduce_to_fields

_ZERO = Decimal(0)
_PAISA = Decimal("0.01")
_RUPEE = Decimal(1)
_CRORE = Decimal(10_000_000)

_K = TypeVar("_K")
_V = TypeVar("_V")


class ChargeSegment(StrEnum):
    """How a trade is charged: cash intraday (MIS), cash delivery (CNC), futures or options."""

    EQUITY_INTRADAY = "equity_intraday"
    EQUITY_DELIVERY = "equity_delivery"
    FUTURES = "futures"
    OPTIONS = "options"


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokeragePlan:
    """The broker's price list: brokerage per executed order and the DP charge.

    Brokerage on one order is `min(flat_per_order, cap_rate * order value)`, or the flat amount
    when the segment has no cap. Rates are fractions (0.001 = 0.1%). The defaults are Upstox's
    standard plan (CHARGES fact sheet, section 2); the API promotion (Rs 10 per order) and the
    DP amount (Rs 20 or Rs 18.50) are unconfirmed, so both are settings.
    """

    flat_per_order: Decimal = Decimal(20)  # rupees per executed order
    intraday_cap_rate: Decimal | None = Decimal("0.001")  # 0.1% of order value
    delivery_cap_rate: Decimal | None = Decimal("0.025")  # 2.5%: SEBI's ceiling on brokerage
    futures_cap_rate: Decimal | None = Decimal("0.0005")  # 0.05%
    options_cap_rate: Decimal | None = None  # flat Rs 20 per order, not per lot
    dp_charge_per_scrip: Decimal = Decimal(20)  # rupees per scrip per day with a delivery sell

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)

    def __post_init__(self) -> None:
        amounts = (self.flat_per_order, self.dp_charge_per_scrip)
        caps = (
            self.intraday_cap_rate,
            self.delivery_cap_rate,
            self.futures_cap_rate,
            self.options_cap_rate,
        )
        if any(a < 0 for a in amounts) or any(c is not None and c < 0 for c in caps):
            raise ValueError(f"brokerage plan amounts and rates must be >= 0: {self!r}")

    def cap_rate(self, segment: ChargeSegment) -> Decimal | None:
        """Return the brokerage cap as a fraction of order value, or None for flat brokerage."""
        match segment:
            case ChargeSegment.EQUITY_INTRADAY:
                return self.intraday_cap_rate
            case ChargeSegment.EQUITY_DELIVERY:
                return self.delivery_cap_rate
            case ChargeSegment.FUTURES:
                return self.futures_cap_rate
            case ChargeSegment.OPTIONS:
                return self.options_cap_rate

    def brokerage(self, segment: ChargeSegment, order_value: Decimal) -> Decimal:
        """Return the brokerage on one executed order of `order_value` rupees, to the paisa."""
        cap_rate = self.cap_rate(segment)
        if cap_rate is None:
            return _round_paise(self.flat_per_order)
        return _round_paise(min(self.flat_per_order, cap_rate * order_value))


DEFAULT_PLAN = BrokeragePlan()


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentRates:
    """The statutory and exchange rates of one segment on one trade date, as fractions of value.

    For options every rate applies to the premium (price x quantity), never to the notional.
    """

    stt_buy: Decimal
    stt_sell: Decimal
    exchange_txn: Decimal  # NSE transaction charge, both sides
    ipft: Decimal  # NSE Investor Protection Fund Trust contribution, both sides
    sebi: Decimal  # SEBI turnover fee, both sides
    stamp_buy: Decimal  # stamp duty, buyer only
    gst: Decimal  # on brokerage + exchange + IPFT + SEBI + DP

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)

    @property
    def exchange_incl_ipft(self) -> Decimal:
        """The exchange line of the note: transaction charge plus IPFT."""
        return self.exchange_txn + self.ipft


def _per_crore(rupees: str) -> Decimal:
    return Decimal(rupees) / _CRORE


def _pct(percent: str) -> Decimal:
    return Decimal(percent) / 100


def _frozen(mapping: dict[_K, _V]) -> Mapping[_K, _V]:
    return MappingProxyType(mapping)


_Seg = ChargeSegment

# STT as (buy, sell) fractions by trade date (CHARGES fact sheet, section 3). Cash rates are the
# same in every period; the seller pays except in delivery, where both sides pay.
_STT: tuple[tuple[date, Mapping[ChargeSegment, tuple[Decimal, Decimal]]], ...] = (
    (
        date(2023, 4, 1),  # 1 Apr 2023 - 30 Sep 2024
        _frozen(
            {
                _Seg.EQUITY_DELIVERY: (_pct("0.1"), _pct("0.1")),
                _Seg.EQUITY_INTRADAY: (_ZERO, _pct("0.025")),
                _Seg.FUTURES: (_ZERO, _pct("0.0125")),
                _Seg.OPTIONS: (_ZERO, _pct("0.0625")),
            }
        ),
    ),
    (
        date(2024, 10, 1),  # Finance (No. 2) Act 2024: futures 0.02%, options 0.1%
        _frozen(
            {
                _Seg.EQUITY_DELIVERY: (_pct("0.1"), _pct("0.1")),
                _Seg.EQUITY_INTRADAY: (_ZERO, _pct("0.025")),
                _Seg.FUTURES: (_ZERO, _pct("0.02")),
                _Seg.OPTIONS: (_ZERO, _pct("0.1")),
            }
        ),
    ),
    (
        date(2026, 4, 1),  # Finance Act 2026: futures 0.05%, options 0.15%
        _frozen(
            {
                _Seg.EQUITY_DELIVERY: (_pct("0.1"), _pct("0.1")),
                _Seg.EQUITY_INTRADAY: (_ZERO, _pct("0.025")),
                _Seg.FUTURES: (_ZERO, _pct("0.05")),
                _Seg.OPTIONS: (_ZERO, _pct("0.15")),
            }
        ),
    ),
)


def _nse(
    cash: tuple[str, str], futures: tuple[str, str], options: tuple[str, str]
) -> Mapping[ChargeSegment, tuple[Decimal, Decimal]]:
    def pair(rates: tuple[str, str]) -> tuple[Decimal, Decimal]:
        return (_per_crore(rates[0]), _per_crore(rates[1]))

    return _frozen(
        {
            _Seg.EQUITY_INTRADAY: pair(cash),
            _Seg.EQUITY_DELIVERY: pair(cash),
            _Seg.FUTURES: pair(futures),
            _Seg.OPTIONS: pair(options),
        }
    )


# NSE (transaction charge, IPFT) in rupees per crore of turnover, options on premium (CHARGES fact
# sheet, section 4). The sum is Rs 307 / 183 / 3,553 per crore from 1 Oct 2024 on; the 1 Mar 2026
# split (NSE/FA/73061) moves IPFT into the transaction charge without changing it.
_NSE_TXN_IPFT: tuple[tuple[date, Mapping[ChargeSegment, tuple[Decimal, Decimal]]], ...] = (
    (date(2023, 4, 1), _nse(("325", "10"), ("190", "10"), ("5000", "50"))),  # NSE/FA/56129
    (date(2024, 4, 1), _nse(("322", "10"), ("188", "10"), ("4950", "50"))),
    (date(2024, 10, 1), _nse(("297", "10"), ("173", "10"), ("3503", "50"))),  # flat, NSE/FA/64232
    (date(2026, 3, 1), _nse(("306.99", "0.01"), ("182.99", "0.01"), ("3552.99", "0.01"))),
)

# SEBI turnover fee: Rs 10 per crore, both sides, every segment (CHARGES fact sheet, section 5). In
# force before 2023 too; dated from the start of the fact sheet's coverage.
_SEBI: tuple[tuple[date, Decimal], ...] = ((date(2023, 4, 1), _per_crore("10")),)

# Stamp duty, buyer only, uniform across states since 1 Jul 2020 (CHARGES fact sheet, section 6).
_STAMP: tuple[tuple[date, Mapping[ChargeSegment, Decimal]], ...] = (
    (
        date(2020, 7, 1),
        _frozen(
            {
                _Seg.EQUITY_DELIVERY: _pct("0.015"),
                _Seg.EQUITY_INTRADAY: _pct("0.003"),
                _Seg.FUTURES: _pct("0.002"),
                _Seg.OPTIONS: _pct("0.003"),
            }
        ),
    ),
)

# GST 18% on brokerage, exchange charges, IPFT, SEBI fee and DP (CHARGES fact sheet, section 8);
# 18% on financial services since GST began on 1 Jul 2017.
_GST: tuple[tuple[date, Decimal], ...] = ((date(2017, 7, 1), _pct("18")),)

EARLIEST_RATE_DATE: date = max(table[0][0] for table in (_STT, _NSE_TXN_IPFT, _SEBI, _STAMP, _GST))
"""The first trade date every rate table covers; earlier dates raise ValueError."""


def _in_force(table: tuple[tuple[date, _V], ...], trade_date: date) -> _V:
    index = bisect_right(table, trade_date, key=lambda row: row[0]) - 1
    return table[index][1]


def segment_rates(segment: ChargeSegment, trade_date: date) -> SegmentRates:
    """Return the rates in force for `segment` on `trade_date` (an IST calendar date).

    Raises:
        ValueError: `trade_date` is before EARLIEST_RATE_DATE (1 Apr 2023), which no table covers.
    """
    if trade_date < EARLIEST_RATE_DATE:
        raise ValueError(
            f"no charge rates for trade date {trade_date.isoformat()}: "
            f"the rate tables start on {EARLIEST_RATE_DATE.isoformat()}"
        )
    stt_buy, stt_sell = _in_force(_STT, trade_date)[segment]
    exchange_txn, ipft = _in_force(_NSE_TXN_IPFT, trade_date)[segment]
    return SegmentRates(
        stt_buy=stt_buy,
        stt_sell=stt_sell,
        exchange_txn=exchange_txn,
        ipft=ipft,
        sebi=_in_force(_SEBI, trade_date),
        stamp_buy=_in_force(_STAMP, trade_date)[segment],
        gst=_in_force(_GST, trade_date),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutedOrder:
    """One executed order on a contract note: all its fills at their average price.

    Several fills of one order are one order (one brokerage); each child of an exchange-sliced
    order is an order of its own.
    """

    side: Side
    price: Decimal  # rupees per share; the premium for options
    quantity: int  # shares (F&O: lots x lot size)
    # The order's exact value in rupees when its average price has more decimals than `price`
    # shows (fills at several prices); None: price x quantity.
    exact_value: Decimal | None = None

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)

    @classmethod
    def of_value(cls, side: Side, value_paise: int, quantity: int) -> ExecutedOrder:
        """An executed order of `quantity` whose fills are worth `value_paise` in all."""
        value = Decimal(value_paise).scaleb(-2)
        return cls(
            side=side, price=_round_paise(value / quantity), quantity=quantity, exact_value=value
        )

    def __post_init__(self) -> None:
        if not isinstance(self.price, Decimal):
            raise TypeError(f"price must be a Decimal in rupees, got {type(self.price).__name__}")
        if not self.price.is_finite() or self.price < 0:
            raise ValueError(f"price must be a finite amount >= 0, got {self.price}")
        if isinstance(self.quantity, bool) or not isinstance(self.quantity, int):
            raise TypeError(f"quantity must be an int, got {type(self.quantity).__name__}")
        if self.quantity <= 0:
            raise ValueError(f"quantity must be positive, got {self.quantity}")

    @property
    def value(self) -> Decimal:
        """Order value in rupees: price x quantity (premium value for options), exactly."""
        if self.exact_value is not None:
            return self.exact_value
        return self.price * self.quantity


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargeBreakdown:
    """The charges of one contract note (or the sum of several), in rupees with two decimals."""

    brokerage: Decimal
    stt: Decimal
    exchange: Decimal  # NSE transaction charge incl. IPFT
    sebi: Decimal
    stamp: Decimal
    dp: Decimal
    gst: Decimal

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)

    @property
    def total(self) -> Decimal:
        """Sum of every line, in rupees."""
        return (
            self.brokerage + self.stt + self.exchange + self.sebi + self.stamp + self.dp + self.gst
        )

    @property
    def total_paise(self) -> int:
        """Sum of every line, in integer paise."""
        return int(self.total.scaleb(2).to_integral_value(rounding=ROUND_HALF_UP))

    def __add__(self, other: ChargeBreakdown) -> ChargeBreakdown:
        if not isinstance(other, ChargeBreakdown):
            return NotImplemented
        return ChargeBreakdown(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )


NO_CHARGES = ChargeBreakdown(
    brokerage=Decimal("0.00"),
    stt=Decimal("0.00"),
    exchange=Decimal("0.00"),
    sebi=Decimal("0.00"),
    stamp=Decimal("0.00"),
    dp=Decimal("0.00"),
    gst=Decimal("0.00"),
)
"""A note without orders; the neutral element of `+`."""


def _round_paise(amount: Decimal) -> Decimal:
    return amount.quantize(_PAISA, rounding=ROUND_HALF_UP)


def _round_rupee(amount: Decimal) -> Decimal:
    return amount.quantize(_RUPEE, rounding=ROUND_HALF_UP).quantize(_PAISA)


def contract_note_charges(
    orders: Sequence[ExecutedOrder],
    *,
    segment: ChargeSegment,
    trade_date: date,
    plan: BrokeragePlan = DEFAULT_PLAN,
    rates: SegmentRates | None = None,
) -> ChargeBreakdown:
    """Compute the charges of one contract note: one scrip, one segment, one trading day.

    Brokerage is per order, rounded to the paisa; STT is computed on the note's buy and sell
    values and rounded to the rupee; exchange (incl. IPFT), SEBI fee and stamp duty are computed
    on the note's turnover (stamp: buy value) and rounded to the paisa; DP is charged once when a
    delivery note has a sell; GST is 18% of brokerage + exchange + SEBI + DP, to the paisa. Every
    rounding is half up.

    Args:
        orders: the day's executed orders in this scrip and segment; none gives NO_CHARGES.
        segment: how the orders are charged.
        trade_date: the IST trading date of the note; selects the rates.
        plan: the broker's price list.
        rates: rates to use instead of those in force on `trade_date` (another broker's
            calculator, a new circular not yet in the tables).

    Returns:
        The note's charges, each line in rupees with two decimals.

    Raises:
        ValueError: no rates cover `trade_date` and `rates` is not given.
    """
    if rates is None:
        rates = segment_rates(segment, trade_date)
    if not orders:
        return NO_CHARGES
    buy_value = _ZERO
    sell_value = _ZERO
    brokerage = _ZERO
    for order in orders:
        value = order.value
        if order.side is Side.BUY:
            buy_value += value
        else:
            sell_value += value
        brokerage += plan.brokerage(segment, value)
    turnover = buy_value + sell_value
    stt = _round_rupee(buy_value * rates.stt_buy + sell_value * rates.stt_sell)
    exchange = _round_paise(turnover * rates.exchange_incl_ipft)
    sebi = _round_paise(turnover * rates.sebi)
    stamp = _round_paise(buy_value * rates.stamp_buy)
    has_delivery_sell = segment is ChargeSegment.EQUITY_DELIVERY and sell_value > 0
    dp = _round_paise(plan.dp_charge_per_scrip if has_delivery_sell else _ZERO)
    gst = _round_paise(rates.gst * (brokerage + exchange + sebi + dp))
    return ChargeBreakdown(
        brokerage=brokerage,
        stt=stt,
        exchange=exchange,
        sebi=sebi,
        stamp=stamp,
        dp=dp,
        gst=gst,
    )


def round_trip_charges(
    *,
    segment: ChargeSegment,
    trade_date: date,
    entry_side: Side,
    entry_price_paise: int,
    exit_price_paise: int,
    quantity: int,
    plan: BrokeragePlan = DEFAULT_PLAN,
    exit_date: date | None = None,
) -> ChargeBreakdown:
    """Compute the charges of one entry order and one exit order of the same quantity.

    A long buys first, a short sells first. Exiting on the entry date (or `exit_date` None) puts
    both orders on one note; a delivery or F&O position exited on a later date gives two notes
    (entry day, exit day), each computed and rounded on its own, summed.

    Args:
        segment: how the trade is charged.
        trade_date: IST trading date of the entry.
        entry_side: BUY for a long, SELL for a short.
        entry_price_paise: average entry price per share (premium for options), in paise.
        exit_price_paise: average exit price per share, in paise.
        quantity: shares (F&O: lots x lot size).
        plan: the broker's price list.
        exit_date: IST trading date of the exit; None means `trade_date`.

    Returns:
        The charges of both orders.

    Raises:
        ValueError: a date before the rate tables, an exit before the entry, an intraday trade
            over two dates, a delivery short carried overnight, or a bad price or quantity.
    """
    entry = ExecutedOrder(
        side=entry_side, price=_paise_to_rupees(entry_price_paise), quantity=quantity
    )
    exit_ = ExecutedOrder(
        side=entry_side.opposite, price=_paise_to_rupees(exit_price_paise), quantity=quantity
    )
    if exit_date is None or exit_date == trade_date:
        return contract_note_charges(
            (entry, exit_), segment=segment, trade_date=trade_date, plan=plan
        )
    if exit_date < trade_date:
        raise ValueError(f"exit date {exit_date} is before entry date {trade_date}")
    if segment is ChargeSegment.EQUITY_INTRADAY:
        raise ValueError(f"an intraday trade cannot span {trade_date} to {exit_date}")
    if segment is ChargeSegment.EQUITY_DELIVERY and entry_side is Side.SELL:
        raise ValueError("a delivery short cannot be carried to another day")
    entry_note = contract_note_charges((entry,), segment=segment, trade_date=trade_date, plan=plan)
    exit_note = contract_note_charges((exit_,), segment=segment, trade_date=exit_date, plan=plan)
    return entry_note + exit_note


def _paise_to_rupees(paise: int) -> Decimal:
    return Decimal(paise).scaleb(-2)


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderExecution:
    """What one order executed, as the charges of a trade need it: its id (several fills of one
    order are one order), its side, quantity and exact value (sum of fill price x quantity)."""

    order_id: str
    side: Side
    quantity: int
    value_paise: int

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)


@dataclass(slots=True)
class _Note:
    orders: dict[str, OrderExecution]
    booked_paise: int = 0

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)


class ContractNotes:
    """The day's contract notes, one per scrip and segment, charged a trade at a time.

    A trade is charged what its orders add to its note: the note is recomputed with every order
    executed so far in that scrip that day (an entry order once, however many trades close it)
    and the trade pays the difference from what the note's earlier trades paid. So the trades of
    a day sum exactly to the note's charges: brokerage per executed order, STT rounded to the
    rupee on the note (per scrip per day, as in Upstox's notes), the other lines to the paisa.
    Notes of an earlier trading date are dropped when a later date is charged.

    Args:
        plan: the broker's price list.
        clamp_rates: charge trade dates before EARLIEST_RATE_DATE at the earliest rates instead
            of refusing them (backtests over old history).
    """

    def __init__(self, plan: BrokeragePlan = DEFAULT_PLAN, *, clamp_rates: bool = False) -> None:
        self.plan = plan
        self.clamp_rates = clamp_rates
        self._date: date | None = None
        self._notes: dict[tuple[str, ChargeSegment], _Note] = {}

    def charge(
        self,
        *,
        instrument_key: str,
        segment: ChargeSegment,
        trade_date: date,
        orders: Sequence[OrderExecution],
    ) -> int:
        """Add `orders` to the note of `instrument_key` on `trade_date` and return, in paise,
        what that adds to the note's charges (an order already on the note is replaced)."""
        if trade_date != self._date:
            self._date = trade_date
            self._notes = {}
        note = self._notes.get((instrument_key, segment))
        if note is None:
            note = self._notes[(instrument_key, segment)] = _Note(orders={})
        for order in orders:
            if order.quantity > 0:
                note.orders[order.order_id] = order
        executed = [
            ExecutedOrder.of_value(o.side, o.value_paise, o.quantity) for o in note.orders.values()
        ]
        rates_date = max(trade_date, EARLIEST_RATE_DATE) if self.clamp_rates else trade_date
        total = contract_note_charges(
            executed, segment=segment, trade_date=rates_date, plan=self.plan
        ).total_paise
        added = total - note.booked_paise
        note.booked_paise = total
        return added

    def restore(
        self,
        *,
        instrument_key: str,
        segment: ChargeSegment,
        trade_date: date,
        orders: Sequence[OrderExecution],
        booked_paise: int,
    ) -> None:
        """Put back a note after a restart: the orders its trades were charged on so far and
        what they paid, so the day's next trade in it is charged as without the restart."""
        if trade_date != self._date:
            self._date = trade_date
            self._notes = {}
        self._notes[(instrument_key, segment)] = _Note(
            orders={o.order_id: o for o in orders}, booked_paise=booked_paise
        )

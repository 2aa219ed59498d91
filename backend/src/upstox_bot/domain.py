"""Typed value objects of the trading core: instruments, ticks, candles, signals, orders, positions.

Money is integer paise (1 rupee = 100 paise) everywhere in the core; quantities are shares (for
F&O contracts a multiple of the lot size). Times are epoch milliseconds (UTC) on the hot path
(ticks, candles) and timezone-aware datetimes elsewhere. No framework imports here.

Every value copies and pickles through its constructor (`reduce_to_fields`), so that a copy is
built as the original was.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from copy import copy as shallow_copy
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from typing import Any, Final, NewType
from zoneinfo import ZoneInfo

ClientOrderId = NewType("ClientOrderId", str)
SignalId = NewType("SignalId", str)

IST = ZoneInfo("Asia/Kolkata")  # market logic time zone; storage is UTC
PAISE_PER_RUPEE = 100


def rupees_to_paise(rupees: Decimal | int | str | float) -> int:
    """Convert rupees to integer paise, rounding half up to the nearest paisa."""
    value = Decimal(str(rupees)) * PAISE_PER_RUPEE
    return int(value.quantize(Decimal(1), rounding="ROUND_HALF_UP"))


def paise_to_rupees(paise: int) -> Decimal:
    """Exact rupees for integer paise, as a Decimal with two places."""
    return (Decimal(paise) / PAISE_PER_RUPEE).quantize(Decimal("0.01"))


def ms_to_datetime(ms: int) -> datetime:
    """Aware UTC datetime for epoch milliseconds."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def datetime_to_ms(at: datetime) -> int:
    """Epoch milliseconds for an aware datetime."""
    if at.tzinfo is None:
        raise ValueError("naive datetime: every time in upstox-bot is timezone-aware")
    return int(at.timestamp() * 1000)


def _rebuild(cls: Callable[..., object], values: dict[str, Any]) -> object:
    return cls(**values)


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def reduce_to_fields(value: Any) -> tuple[object, ...]:
    """`__reduce__` of a dataclass: copy and pickle rebuild it by calling its class with its
    fields (a compiled class cannot be allocated without them, nor a frozen one have them set
    after allocation, which is how they restore a slots dataclass)."""
    cls = type(value)
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(value))
    return _rebuild, (cls, {name: getattr(value, name) for name in names})


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class Direction(StrEnum):
    LONG = "long"
    SHORT = "short"

    @property
    def entry_side(self) -> Side:
        return Side.BUY if self is Direction.LONG else Side.SELL

    @property
    def exit_side(self) -> Side:
        return Side.SELL if self is Direction.LONG else Side.BUY

    @property
    def sign(self) -> int:
        """+1 for long, -1 for short: P&L per share is sign * (exit - entry)."""
        return 1 if self is Direction.LONG else -1


class InstrumentKind(StrEnum):
    EQUITY = "equity"
    FUTURE = "future"
    OPTION = "option"


class OptionType(StrEnum):
    CALL = "CE"
    PUT = "PE"


class Product(StrEnum):
    """Upstox product: I (intraday), D (delivery), MTF."""

    INTRADAY = "intraday"
    DELIVERY = "delivery"


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP_LIMIT = "sl"
    STOP_MARKET = "sl_m"


class OrderStatus(StrEnum):
    """Lifecycle of an order; transitions live in trading/order_state.py."""

    PENDING = "pending"  # recorded, not yet sent
    SUBMITTING = "submitting"  # sent or being sent: look it up by tag after a crash
    OPEN = "open"  # acknowledged by the broker, working
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"

    @property
    def is_terminal(self) -> bool:
        return self in (OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED)


class OrderPurpose(StrEnum):
    ENTRY = "entry"
    EXIT = "exit"


class ExitReason(StrEnum):
    STOP_LOSS = "stop_loss"
    TRAILING_STOP = "trailing_stop"
    TAKE_PROFIT = "take_profit"
    SQUARE_OFF = "square_off"
    SIGNAL = "signal"
    MANUAL = "manual"
    KILL_SWITCH = "kill_switch"
    EXPIRY = "expiry"  # a derivative closed before its expiry (physical settlement)


class SignalType(StrEnum):
    ENTRY_LONG = "entry_long"
    ENTRY_SHORT = "entry_short"
    EXIT_LONG = "exit_long"
    EXIT_SHORT = "exit_short"

    @property
    def is_entry(self) -> bool:
        return self in (SignalType.ENTRY_LONG, SignalType.ENTRY_SHORT)

    @property
    def direction(self) -> Direction:
        long_types = (SignalType.ENTRY_LONG, SignalType.EXIT_LONG)
        return Direction.LONG if self in long_types else Direction.SHORT


class SignalStatus(StrEnum):
    NEW = "new"
    ACCEPTED = "accepted"  # passed risk, an order was created
    REJECTED = "rejected"  # refused by a risk rule (reason on the decision)
    IGNORED = "ignored"  # nothing to do (e.g. exit signal without a position)


class RiskRule(StrEnum):
    """The rule that refused (or sized) a trade; stored on every risk decision."""

    KILL_SWITCH = "kill_switch"
    ENTRY_WINDOW = "entry_window"
    DAILY_LOSS_LIMIT = "daily_loss_limit"
    MAX_POSITIONS = "max_positions"
    ALREADY_IN_POSITION = "already_in_position"
    ORDER_RATE = "order_rate"
    ORDER_SPACING = "order_spacing"
    POSITION_SIZE = "position_size"
    RISK_PER_TRADE = "risk_per_trade"
    CAPITAL = "capital"
    SHORTS_DISABLED = "shorts_disabled"
    NO_PRICE = "no_price"
    MARKET_CLOSED = "market_closed"
    NO_CONTRACT = "no_contract"  # no future or option fits the signal (TRADE_INSTRUMENT)
    ENTRIES_PAUSED = "entries_paused"  # e.g. the Upstox token expired: exits go on, no entries
    FNO_BAN = "fno_ban"  # the stock is in the NSE F&O ban period


@dataclass(frozen=True, slots=True, kw_only=True)
class Instrument:
    instrument_key: str  # Upstox key, e.g. "NSE_EQ|INE002A01018"
    trading_symbol: str
    name: str = ""
    isin: str = ""
    lot_size: int = 1
    tick_size_paise: int = 5
    kind: InstrumentKind = InstrumentKind.EQUITY
    exchange: str = "NSE"
    segment: str = "NSE_EQ"
    sector: str = ""
    underlying_symbol: str | None = None
    expiry: str | None = None  # ISO date for derivatives
    strike_paise: int | None = None
    option_type: OptionType | None = None

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class Tick:
    """One market update. `volume` is the cumulative day volume when the source has it."""

    instrument_key: str
    ts_ms: int  # last trade time, epoch ms UTC
    ltp_paise: int
    ltq: int = 0
    volume: int = 0
    close_paise: int = 0  # previous close
    bid_paise: int | None = None
    ask_paise: int | None = None
    bid_qty: int | None = None
    ask_qty: int | None = None
    oi: int | None = None
    iv: float | None = None
    delta: float | None = None
    gamma: float | None = None
    theta: float | None = None
    vega: float | None = None
    rho: float | None = None

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)


# Tick's field names in declaration order: the order in which the feed decoders (the C one
# too) hand a Tick its values.
TICK_FIELDS: Final = tuple(f.name for f in fields(Tick))


@dataclass(frozen=True, slots=True, kw_only=True)
class Candle:
    instrument_key: str
    interval_s: int
    start_ms: int  # epoch ms UTC of the candle's first instant
    open_paise: int
    high_paise: int
    low_paise: int
    close_paise: int
    volume: int
    ticks: int = 0

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.interval_s * 1000

    @property
    def start_at(self) -> datetime:
        return ms_to_datetime(self.start_ms)


@dataclass(frozen=True, slots=True, kw_only=True)
class Signal:
    signal_id: SignalId  # derived from strategy, instrument, candle and type: unique
    instrument_key: str
    strategy: str
    type: SignalType
    strength: float  # 0-1
    reason: str
    price_paise: int  # the close the signal was computed on
    candle_start_ms: int
    created_at: datetime
    indicators: Mapping[str, float] = field(default_factory=dict)

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class StrategySignal:
    """What a strategy says about one closed candle."""

    type: SignalType
    strength: float  # 0-1
    reason: str
    indicators: Mapping[str, float] = field(default_factory=dict)

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskDecision:
    """The verdict of the risk manager on one proposed entry. Refusals are values, not errors."""

    approved: bool
    reason: str
    rule: RiskRule | None = None  # the rule that refused, None when approved
    instrument_key: str = ""
    signal_id: SignalId | None = None
    quantity: int = 0  # shares approved (multiple of the lot size)
    lots: int = 0
    price_paise: int = 0
    stop_paise: int = 0
    target_paise: int = 0
    decided_at: datetime | None = None

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderIntent:
    client_order_id: ClientOrderId  # derived from the signal or exit that caused it
    instrument_key: str
    side: Side
    quantity: int
    lots: int
    purpose: OrderPurpose
    reason: str
    created_at: datetime
    order_type: OrderType = OrderType.MARKET
    limit_price_paise: int | None = None
    signal_id: SignalId | None = None
    exit_reason: ExitReason | None = None
    reference_price_paise: int = 0  # last price when the intent was made

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)


@dataclass(slots=True, kw_only=True)
class Order:
    """An order and its state. Mutable: its status changes through order_state.transition()."""

    client_order_id: ClientOrderId
    instrument_key: str
    side: Side
    quantity: int
    lots: int
    purpose: OrderPurpose
    order_type: OrderType
    status: OrderStatus
    created_at: datetime
    updated_at: datetime
    reason: str = ""
    limit_price_paise: int | None = None
    signal_id: SignalId | None = None
    exit_reason: ExitReason | None = None
    broker_order_id: str | None = None
    filled_quantity: int = 0
    average_price_paise: int | None = None  # rounded to the paisa; exact: filled_value_paise
    rejection_reason: str | None = None
    filled_value_paise: int = 0  # sum of fill price x quantity: exact, average = value / qty

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)

    @property
    def executed_value_paise(self) -> int:
        """Price x quantity of what has filled, exactly (from the rounded average when the
        fills' own value is unknown: an order rebuilt from a broker report)."""
        if self.filled_value_paise or not self.filled_quantity:
            return self.filled_value_paise
        return (self.average_price_paise or 0) * self.filled_quantity

    def copy(self) -> Order:
        """A separate record of the same order (a broker's or a journal's own)."""
        return shallow_copy(self)

    @classmethod
    def from_intent(cls, intent: OrderIntent) -> Order:
        return cls(
            client_order_id=intent.client_order_id,
            instrument_key=intent.instrument_key,
            side=intent.side,
            quantity=intent.quantity,
            lots=intent.lots,
            purpose=intent.purpose,
            order_type=intent.order_type,
            status=OrderStatus.PENDING,
            created_at=intent.created_at,
            updated_at=intent.created_at,
            reason=intent.reason,
            limit_price_paise=intent.limit_price_paise,
            signal_id=intent.signal_id,
            exit_reason=intent.exit_reason,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Fill:
    fill_id: str
    client_order_id: ClientOrderId
    broker_order_id: str
    instrument_key: str
    side: Side
    quantity: int
    price_paise: int
    filled_at: datetime

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)


@dataclass(slots=True, kw_only=True)
class Position:
    """An open position and its exit state. Mutable: the exit manager moves it on every tick."""

    instrument_key: str
    direction: Direction
    quantity: int
    lots: int
    entry_price_paise: int
    entry_at: datetime
    entry_order_id: ClientOrderId
    stop_paise: int
    target_paise: int
    trailing_active: bool = False
    best_price_paise: int = 0  # highest since entry for a long, lowest for a short
    trail_stop_paise: int | None = None
    last_price_paise: int = 0
    entry_charges_paise: int = 0
    strategy: str = ""
    exit_pending: bool = False  # an exit order exists and is not yet filled
    # The entry order's exact executed value and quantity (its exact average price is
    # value / quantity); 0: unknown, entry_price_paise stands for it.
    entry_value_paise: int = 0
    entry_quantity: int = 0

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)

    def entry_value_of(self, quantity: int) -> Fraction:
        """The exact entry value (paise) of `quantity` of this position's shares."""
        if self.entry_quantity > 0:
            return Fraction(self.entry_value_paise * quantity, self.entry_quantity)
        return Fraction(self.entry_price_paise * quantity)

    @property
    def unrealised_pnl_paise(self) -> int:
        return (
            self.direction.sign * (self.last_price_paise - self.entry_price_paise) * self.quantity
        )

    @property
    def effective_stop_paise(self) -> int:
        """The price at which the position is stopped out now (hard stop or trail)."""
        if self.trail_stop_paise is None:
            return self.stop_paise
        if self.direction is Direction.LONG:
            return max(self.stop_paise, self.trail_stop_paise)
        return min(self.stop_paise, self.trail_stop_paise)


@dataclass(frozen=True, slots=True, kw_only=True)
class Trade:
    """A closed round trip. net = gross - charges; charges cover both orders."""

    trade_id: str
    instrument_key: str
    direction: Direction
    quantity: int
    lots: int
    entry_price_paise: int
    exit_price_paise: int
    entry_at: datetime
    exit_at: datetime
    gross_pnl_paise: int
    charges_paise: int
    net_pnl_paise: int
    exit_reason: ExitReason
    entry_order_id: ClientOrderId
    exit_order_id: ClientOrderId
    strategy: str = ""

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    """One state change: what happened, to which entity, when, with its data."""

    event: str  # dotted, e.g. "order.filled", "position.closed", "setting.changed"
    entity: str  # "order", "position", "signal", "risk", "account", "setting", ...
    entity_id: str
    at: datetime
    data: Mapping[str, object] = field(default_factory=dict)
    actor: str = "engine"

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountSnapshot:
    """The account on one trading date, in paise."""

    trading_date: str  # ISO date in Asia/Kolkata
    capital_paise: int  # starting capital plus realised net P&L of earlier days
    realised_pnl_paise: int  # today's net realised P&L (after charges)
    unrealised_pnl_paise: int
    charges_paise: int  # today's charges
    open_positions: int
    trades: int
    orders: int
    loss_limit_paise: int
    loss_limit_hit: bool
    kill_switch: bool

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)

    @property
    def day_pnl_paise(self) -> int:
        return self.realised_pnl_paise + self.unrealised_pnl_paise

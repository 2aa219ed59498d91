"""Typed records parsed from Upstox answers, with prices in integer paise.

Upstox sends prices as rupee numbers; each ``*_paise`` field here is that number converted exactly
(through its decimal text) and rounded half up to the paisa. Order and trade timestamps are IST
wall-clock strings (``"2024-02-21 14:40:02"``) and become aware datetimes in Asia/Kolkata.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from upstox_bot.domain import (
    Candle,
    OrderStatus,
    OrderType,
    Product,
    Side,
    datetime_to_ms,
    rupees_to_paise,
)

IST = ZoneInfo("Asia/Kolkata")

PRODUCT_CODES: Mapping[Product, str] = {Product.INTRADAY: "I", Product.DELIVERY: "D"}
ORDER_TYPE_CODES: Mapping[OrderType, str] = {
    OrderType.MARKET: "MARKET",
    OrderType.LIMIT: "LIMIT",
    OrderType.STOP_LIMIT: "SL",
    OrderType.STOP_MARKET: "SL-M",
}
SIDE_CODES: Mapping[Side, str] = {Side.BUY: "BUY", Side.SELL: "SELL"}


class Validity(StrEnum):
    DAY = "DAY"
    IOC = "IOC"


TERMINAL_STATUSES = frozenset({"complete", "rejected", "cancelled", "cancelled after market order"})


def paise(value: Any) -> int:
    """Paise for a rupee amount from JSON (number or numeric text); None and "" count as 0."""
    if value is None or value == "":
        return 0
    return rupees_to_paise(str(value))


def paise_or_none(value: Any) -> int | None:
    """Paise for a rupee amount, keeping None (and "") as None."""
    if value is None or value == "":
        return None
    return rupees_to_paise(str(value))


def _int(value: Any) -> int:
    if value is None or value == "":
        return 0
    return int(float(value)) if isinstance(value, str) and "." in value else int(value)


def _float(value: Any) -> float:
    return 0.0 if value is None or value == "" else float(value)


def _str_or_none(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def parse_ist_timestamp(value: Any) -> datetime | None:
    """An aware datetime for Upstox's ``"YYYY-MM-DD HH:MM:SS"`` IST text (None if absent)."""
    if not value:
        return None
    text = str(value)
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=IST)


def side_from_code(code: str) -> Side:
    """The domain side for ``BUY`` / ``SELL``."""
    return Side.BUY if code.upper() == "BUY" else Side.SELL


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRecord:
    """One order as Upstox reports it (order book, details, history)."""

    order_id: str
    tag: str | None
    instrument_token: str
    exchange: str
    trading_symbol: str
    product: str  # I, D, MTF, CO
    order_type: str  # MARKET, LIMIT, SL, SL-M
    validity: str
    transaction_type: str  # BUY, SELL
    quantity: int
    filled_quantity: int
    pending_quantity: int
    price_paise: int
    trigger_price_paise: int
    average_price_paise: int
    status: str  # Upstox's lower-case words, e.g. "open", "complete"
    status_message: str | None
    exchange_order_id: str | None
    parent_order_id: str | None
    order_request_id: str | None
    variety: str | None
    is_amo: bool
    order_at: datetime | None
    exchange_at: datetime | None

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> OrderRecord:
        """Parse an ``OrderBookData`` / ``OrderData`` record."""
        return cls(
            order_id=str(raw["order_id"]),
            tag=_str_or_none(raw.get("tag")),
            instrument_token=str(raw.get("instrument_token") or raw.get("instrument_key") or ""),
            exchange=str(raw.get("exchange") or ""),
            trading_symbol=str(raw.get("trading_symbol") or raw.get("tradingsymbol") or ""),
            product=str(raw.get("product") or ""),
            order_type=str(raw.get("order_type") or ""),
            validity=str(raw.get("validity") or ""),
            transaction_type=str(raw.get("transaction_type") or ""),
            quantity=_int(raw.get("quantity")),
            filled_quantity=_int(raw.get("filled_quantity")),
            pending_quantity=_int(raw.get("pending_quantity")),
            price_paise=paise(raw.get("price")),
            trigger_price_paise=paise(raw.get("trigger_price")),
            average_price_paise=paise(raw.get("average_price")),
            status=str(raw.get("status") or ""),
            status_message=_str_or_none(raw.get("status_message")),
            exchange_order_id=_str_or_none(raw.get("exchange_order_id")),
            parent_order_id=_str_or_none(raw.get("parent_order_id")),
            order_request_id=_str_or_none(raw.get("order_request_id")),
            variety=_str_or_none(raw.get("variety")),
            is_amo=bool(raw.get("is_amo") or False),
            order_at=parse_ist_timestamp(raw.get("order_timestamp")),
            exchange_at=parse_ist_timestamp(raw.get("exchange_timestamp")),
        )

    @property
    def side(self) -> Side:
        return side_from_code(self.transaction_type)

    @property
    def is_terminal(self) -> bool:
        """Complete, rejected or cancelled; unknown status words count as still working."""
        return self.status in TERMINAL_STATUSES

    @property
    def domain_status(self) -> OrderStatus:
        """The order's state in the bot's terms (unknown words map to OPEN: reconcile later)."""
        if self.status == "complete":
            return OrderStatus.FILLED
        if self.status == "rejected":
            return OrderStatus.REJECTED
        if self.status.startswith("cancelled"):
            return OrderStatus.CANCELLED
        if self.filled_quantity > 0:
            return OrderStatus.PARTIALLY_FILLED
        return OrderStatus.OPEN


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacedOrder:
    """The outcome of a placement: Upstox's order ids (several when the order was sliced).

    ``recovered`` is True when the placement answer was lost (timeout, 5xx) and the ids were
    found afterwards by searching the order book for the tag.
    """

    tag: str
    order_ids: tuple[str, ...]
    latency_ms: int | None = None
    recovered: bool = False
    attempts: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class UserProfile:
    """The user's profile (``GET /v2/user/profile``, API.md 6.7)."""

    user_id: str
    user_name: str
    email: str
    exchanges: tuple[str, ...]
    products: tuple[str, ...]
    is_active: bool

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> UserProfile:
        return cls(
            user_id=str(raw.get("user_id") or ""),
            user_name=str(raw.get("user_name") or ""),
            email=str(raw.get("email") or ""),
            exchanges=tuple(str(e) for e in raw.get("exchanges") or ()),
            products=tuple(str(p) for p in raw.get("products") or ()),
            is_active=bool(raw.get("is_active", True)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeStatus:
    """An exchange's market status (``GET /v2/market/status/{exchange}``, API.md 7.4)."""

    exchange: str
    status: str  # NORMAL_OPEN, NORMAL_CLOSE, PRE_OPEN_START, PRE_OPEN_END, CLOSING_*
    last_updated: datetime | None

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> ExchangeStatus:
        updated = raw.get("last_updated")
        at = None
        if isinstance(updated, int | float | str) and str(updated).isdigit():
            at = datetime.fromtimestamp(int(updated) / 1000, tz=IST)
        return cls(
            exchange=str(raw.get("exchange") or ""),
            status=str(raw.get("status") or ""),
            last_updated=at,
        )

    @property
    def is_open(self) -> bool:
        return self.status == "NORMAL_OPEN"


@dataclass(frozen=True, slots=True, kw_only=True)
class TradeRecord:
    """One execution (``TradeData``)."""

    trade_id: str
    order_id: str
    exchange_order_id: str | None
    instrument_token: str
    exchange: str
    trading_symbol: str
    product: str
    order_type: str
    transaction_type: str
    quantity: int
    price_paise: int
    traded_at: datetime | None
    order_at: datetime | None
    order_ref_id: str | None

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> TradeRecord:
        """Parse a ``TradeData`` record; ``average_price`` is the trade price."""
        return cls(
            trade_id=str(raw.get("trade_id") or ""),
            order_id=str(raw.get("order_id") or ""),
            exchange_order_id=_str_or_none(raw.get("exchange_order_id")),
            instrument_token=str(raw.get("instrument_token") or raw.get("instrument_key") or ""),
            exchange=str(raw.get("exchange") or ""),
            trading_symbol=str(raw.get("trading_symbol") or raw.get("tradingsymbol") or ""),
            product=str(raw.get("product") or ""),
            order_type=str(raw.get("order_type") or ""),
            transaction_type=str(raw.get("transaction_type") or ""),
            quantity=_int(raw.get("quantity")),
            price_paise=paise(raw.get("average_price")),
            traded_at=parse_ist_timestamp(raw.get("exchange_timestamp")),
            order_at=parse_ist_timestamp(raw.get("order_timestamp")),
            order_ref_id=_str_or_none(raw.get("order_ref_id")),
        )

    @property
    def side(self) -> Side:
        return side_from_code(self.transaction_type)


@dataclass(frozen=True, slots=True, kw_only=True)
class PositionRecord:
    """One short-term position; ``quantity`` is net (negative = short)."""

    instrument_token: str
    exchange: str
    trading_symbol: str
    product: str
    quantity: int
    multiplier: float
    average_price_paise: int | None
    last_price_paise: int
    close_price_paise: int
    buy_price_paise: int
    sell_price_paise: int
    day_buy_quantity: int
    day_sell_quantity: int
    overnight_quantity: int
    pnl_paise: int
    realised_paise: int
    unrealised_paise: int

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> PositionRecord:
        """Parse a ``PositionData`` record."""
        return cls(
            instrument_token=str(raw.get("instrument_token") or raw.get("instrument_key") or ""),
            exchange=str(raw.get("exchange") or ""),
            trading_symbol=str(raw.get("trading_symbol") or raw.get("tradingsymbol") or ""),
            product=str(raw.get("product") or ""),
            quantity=_int(raw.get("quantity")),
            multiplier=_float(raw.get("multiplier")) or 1.0,
            average_price_paise=paise_or_none(raw.get("average_price")),
            last_price_paise=paise(raw.get("last_price")),
            close_price_paise=paise(raw.get("close_price")),
            buy_price_paise=paise(raw.get("buy_price")),
            sell_price_paise=paise(raw.get("sell_price")),
            day_buy_quantity=_int(raw.get("day_buy_quantity")),
            day_sell_quantity=_int(raw.get("day_sell_quantity")),
            overnight_quantity=_int(raw.get("overnight_quantity")),
            pnl_paise=paise(raw.get("pnl")),
            realised_paise=paise(raw.get("realised")),
            unrealised_paise=paise(raw.get("unrealised")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentFunds:
    """Funds of one segment (``equity`` or ``commodity``) of ``get-funds-and-margin``."""

    available_margin_paise: int
    used_margin_paise: int
    payin_amount_paise: int
    span_margin_paise: int
    exposure_margin_paise: int
    adhoc_margin_paise: int
    notional_cash_paise: int

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> SegmentFunds:
        """Parse one segment object."""
        return cls(
            available_margin_paise=paise(raw.get("available_margin")),
            used_margin_paise=paise(raw.get("used_margin")),
            payin_amount_paise=paise(raw.get("payin_amount")),
            span_margin_paise=paise(raw.get("span_margin")),
            exposure_margin_paise=paise(raw.get("exposure_margin")),
            adhoc_margin_paise=paise(raw.get("adhoc_margin")),
            notional_cash_paise=paise(raw.get("notional_cash")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FundsAndMargin:
    """``GET /v2/user/get-funds-and-margin``. Since 2025-07-19 all funds are in ``equity``."""

    equity: SegmentFunds
    commodity: SegmentFunds | None

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> FundsAndMargin:
        """Parse the ``data`` object."""
        commodity = raw.get("commodity")
        return cls(
            equity=SegmentFunds.from_api(raw.get("equity") or {}),
            commodity=SegmentFunds.from_api(commodity) if isinstance(commodity, Mapping) else None,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerageCharges:
    """``GET /v2/charges/brokerage`` in paise (each component rounded half up on its own)."""

    total_paise: int
    brokerage_paise: int
    gst_paise: int
    stt_paise: int
    stamp_duty_paise: int
    transaction_paise: int
    clearing_paise: int
    ipft_paise: int
    sebi_turnover_paise: int

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> BrokerageCharges:
        """Parse the ``data`` object (``data.charges``)."""
        charges = raw.get("charges") or {}
        taxes = charges.get("taxes") or {}
        other = charges.get("other_charges") or charges.get("otherTaxes") or {}
        return cls(
            total_paise=paise(charges.get("total")),
            brokerage_paise=paise(charges.get("brokerage")),
            gst_paise=paise(taxes.get("gst")),
            stt_paise=paise(taxes.get("stt")),
            stamp_duty_paise=paise(taxes.get("stamp_duty")),
            transaction_paise=paise(other.get("transaction")),
            clearing_paise=paise(other.get("clearing")),
            ipft_paise=paise(other.get("ipft")),
            sebi_turnover_paise=paise(other.get("sebi_turnover")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DepthLevel:
    price_paise: int
    quantity: int
    orders: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FullQuote:
    """One instrument of ``GET /v2/market-quote/quotes``."""

    instrument_token: str
    symbol: str
    last_price_paise: int
    volume: int
    average_price_paise: int
    oi: int
    net_change_paise: int
    total_buy_quantity: int
    total_sell_quantity: int
    lower_circuit_paise: int
    upper_circuit_paise: int
    last_trade_ms: int | None
    open_paise: int
    high_paise: int
    low_paise: int
    close_paise: int
    bids: tuple[DepthLevel, ...]
    asks: tuple[DepthLevel, ...]

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> FullQuote:
        """Parse one value of the quote map (the map key is ignored, per API.md 0.4)."""
        ohlc = raw.get("ohlc") or {}
        depth = raw.get("depth") or {}
        ltt = raw.get("last_trade_time")
        return cls(
            instrument_token=str(raw.get("instrument_token") or ""),
            symbol=str(raw.get("symbol") or ""),
            last_price_paise=paise(raw.get("last_price")),
            volume=_int(raw.get("volume")),
            average_price_paise=paise(raw.get("average_price")),
            oi=_int(raw.get("oi")),
            net_change_paise=paise(raw.get("net_change")),
            total_buy_quantity=_int(raw.get("total_buy_quantity")),
            total_sell_quantity=_int(raw.get("total_sell_quantity")),
            lower_circuit_paise=paise(raw.get("lower_circuit_limit")),
            upper_circuit_paise=paise(raw.get("upper_circuit_limit")),
            last_trade_ms=int(ltt) if ltt not in (None, "") else None,
            open_paise=paise(ohlc.get("open")),
            high_paise=paise(ohlc.get("high")),
            low_paise=paise(ohlc.get("low")),
            close_paise=paise(ohlc.get("close")),
            bids=tuple(_depth(level) for level in depth.get("buy") or ()),
            asks=tuple(_depth(level) for level in depth.get("sell") or ()),
        )


def _depth(raw: Mapping[str, Any]) -> DepthLevel:
    return DepthLevel(
        price_paise=paise(raw.get("price")),
        quantity=_int(raw.get("quantity")),
        orders=_int(raw.get("orders")),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class LtpQuote:
    """One instrument of ``GET /v3/market-quote/ltp``."""

    instrument_token: str
    last_price_paise: int
    ltq: int
    volume: int
    close_paise: int  # previous close (``cp``)

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> LtpQuote:
        """Parse one value of the LTP map."""
        return cls(
            instrument_token=str(raw.get("instrument_token") or ""),
            last_price_paise=paise(raw.get("last_price")),
            ltq=_int(raw.get("ltq")),
            volume=_int(raw.get("volume")),
            close_paise=paise(raw.get("cp")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class OptionLeg:
    """A call or put of one option-chain strike. ``iv`` is in percent as the REST API gives it."""

    instrument_key: str
    ltp_paise: int
    close_paise: int
    volume: int
    oi: int
    prev_oi: int
    bid_paise: int
    bid_qty: int
    ask_paise: int
    ask_qty: int
    iv: float
    delta: float
    gamma: float
    theta: float
    vega: float
    pop: float

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> OptionLeg:
        """Parse ``call_options`` / ``put_options``."""
        md = raw.get("market_data") or {}
        greeks = raw.get("option_greeks") or {}
        return cls(
            instrument_key=str(raw.get("instrument_key") or ""),
            ltp_paise=paise(md.get("ltp")),
            close_paise=paise(md.get("close_price")),
            volume=_int(md.get("volume")),
            oi=_int(md.get("oi")),
            prev_oi=_int(md.get("prev_oi")),
            bid_paise=paise(md.get("bid_price")),
            bid_qty=_int(md.get("bid_qty")),
            ask_paise=paise(md.get("ask_price")),
            ask_qty=_int(md.get("ask_qty")),
            iv=_float(greeks.get("iv")),
            delta=_float(greeks.get("delta")),
            gamma=_float(greeks.get("gamma")),
            theta=_float(greeks.get("theta")),
            vega=_float(greeks.get("vega")),
            pop=_float(greeks.get("pop")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class OptionChainStrike:
    """One strike of ``GET /v2/option/chain``."""

    expiry: str  # ISO date
    strike_paise: int
    underlying_key: str
    underlying_spot_paise: int
    pcr: float
    call: OptionLeg | None
    put: OptionLeg | None

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> OptionChainStrike:
        """Parse one element of ``data``."""
        call = raw.get("call_options")
        put = raw.get("put_options")
        return cls(
            expiry=str(raw.get("expiry") or ""),
            strike_paise=paise(raw.get("strike_price")),
            underlying_key=str(raw.get("underlying_key") or ""),
            underlying_spot_paise=paise(raw.get("underlying_spot_price")),
            pcr=_float(raw.get("pcr")),
            call=OptionLeg.from_api(call) if isinstance(call, Mapping) else None,
            put=OptionLeg.from_api(put) if isinstance(put, Mapping) else None,
        )


class CandleUnit(StrEnum):
    """Units of the V3 candle APIs (months exist at Upstox but have no fixed length)."""

    MINUTES = "minutes"
    HOURS = "hours"
    DAYS = "days"
    WEEKS = "weeks"

    @property
    def seconds(self) -> int:
        return {"minutes": 60, "hours": 3600, "days": 86400, "weeks": 604800}[self.value]

    @property
    def max_interval(self) -> int:
        """The largest interval Upstox accepts for the unit (API.md 7.3)."""
        return {"minutes": 300, "hours": 5, "days": 1, "weeks": 1}[self.value]


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoricalCandle:
    """One V3 candle. ``start_ms`` is epoch ms UTC; ``oi`` is 0 for non-derivatives."""

    instrument_key: str
    interval_s: int
    start_ms: int
    open_paise: int
    high_paise: int
    low_paise: int
    close_paise: int
    volume: int
    oi: int

    @classmethod
    def from_api(cls, row: list[Any], *, instrument_key: str, interval_s: int) -> HistoricalCandle:
        """Parse ``[ts, open, high, low, close, volume, oi]`` (ts ISO-8601 with offset)."""
        start = datetime.fromisoformat(str(row[0]))
        if start.tzinfo is None:
            start = start.replace(tzinfo=IST)
        return cls(
            instrument_key=instrument_key,
            interval_s=interval_s,
            start_ms=datetime_to_ms(start),
            open_paise=paise(row[1]),
            high_paise=paise(row[2]),
            low_paise=paise(row[3]),
            close_paise=paise(row[4]),
            volume=_int(row[5]),
            oi=_int(row[6]) if len(row) > 6 else 0,
        )

    def to_candle(self) -> Candle:
        """The domain candle (open interest dropped)."""
        return Candle(
            instrument_key=self.instrument_key,
            interval_s=self.interval_s,
            start_ms=self.start_ms,
            open_paise=self.open_paise,
            high_paise=self.high_paise,
            low_paise=self.low_paise,
            close_paise=self.close_paise,
            volume=self.volume,
        )

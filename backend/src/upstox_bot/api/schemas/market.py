"""Models of the market endpoints: symbols, candles, quotes, signal tests."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Self

from pydantic import AfterValidator, AwareDatetime, BaseModel, Field, model_validator

from upstox_bot.api.schemas.common import NO_NUL
from upstox_bot.db.repositories.symbols import SymbolRecord
from upstox_bot.domain import (
    Candle,
    InstrumentKind,
    OptionType,
    SignalType,
    paise_to_rupees,
)


class SymbolRead(BaseModel):
    instrument_key: str
    trading_symbol: str
    name: str
    isin: str
    lot_size: int
    tick_size: Decimal
    kind: InstrumentKind
    exchange: str
    segment: str
    sector: str
    underlying_symbol: str | None
    expiry: date | None
    strike: Decimal | None
    option_type: OptionType | None
    liquidity_rank: int | None = Field(description="1 = most liquid; null = not ranked.")
    last_price: Decimal | None
    is_active: bool
    in_ban: bool = Field(description="In the F&O ban period: no new positions.")
    updated_at: datetime

    @classmethod
    def of(cls, record: SymbolRecord) -> SymbolRead:
        i = record.instrument
        return cls(
            instrument_key=i.instrument_key,
            trading_symbol=i.trading_symbol,
            name=i.name,
            isin=i.isin,
            lot_size=i.lot_size,
            tick_size=paise_to_rupees(i.tick_size_paise),
            kind=i.kind,
            exchange=i.exchange,
            segment=i.segment,
            sector=i.sector,
            underlying_symbol=i.underlying_symbol,
            expiry=date.fromisoformat(i.expiry) if i.expiry else None,
            strike=None if i.strike_paise is None else paise_to_rupees(i.strike_paise),
            option_type=i.option_type,
            liquidity_rank=record.liquidity_rank,
            last_price=(
                None
                if record.last_price_paise is None
                else paise_to_rupees(record.last_price_paise)
            ),
            is_active=record.is_active,
            in_ban=record.in_ban,
            updated_at=record.updated_at,
        )


class RefreshRead(BaseModel):
    status: str
    result: Any = Field(None, description="What the universe refresh reported.")


class CandleRead(BaseModel):
    instrument_key: str
    interval_s: int
    start_at: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: int
    ticks: int

    @classmethod
    def of(cls, c: Candle) -> CandleRead:
        return cls(
            instrument_key=c.instrument_key,
            interval_s=c.interval_s,
            start_at=c.start_at,
            open=paise_to_rupees(c.open_paise),
            high=paise_to_rupees(c.high_paise),
            low=paise_to_rupees(c.low_paise),
            close=paise_to_rupees(c.close_paise),
            volume=c.volume,
            ticks=c.ticks,
        )


class QuoteRead(BaseModel):
    instrument_key: str
    trading_symbol: str
    last_price: Decimal | None
    at: datetime | None = Field(description="Time of the last price, when known.")
    source: str = Field(description="engine (live), tick (stored), symbol (master) or none.")
    volume: int | None = None
    bid: Decimal | None = None
    ask: Decimal | None = None


# Prices up to Rs 1 crore per share, two decimals: enough for every NSE stock.
PriceRupees = Annotated[Decimal, Field(gt=0, le=10_000_000, max_digits=10, decimal_places=2)]


FIRST_MARKET_YEAR, LAST_MARKET_YEAR = 1970, 2999


def _market_time(at: datetime) -> datetime:
    try:
        utc = at.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not FIRST_MARKET_YEAR <= utc.year <= LAST_MARKET_YEAR:
        raise ValueError(f"must lie in the years {FIRST_MARKET_YEAR} to {LAST_MARKET_YEAR}")
    return utc


# A bar's time, as the engine counts it (epoch milliseconds): range-checked.
MarketTime = Annotated[AwareDatetime, AfterValidator(_market_time)]


class CandleIn(BaseModel):
    """One OHLCV bar posted for a signal test; prices in rupees."""

    start_at: MarketTime = Field(description="Aware time, in the years 1970 to 2999.")
    open: PriceRupees
    high: PriceRupees
    low: PriceRupees
    close: PriceRupees
    volume: int = Field(0, ge=0, le=10**12, strict=True)

    @model_validator(mode="after")
    def _ohlc(self) -> Self:
        if self.high < max(self.open, self.close, self.low):
            raise ValueError("high must be at least open, low and close")
        if self.low > min(self.open, self.close):
            raise ValueError("low must be at most open and close")
        return self


class SignalTestRequest(BaseModel):
    """Run a strategy over candles and see the signals it would raise; nothing is traded."""

    strategy: str | None = Field(
        None, max_length=64, pattern=NO_NUL, description="A strategy; default the active one."
    )
    params: dict[str, Any] | None = Field(
        None, description="Strategy parameters; default the active ones for the active strategy."
    )
    instrument_key: str = Field("TEST", min_length=1, max_length=64, pattern=NO_NUL)
    interval_s: int = Field(
        60, ge=60, le=86_400, strict=True, description="Candle interval in seconds."
    )
    candles: list[CandleIn] | None = Field(
        None,
        max_length=5000,
        description="Bars oldest first; omit to use the stored candles of instrument_key.",
    )
    limit: int = Field(
        500, ge=1, le=5000, strict=True, description="Stored candles to use (newest)."
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.candles:
            for a, b in itertools.pairwise(self.candles):
                if b.start_at <= a.start_at:
                    raise ValueError("candles must be in strictly increasing start_at order")
        return self


class TestSignalRead(BaseModel):
    candle_start_at: datetime
    type: SignalType
    strength: float
    reason: str
    price: Decimal
    indicators: dict[str, float | None]


class SignalTestRead(BaseModel):
    strategy: str
    params: dict[str, Any]
    instrument_key: str
    candles: int = Field(description="Bars evaluated.")
    startup_candles: int
    signals: list[TestSignalRead]

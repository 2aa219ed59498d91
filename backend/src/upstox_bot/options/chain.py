"""A simulated F&O chain for the simulated market: monthly expiries, futures, strikes, quotes.

NSE stock futures and options expire monthly; since 2025-09-01 on the last Tuesday of the month
(moved to the previous trading day when that Tuesday is a holiday). The real chain comes from the
Upstox instrument file; this one only stands in for it when the market is simulated.
"""

from __future__ import annotations

import calendar as _calendar
import csv
import io
import math
import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from functools import cache
from importlib import resources

from upstox_bot.clock import DAY_MS, NseCalendar
from upstox_bot.domain import IST, Instrument, InstrumentKind, OptionType
from upstox_bot.options.greeks import bs_price

TUESDAY = 1  # date.weekday() of the monthly expiry day (NSE, from 2025-09-01)
EXPIRY_CLOSE = NseCalendar.SESSION_CLOSE  # contracts stop trading at the F&O close, IST
DAYS_PER_YEAR = 365.0
OPTION_TICK_PAISE = 5  # stock options trade in Rs 0.05 steps

# NSE's strike intervals in paise. A stock of the shipped universe has its own step (the
# `strike_step_paise` column of data/fno_universe.csv); another falls back to the largest step
# not above 1 % of its spot.
_STRIKE_STEPS_PAISE = (50, 100, 250, 500, 1_000, 2_000, 5_000, 10_000, 25_000, 50_000)
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def monthly_expiry(year: int, month: int, calendar: NseCalendar, weekday: int = TUESDAY) -> date:
    """The monthly expiry of `year`-`month`: its last `weekday`, or the trading day before it
    when that day is a holiday."""
    last_day = _calendar.monthrange(year, month)[1]
    day = date(year, month, last_day)
    day -= timedelta(days=(day.weekday() - weekday) % 7)
    if not calendar.is_trading_day(day):
        day = calendar.previous_trading_day(day)
    return day


def monthly_expiries(trading_date: date, calendar: NseCalendar, count: int = 3) -> list[date]:
    """The next `count` monthly expiries on or after `trading_date`, nearest first."""
    if count < 1:
        raise ValueError("count must be at least 1")
    out: list[date] = []
    year, month = trading_date.year, trading_date.month
    while len(out) < count:
        expiry = monthly_expiry(year, month, calendar)
        if expiry >= trading_date:
            out.append(expiry)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


@cache
def shipped_strike_steps() -> Mapping[str, int]:
    """NSE's strike interval (paise) of each stock of the shipped universe, by trading symbol."""
    text = resources.files("upstox_bot.data").joinpath("fno_universe.csv").read_text("utf-8")
    steps: dict[str, int] = {}
    for row in csv.DictReader(io.StringIO(text)):
        value = (row.get("strike_step_paise") or "").strip()
        if value:
            steps[row["trading_symbol"]] = int(value)
    return steps


def strike_step_paise(spot_paise: int) -> int:
    """The fallback strike interval for a stock at `spot_paise`: about 0.5-1 % of the price."""
    if spot_paise <= 0:
        raise ValueError("spot must be positive")
    fitting = [step for step in _STRIKE_STEPS_PAISE if step * 100 <= spot_paise]
    return fitting[-1] if fitting else _STRIKE_STEPS_PAISE[0]


def years_to_expiry(expiry: date, at_ms: int) -> float:
    """Calendar years from `at_ms` (epoch ms UTC) to 15:30 IST on `expiry`; 0 once past it."""
    close = datetime.combine(expiry, EXPIRY_CLOSE, tzinfo=IST)
    close_ms = int(close.astimezone(UTC).timestamp() * 1000)
    return max(close_ms - at_ms, 0) / (DAYS_PER_YEAR * DAY_MS)


def future_price_paise(
    spot_paise: int,
    trading_date: date,
    expiry: date,
    *,
    carry_rate: float = 0.07,
    tick_size_paise: int = 5,
) -> int:
    """The fair future price: spot x exp(carry x days to expiry / 365), on the tick grid."""
    days = max((expiry - trading_date).days, 0)
    fair = spot_paise * math.exp(carry_rate * days / DAYS_PER_YEAR)
    return max(tick_size_paise, round(fair / tick_size_paise) * tick_size_paise)


def option_price_paise(
    option: Instrument,
    spot_paise: int,
    at_ms: int,
    *,
    sigma: float,
    r: float = 0.07,
) -> int:
    """The Black-Scholes premium of `option` at `at_ms`, on the Rs 0.05 grid, at least one tick.

    Raises:
        ValueError: `option` is not an option with a strike, type and expiry.
    """
    if option.strike_paise is None or option.option_type is None or option.expiry is None:
        raise ValueError(f"{option.instrument_key} is not an option with strike and expiry")
    t = years_to_expiry(date.fromisoformat(option.expiry), at_ms)
    tick = option.tick_size_paise
    if t <= 0:
        sign = 1 if option.option_type is OptionType.CALL else -1
        premium = max(sign * (spot_paise - option.strike_paise), 0)
    else:
        premium = round(
            bs_price(option.option_type.value, spot_paise, option.strike_paise, t, r, sigma)
        )
    return max(tick, round(premium / tick) * tick)


def _key_symbol(symbol: str) -> str:
    # Instrument keys allow word characters only after the segment ("M&M" -> "M_M").
    return re.sub(r"\W", "_", symbol)


def _expiry_text(expiry: date) -> str:
    return f"{expiry.day:02d} {_MONTHS[expiry.month - 1]} {expiry.year % 100:02d}"


def simulate_fno_chain(
    underlying: Instrument,
    spot_paise: int,
    trading_date: date,
    calendar: NseCalendar,
    *,
    lot_size: int | None = None,
    months: int = 3,
    strikes_each_side: int = 10,
    strike_step: int | None = None,
) -> list[Instrument]:
    """Futures and options of `underlying` for the next `months` monthly expiries.

    Each expiry gets one future and, around the at-the-money strike (the spot rounded to the
    strike step: the stock's NSE step from the shipped universe, else about 1 % of the spot),
    `strikes_each_side` strikes above and below (positive ones only), each with a call and a
    put. Keys look like "NSE_FO|SIM_SBIN_20261229_FUT" and
    "NSE_FO|SIM_SBIN_20261229_94000_CE" (strike in paise); trading symbols follow Upstox's
    "SBIN FUT 29 DEC 26" and "SBIN 940 CE 29 DEC 26".

    Args:
        underlying: the stock (its trading symbol names the contracts).
        spot_paise: the stock's price, which centres the strikes.
        trading_date: today's IST date; expiries before it are not listed.
        calendar: the NSE calendar (expiries move off holidays).
        lot_size: shares per lot; None takes `underlying.lot_size` (the shipped universe's F&O
            lot size when the instrument comes from `feed.sim.load_universe`).
        months: how many monthly expiries (NSE lists three).
        strikes_each_side: strikes above and below the at-the-money one.
        strike_step: the strike interval in paise; None: the stock's shipped NSE step, or the
            fallback `strike_step_paise`.

    Raises:
        ValueError: non-positive spot or lot size, or months / strikes_each_side out of range.
    """
    lots = underlying.lot_size if lot_size is None else lot_size
    if lots <= 0:
        raise ValueError("lot size must be positive")
    if strikes_each_side < 0:
        raise ValueError("strikes_each_side must not be negative")
    symbol = underlying.trading_symbol
    step = strike_step or shipped_strike_steps().get(symbol) or strike_step_paise(spot_paise)
    atm = max(step, round(spot_paise / step) * step)
    strikes = [
        atm + i * step
        for i in range(-strikes_each_side, strikes_each_side + 1)
        if atm + i * step > 0
    ]
    key_symbol = _key_symbol(symbol)
    out: list[Instrument] = []
    for expiry in monthly_expiries(trading_date, calendar, months):
        stamp = expiry.strftime("%Y%m%d")
        text = _expiry_text(expiry)
        base = Instrument(
            instrument_key=f"NSE_FO|SIM_{key_symbol}_{stamp}_FUT",
            trading_symbol=f"{symbol} FUT {text}",
            name=underlying.name,
            lot_size=lots,
            tick_size_paise=underlying.tick_size_paise,
            kind=InstrumentKind.FUTURE,
            exchange="NSE",
            segment="NSE_FO",
            sector=underlying.sector,
            underlying_symbol=symbol,
            expiry=expiry.isoformat(),
        )
        out.append(base)
        for strike in strikes:
            for option_type in (OptionType.CALL, OptionType.PUT):
                out.append(
                    replace(
                        base,
                        instrument_key=f"NSE_FO|SIM_{key_symbol}_{stamp}_{strike}_"
                        f"{option_type.value}",
                        trading_symbol=f"{symbol} {strike / 100:g} {option_type.value} {text}",
                        tick_size_paise=OPTION_TICK_PAISE,
                        kind=InstrumentKind.OPTION,
                        strike_paise=strike,
                        option_type=option_type,
                    )
                )
    return out

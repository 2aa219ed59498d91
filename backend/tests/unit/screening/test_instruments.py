"""The F&O universe from an instrument master: stocks only, no index, current contracts."""

from __future__ import annotations

import gzip
import json
from datetime import date
from importlib import resources
from typing import Any

import pytest

from upstox_bot.domain import InstrumentKind, OptionType
from upstox_bot.feed.sim import load_universe
from upstox_bot.screening.instruments import (
    INDEX_UNDERLYINGS,
    Liquidity,
    build_universe,
    expiry_date,
    rank_by_liquidity,
)

TODAY = date(2026, 11, 25)
SAMPLE = "upstox_instruments_sample.json.gz"


def sample_records() -> list[dict[str, Any]]:
    raw = resources.files("upstox_bot.data").joinpath(SAMPLE).read_bytes()
    records: list[dict[str, Any]] = json.loads(gzip.decompress(raw))
    return records


def future(
    symbol: str, underlying_key: str, expiry_ms: int, *, lot: int = 100, **extra: Any
) -> dict[str, Any]:
    record = {
        "segment": "NSE_FO",
        "exchange": "NSE",
        "instrument_type": "FUT",
        "instrument_key": f"NSE_FO|{symbol}{expiry_ms}",
        "trading_symbol": f"{symbol} FUT",
        "name": symbol,
        "underlying_symbol": symbol,
        "underlying_key": underlying_key,
        "underlying_type": "EQUITY",
        "expiry": expiry_ms,
        "lot_size": lot,
        "freeze_quantity": lot * 20.0,
        "tick_size": 10.0,
        "strike_price": 0.0,
    }
    return record | extra


def cash(symbol: str, isin: str) -> dict[str, Any]:
    return {
        "segment": "NSE_EQ",
        "exchange": "NSE",
        "instrument_type": "EQ",
        "instrument_key": f"NSE_EQ|{isin}",
        "isin": isin,
        "trading_symbol": symbol,
        "name": symbol,
        "lot_size": 1,
        "tick_size": 5.0,
    }


DEC_29 = 1798568999000  # 2026-12-29 23:59:59 IST
NOV_24 = 1795544999000  # 2026-11-24 23:59:59 IST


def test_expiry_ms_is_read_as_an_ist_date() -> None:
    assert expiry_date(DEC_29) == date(2026, 12, 29)
    assert expiry_date(NOV_24) == date(2026, 11, 24)


def test_shipped_sample_keeps_exactly_the_92_fno_stocks_and_no_index() -> None:
    universe = build_universe(sample_records(), TODAY)

    symbols = {stock.symbol for stock in universe.stocks}
    shipped = {instrument.trading_symbol for instrument, _ in load_universe()}
    assert symbols == shipped
    assert len(universe.stocks) == 92
    assert not symbols & INDEX_UNDERLYINGS
    assert set(universe.excluded_indices) == INDEX_UNDERLYINGS
    keys = {i.instrument_key for i in universe.instruments()}
    assert not any(k.startswith("NSE_INDEX|") for k in keys)
    assert not any(i.underlying_symbol in INDEX_UNDERLYINGS for i in universe.instruments())
    assert "SAMPLEAGRO" not in symbols  # cash-only stocks are not F&O stocks


def test_sample_stock_carries_its_lot_futures_and_options() -> None:
    sectors = {instrument.isin: instrument.sector for instrument, _ in load_universe()}
    universe = build_universe(sample_records(), TODAY, sectors=sectors)
    reliance = universe.by_key()["NSE_EQ|INE002A01018"]

    assert reliance.lot_size == 500
    assert reliance.equity.kind is InstrumentKind.EQUITY
    assert reliance.equity.segment == "NSE_EQ"
    assert reliance.equity.sector == "Oil Gas & Consumable Fuels"
    assert [f.expiry for f in reliance.futures] == ["2026-12-29", "2027-01-25", "2027-02-23"]
    assert reliance.near_future is not None
    assert reliance.near_future.trading_symbol == "RELIANCE FUT 29 DEC 26"
    assert all(f.kind is InstrumentKind.FUTURE and f.lot_size == 500 for f in reliance.futures)
    assert len(reliance.options) == 6
    strikes = sorted({o.strike_paise for o in reliance.options if o.strike_paise})
    assert len(strikes) == 3
    assert {o.option_type for o in reliance.options} == {OptionType.CALL, OptionType.PUT}
    assert reliance.freeze_quantity == 10000


def test_index_underlying_is_dropped_by_type_key_or_name() -> None:
    records = [
        cash("ACME", "INE000A00001"),
        future("ACME", "NSE_EQ|INE000A00001", DEC_29),
        # a new index Upstox might add: excluded because its type is INDEX
        future("NEWIDX", "NSE_INDEX|New Index", DEC_29, underlying_type="INDEX"),
        # mislabelled as EQUITY but keyed on an index: still excluded
        future("ODDIDX", "NSE_INDEX|Odd", DEC_29),
        # a known index symbol mislabelled as EQUITY: excluded by name
        future("FINNIFTY", "NSE_EQ|INE999X00001", DEC_29),
        cash("FINNIFTY", "INE999X00001"),
    ]
    universe = build_universe(records, TODAY)

    assert [s.symbol for s in universe.stocks] == ["ACME"]
    assert set(universe.excluded_indices) == {"NEWIDX", "ODDIDX", "FINNIFTY"}


def test_expired_contracts_are_dropped_and_lot_comes_from_the_nearest_live_future() -> None:
    records = [
        cash("ACME", "INE000A00001"),
        future("ACME", "NSE_EQ|INE000A00001", NOV_24, lot=50),  # expired yesterday
        future("ACME", "NSE_EQ|INE000A00001", DEC_29, lot=75),
        future("ACME", "NSE_EQ|INE000A00001", DEC_29 + 28 * 86_400_000, lot=80),
    ]
    universe = build_universe(records, TODAY)

    (stock,) = universe.stocks
    assert stock.lot_size == 75
    assert [f.lot_size for f in stock.futures] == [75, 80]
    assert universe.skipped == {"expired": 1}


def test_stock_without_a_cash_record_is_skipped_and_counted() -> None:
    universe = build_universe([future("GHOST", "NSE_EQ|INE000G00001", DEC_29)], TODAY)
    assert universe.stocks == ()
    assert universe.skipped == {"no_cash_record": 1}


def test_only_the_nearest_option_expiries_are_kept() -> None:
    def option(expiry_ms: int, kind: str) -> dict[str, Any]:
        return future(
            "ACME",
            "NSE_EQ|INE000A00001",
            expiry_ms,
            instrument_type=kind,
            instrument_key=f"NSE_FO|{kind}{expiry_ms}",
            strike_price=100.5,
        )

    months = [DEC_29 + n * 28 * 86_400_000 for n in range(3)]
    records = [cash("ACME", "INE000A00001"), future("ACME", "NSE_EQ|INE000A00001", DEC_29)]
    records += [option(m, kind) for m in months for kind in ("CE", "PE")]

    (stock,) = build_universe(records, TODAY, option_expiries=2).stocks
    assert len(stock.options) == 4
    assert {o.strike_paise for o in stock.options} == {10050}


def test_rank_prefers_quote_data_then_proxy_then_unknown() -> None:
    ranks = rank_by_liquidity(
        {
            "A": Liquidity(proxy_paise=9_000_000),
            "B": Liquidity(traded_value_paise=10, open_interest=5),
            "C": Liquidity(traded_value_paise=500, open_interest=1),
            "D": Liquidity(),
            "E": Liquidity(traded_value_paise=10, open_interest=9),
            "F": Liquidity(proxy_paise=10_000_000),
        }
    )
    assert sorted(ranks, key=ranks.__getitem__) == ["C", "E", "B", "F", "A", "D"]
    assert sorted(ranks.values()) == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("tick", [5.0, "10", None, "bad"])
def test_tick_size_in_paise_is_an_integer_of_at_least_one(tick: object) -> None:
    records = [cash("ACME", "INE000A00001") | {"tick_size": tick}]
    records.append(future("ACME", "NSE_EQ|INE000A00001", DEC_29))
    (stock,) = build_universe(records, TODAY).stocks
    expected: dict[object, int] = {5.0: 5, "10": 10}
    assert stock.equity.tick_size_paise == expected.get(tick, 1)

"""The NSE F&O stock universe, derived from Upstox's instrument master (API.md 2.4).

Plain Python: records in (the flat dicts of the instrument file), instruments and a liquidity
ranking out. The F&O stocks are the underlyings of NSE_FO futures whose ``underlying_type`` is
``EQUITY`` (and whose ``underlying_key`` is an ``NSE_EQ`` key); everything on an index
(``underlying_type`` ``INDEX``: NIFTY, BANKNIFTY, FINNIFTY, MIDCPNIFTY, NIFTYNXT50 and any index
Upstox adds) is dropped, and the known index symbols are dropped by name as well.

Each stock's cash instrument (``NSE_EQ|<ISIN>``) is stored with the lot size of its nearest
unexpired future, because the bot trades F&O stocks in whole lots; its futures and its options
of the nearest expiries are stored too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from upstox_bot.domain import IST, Instrument, InstrumentKind, OptionType, rupees_to_paise

INDEX_UNDERLYINGS = frozenset({"NIFTY", "BANKNIFTY", "FINNIFTY", "MIDCPNIFTY", "NIFTYNXT50"})
"""Index underlyings named by the trader's brief; any ``INDEX`` underlying is excluded too."""

DEFAULT_OPTION_EXPIRIES = 2
"""Option contracts of this many nearest expiries are kept per stock."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UniverseStock:
    """One F&O stock: its cash instrument and current derivatives.

    ``equity.lot_size`` is the F&O lot of the nearest future (not 1, as in the cash segment).
    """

    symbol: str
    equity: Instrument
    freeze_quantity: int  # of the nearest future: orders above it must be sliced
    futures: tuple[Instrument, ...]  # unexpired, nearest first
    options: tuple[Instrument, ...]  # of the nearest expiries, by expiry, strike, type

    @property
    def lot_size(self) -> int:
        return self.equity.lot_size

    @property
    def near_future(self) -> Instrument | None:
        """The current-month future, or None when the file holds no unexpired one."""
        return self.futures[0] if self.futures else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Universe:
    """The result of :func:`build_universe`."""

    trading_date: date
    stocks: tuple[UniverseStock, ...]  # by symbol
    excluded_indices: tuple[str, ...]  # index underlyings seen and dropped, sorted
    skipped: Mapping[str, int] = field(default_factory=dict)  # reason -> records

    def instruments(self) -> list[Instrument]:
        """Every instrument to store: each stock's cash instrument, futures and options."""
        out: list[Instrument] = []
        for stock in self.stocks:
            out.append(stock.equity)
            out.extend(stock.futures)
            out.extend(stock.options)
        return out

    def by_key(self) -> dict[str, UniverseStock]:
        """The stocks by the instrument key of their cash instrument."""
        return {stock.equity.instrument_key: stock for stock in self.stocks}


def expiry_date(expiry_ms: int) -> date:
    """The IST calendar date of an instrument file ``expiry`` (epoch ms of 23:59:59 IST)."""
    return datetime.fromtimestamp(expiry_ms / 1000, tz=IST).date()


def tick_paise(value: Any) -> int:
    """Integer paise for the file's ``tick_size`` (already in paise, e.g. ``5.0``); at least 1."""
    try:
        paise = round(float(value))
    except (TypeError, ValueError):
        return 1
    return max(paise, 1)


def _is_index_underlying(record: Mapping[str, Any]) -> bool:
    symbol = str(record.get("underlying_symbol") or "").upper()
    key = str(record.get("underlying_key") or "")
    kind = str(record.get("underlying_type") or "").upper()
    return kind == "INDEX" or symbol in INDEX_UNDERLYINGS or "_INDEX|" in key


def _is_stock_underlying(record: Mapping[str, Any]) -> bool:
    kind = str(record.get("underlying_type") or "").upper()
    key = str(record.get("underlying_key") or "")
    return kind == "EQUITY" and key.startswith("NSE_EQ|") and not _is_index_underlying(record)


def _derivative(record: Mapping[str, Any], kind: InstrumentKind, expiry: date) -> Instrument:
    option_type = None
    strike = None
    if kind is InstrumentKind.OPTION:
        option_type = OptionType(str(record["instrument_type"]))
        strike = rupees_to_paise(str(record.get("strike_price") or 0))
    return Instrument(
        instrument_key=str(record["instrument_key"]),
        trading_symbol=str(record.get("trading_symbol") or ""),
        name=str(record.get("name") or ""),
        lot_size=int(record.get("lot_size") or 1),
        tick_size_paise=tick_paise(record.get("tick_size")),
        kind=kind,
        exchange=str(record.get("exchange") or "NSE"),
        segment=str(record.get("segment") or "NSE_FO"),
        underlying_symbol=str(record.get("underlying_symbol") or "") or None,
        expiry=expiry.isoformat(),
        strike_paise=strike,
        option_type=option_type,
    )


def build_universe(
    records: Iterable[Mapping[str, Any]],
    trading_date: date,
    *,
    option_expiries: int = DEFAULT_OPTION_EXPIRIES,
    sectors: Mapping[str, str] | None = None,
) -> Universe:
    """Derive the F&O stock universe from instrument-file records (API.md 2.2, 2.4).

    Args:
        records: the instrument file's records (``NSE.json.gz`` or ``complete.json.gz``).
        trading_date: the IST session date; contracts that expired before it are dropped.
        option_expiries: keep options of this many nearest unexpired expiries (0 = none).
        sectors: optional sector by ISIN, copied onto the cash instruments.

    Returns:
        The stocks (sorted by symbol), the index underlyings dropped, and counts of records
        skipped by reason (``expired``, ``no_cash_record``, ``malformed``).
    """
    equities: dict[str, Mapping[str, Any]] = {}
    derivatives: dict[str, list[tuple[date, Mapping[str, Any]]]] = {}
    excluded: set[str] = set()
    skipped: dict[str, int] = {}

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    for record in records:
        segment = record.get("segment")
        if segment == "NSE_EQ":
            equities[str(record.get("instrument_key"))] = record
            continue
        if segment != "NSE_FO" or record.get("instrument_type") not in ("FUT", "CE", "PE"):
            continue
        if _is_index_underlying(record):
            excluded.add(str(record.get("underlying_symbol") or record.get("underlying_key")))
            continue
        if not _is_stock_underlying(record):
            continue
        try:
            expiry = expiry_date(int(record["expiry"]))
        except (KeyError, TypeError, ValueError, OverflowError, OSError):
            skip("malformed")
            continue
        if expiry < trading_date:
            skip("expired")
            continue
        derivatives.setdefault(str(record["underlying_key"]), []).append((expiry, record))

    stocks: list[UniverseStock] = []
    for underlying_key, contracts in derivatives.items():
        futures = sorted((c for c in contracts if c[1]["instrument_type"] == "FUT"), key=_order)
        if not futures:
            continue  # options without a future: not an F&O stock listing we trust
        cash = equities.get(underlying_key)
        if cash is None:
            skip("no_cash_record")
            continue
        stocks.append(_stock(cash, futures, contracts, option_expiries, sectors or {}))
    stocks.sort(key=lambda s: s.symbol)
    return Universe(
        trading_date=trading_date,
        stocks=tuple(stocks),
        excluded_indices=tuple(sorted(excluded)),
        skipped=skipped,
    )


def _order(contract: tuple[date, Mapping[str, Any]]) -> tuple[date, float, str]:
    expiry, record = contract
    return expiry, float(record.get("strike_price") or 0), str(record.get("instrument_type"))


def _stock(
    cash: Mapping[str, Any],
    futures: list[tuple[date, Mapping[str, Any]]],
    contracts: list[tuple[date, Mapping[str, Any]]],
    option_expiries: int,
    sectors: Mapping[str, str],
) -> UniverseStock:
    near = futures[0][1]
    isin = str(cash.get("isin") or "")
    equity = Instrument(
        instrument_key=str(cash["instrument_key"]),
        trading_symbol=str(cash.get("trading_symbol") or ""),
        name=str(cash.get("name") or ""),
        isin=isin,
        lot_size=int(near.get("lot_size") or 1),
        tick_size_paise=tick_paise(cash.get("tick_size")),
        kind=InstrumentKind.EQUITY,
        exchange=str(cash.get("exchange") or "NSE"),
        segment="NSE_EQ",
        sector=sectors.get(isin, ""),
        underlying_symbol=str(near.get("underlying_symbol") or "") or None,
    )
    options = sorted((c for c in contracts if c[1]["instrument_type"] in ("CE", "PE")), key=_order)
    kept_expiries = sorted({expiry for expiry, _ in options})[:option_expiries]
    return UniverseStock(
        symbol=equity.trading_symbol,
        equity=equity,
        freeze_quantity=int(float(near.get("freeze_quantity") or 0)),
        futures=tuple(_derivative(r, InstrumentKind.FUTURE, e) for e, r in futures),
        options=tuple(
            _derivative(r, InstrumentKind.OPTION, e) for e, r in options if e in kept_expiries
        ),
    )


# --- liquidity ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Liquidity:
    """What is known of one stock's liquidity; larger is more liquid.

    ``traded_value_paise`` (today's volume times price of its near future, from quotes) ranks
    first, then ``open_interest``; ``proxy_paise`` (lot size times price) only ranks stocks that
    have no quote data.
    """

    traded_value_paise: int | None = None
    open_interest: int | None = None
    proxy_paise: int | None = None


def rank_by_liquidity(liquidity: Mapping[str, Liquidity]) -> dict[str, int]:
    """Rank keys by liquidity: 1 = most liquid. Ties and unknowns keep a stable key order.

    Stocks with quote data come first (by traded value, then open interest), then stocks ranked
    by the proxy, then stocks with nothing known (by key).
    """

    def sort_key(item: tuple[str, Liquidity]) -> tuple[int, int, int, str]:
        key, known = item
        if known.traded_value_paise is not None or known.open_interest is not None:
            return (0, -(known.traded_value_paise or 0), -(known.open_interest or 0), key)
        if known.proxy_paise is not None:
            return (1, -known.proxy_paise, 0, key)
        return (2, 0, 0, key)

    ordered = sorted(liquidity.items(), key=sort_key)
    return {key: rank for rank, (key, _) in enumerate(ordered, start=1)}

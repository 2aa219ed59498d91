"""The F&O universe's refresh, the pure part: reports, the local files, the liquidity ranking.

What does not fetch or store: reading a local instrument master or ban-list file, and the
liquidity of each stock from what is known of it. Liquidity (API.md 7.1): the instrument file
carries no volumes, so the ranking uses the full market quotes of each stock's near-month future
when there are some (traded value = volume x last price, then open interest). Without a quote it
falls back to a stated proxy: lot size x price (the stored last price, else the approximate price
of the shipped ``fno_universe.csv``). The proxy is weak (NSE sizes lots to similar contract
values) and the report says which was used. The refresh itself, which downloads and writes the
``symbols`` table, is the adapter :mod:`upstox_bot.upstox.universe`.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Protocol

from upstox_bot.errors import ConfigError
from upstox_bot.feed.sim import load_universe
from upstox_bot.screening.ban_list import BanList, parse_ban_list
from upstox_bot.screening.instruments import Liquidity, Universe


@dataclass(frozen=True, slots=True, kw_only=True)
class BanListReport:
    """What a ban-list refresh did."""

    source: str
    symbols: tuple[str, ...]  # banned symbols found in the list, sorted
    banned_keys: int  # instruments marked in_ban (stocks and their derivatives)
    unknown_symbols: tuple[str, ...]  # listed but not in the stored universe
    trade_date: date | None
    stale: bool  # the list names another trade date than today's


@dataclass(frozen=True, slots=True, kw_only=True)
class UniverseReport:
    """What a universe refresh did."""

    source: str
    trading_date: date
    stocks: int
    futures: int
    options: int
    excluded_indices: tuple[str, ...]
    deactivated: int
    ranked_by: str  # "quotes", "proxy" or "quotes+proxy"
    top: tuple[str, ...]  # the ten most liquid symbols
    skipped: Mapping[str, int] = field(default_factory=dict)
    ban: BanListReport | None = None
    calendar_days: int | None = None  # NSE calendar rows stored from Upstox; None: not fetched
    ban_error: str | None = None  # the ban list could not be read: the last known list stays


class FutureQuote(Protocol):
    """What the ranking reads of a near-month future's market quote."""

    @property
    def last_price_paise(self) -> int: ...

    @property
    def volume(self) -> int: ...

    @property
    def oi(self) -> int: ...


def read_instrument_file(path: Path) -> list[dict[str, Any]]:
    """Records of a local instrument file: Upstox's gzipped JSON array, or the plain JSON.

    Raises:
        ValueError: the file is not a JSON array.
        OSError: it cannot be read.
    """
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    records = json.loads(raw)
    if not isinstance(records, list):
        raise ValueError(f"{path}: not a JSON array of instrument records")
    return [r for r in records if isinstance(r, dict)]


def read_ban_list_file(path: Path) -> BanList:
    """Read a ban list from a local file.

    Raises:
        ConfigError: the file cannot be read.
    """
    try:
        text = path.expanduser().read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"FNO_BAN_LIST {path}: {exc.strerror or exc}") from exc
    return parse_ban_list(text)


def shipped_prices() -> dict[str, int]:
    """Approximate price of each stock of the shipped universe, by ISIN (the proxy's fallback)."""
    return {instrument.isin: price for instrument, price in load_universe()}


def shipped_sectors() -> dict[str, str]:
    """Sector of each stock of the shipped universe, by ISIN."""
    return {instrument.isin: instrument.sector for instrument, _ in load_universe()}


def liquidity_of(
    universe: Universe,
    quotes: Mapping[str, FutureQuote],
    known_prices: Mapping[str, int],
    shipped: Mapping[str, int],
) -> tuple[dict[str, Liquidity], str]:
    """Each stock's liquidity (see the module doc), and the basis: "quotes", "proxy" or both.

    Args:
        universe: the stocks.
        quotes: market quotes by the future's instrument key.
        known_prices: stored last prices by the stock's instrument key.
        shipped: the shipped approximate prices by ISIN.
    """
    liquidity: dict[str, Liquidity] = {}
    used: set[str] = set()
    for stock in universe.stocks:
        key = stock.equity.instrument_key
        future = stock.near_future
        quote = quotes.get(future.instrument_key) if future is not None else None
        if quote is not None and (quote.volume or quote.oi):
            liquidity[key] = Liquidity(
                traded_value_paise=quote.volume * quote.last_price_paise,
                open_interest=quote.oi,
            )
            used.add("quotes")
            continue
        price = known_prices.get(key) or shipped.get(stock.equity.isin)
        liquidity[key] = Liquidity(proxy_paise=stock.lot_size * price if price else None)
        used.add("proxy")
    return liquidity, "+".join(sorted(used)) or "proxy"

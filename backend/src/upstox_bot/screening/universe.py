"""Refresh the stored F&O universe and ban list: instrument master in, ``symbols`` table out.

The adapter around :mod:`upstox_bot.screening.instruments` and :mod:`.ban_list`: it downloads
Upstox's instrument master (or reads a local copy), ranks the stocks by liquidity, writes the
``symbols`` table in the caller's transaction, and marks the stocks of the F&O ban list.

Liquidity (API.md 7.1): the instrument file carries no volumes, so the ranking uses the full
market quotes of each stock's near-month future when an Upstox token is usable (traded value =
volume x last price, then open interest). Without quotes it falls back to a stated proxy: lot size
x price (the stored last price, else the approximate price of the shipped ``fno_universe.csv``).
The proxy is weak (NSE sizes lots to similar contract values) and the report says which was used.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from upstox_bot.clock import CalendarDay
from upstox_bot.config import Settings
from upstox_bot.db.models import SymbolRow
from upstox_bot.db.repositories.symbols import SymbolRepository
from upstox_bot.domain import IST
from upstox_bot.errors import ConfigError, UpstoxBotError
from upstox_bot.feed.sim import load_universe
from upstox_bot.screening.ban_list import BanList, parse_ban_list
from upstox_bot.screening.instruments import (
    Liquidity,
    Universe,
    build_universe,
    rank_by_liquidity,
)
from upstox_bot.upstox.client import UpstoxClient
from upstox_bot.upstox.errors import UpstoxApiError
from upstox_bot.upstox.holidays import fetch_calendar_days, store_calendar_days
from upstox_bot.upstox.models import FullQuote
from upstox_bot.upstox.token_store import access_token_in

log = logging.getLogger(__name__)

INSTRUMENT_FILE = "NSE"
BAN_LIST_TIMEOUT_S = 20.0
_BROWSER_HEADERS = {
    # NSE's archive refuses requests without a browser-like user agent.
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) upstox-bot",
    "Accept": "text/csv,text/plain,*/*",
}


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


def _shipped_prices() -> dict[str, int]:
    return {instrument.isin: price for instrument, price in load_universe()}


def _shipped_sectors() -> dict[str, str]:
    return {instrument.isin: instrument.sector for instrument, _ in load_universe()}


async def _quotes(client: UpstoxClient, universe: Universe) -> dict[str, FullQuote]:
    keys = [s.near_future.instrument_key for s in universe.stocks if s.near_future is not None]
    try:
        return await client.full_quotes(keys)
    except UpstoxApiError as exc:
        log.warning("universe.quotes.unavailable", extra={"error": str(exc)})
        return {}


def _liquidity(
    universe: Universe,
    quotes: Mapping[str, FullQuote],
    known_prices: Mapping[str, int],
    shipped_prices: Mapping[str, int],
) -> tuple[dict[str, Liquidity], str]:
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
        price = known_prices.get(key) or shipped_prices.get(stock.equity.isin)
        liquidity[key] = Liquidity(proxy_paise=stock.lot_size * price if price else None)
        used.add("proxy")
    return liquidity, "+".join(sorted(used)) or "proxy"


async def refresh_universe(
    session: Session,
    settings: Settings,
    *,
    now: datetime | None = None,
    source: Path | None = None,
    client: UpstoxClient | None = None,
    ban_source: str | None = None,
) -> UniverseReport:
    """Rebuild the stored F&O universe from the instrument master (in the caller's transaction).

    Args:
        session: the unit of work; the caller commits.
        settings: UPSTOX_API_BASE_URL and FNO_BAN_LIST are read from it.
        now: the current time (aware); default the wall clock. Its IST date is the trading date.
        source: a local instrument file (``.json.gz`` or ``.json``) instead of the download.
        client: the Upstox client for the download and the quotes; when None one is made with
            the stored (or UPSTOX_ACCESS_TOKEN) token, and without a usable token the quotes are
            skipped and the proxy ranking is used.
        ban_source: a ban-list path or URL; default FNO_BAN_LIST (unset: ban flags unchanged).

    Returns:
        Counts, the ranking basis, the top symbols and the ban-list report.

    Raises:
        UpstoxUnavailable: the download failed.
        ValueError, OSError: the local file cannot be read.
    """
    at = now or datetime.now(UTC)
    trading_date = at.astimezone(IST).date()
    own_client = client is None
    token: SecretStr | None = None
    if client is None:
        token = access_token_in(session, settings, at)
        client = UpstoxClient(
            access_token=lambda: token or "", api_base_url=settings.UPSTOX_API_BASE_URL
        )
    try:
        if source is not None:
            records = read_instrument_file(source)
            source_name = str(source)
        else:
            records = await client.download_instruments(INSTRUMENT_FILE)
            source_name = f"{client.assets_base_url} {INSTRUMENT_FILE}.json.gz"
        universe = build_universe(records, trading_date, sectors=_shipped_sectors())
        quotes = await _quotes(client, universe) if not own_client or token else {}
        holidays = await _holidays(client) if not own_client or token else None
    finally:
        if own_client:
            await client.aclose()

    symbols = SymbolRepository(session)
    instruments = universe.instruments()
    symbols.upsert_many(instruments, at)
    deactivated = symbols.deactivate_missing([i.instrument_key for i in instruments], at)
    known = {
        key: price
        for key, price in session.execute(
            select(SymbolRow.instrument_key, SymbolRow.last_price_paise).where(
                SymbolRow.segment == "NSE_EQ", SymbolRow.last_price_paise.is_not(None)
            )
        ).all()
        if price is not None
    }
    liquidity, ranked_by = _liquidity(universe, quotes, known, _shipped_prices())
    ranks = rank_by_liquidity(liquidity)
    symbols.set_liquidity_ranks(ranks, at)
    by_key = universe.by_key()
    top = tuple(by_key[key].symbol for key, _ in sorted(ranks.items(), key=lambda kv: kv[1])[:10])
    quote_prices = {
        stock.equity.instrument_key: quotes[stock.near_future.instrument_key].last_price_paise
        for stock in universe.stocks
        if stock.near_future is not None and stock.near_future.instrument_key in quotes
    }
    if quote_prices:
        symbols.set_last_prices(quote_prices, at)
    stored_days = (
        store_calendar_days(session, holidays, year=trading_date.year, at=at)
        if holidays is not None
        else None
    )
    ban_location = ban_source or settings.FNO_BAN_LIST
    ban = await refresh_ban_list(session, ban_location, now=at) if ban_location else None
    report = UniverseReport(
        source=source_name,
        trading_date=trading_date,
        stocks=len(universe.stocks),
        futures=sum(len(s.futures) for s in universe.stocks),
        options=sum(len(s.options) for s in universe.stocks),
        excluded_indices=universe.excluded_indices,
        deactivated=deactivated,
        ranked_by=ranked_by,
        top=top,
        skipped=dict(universe.skipped),
        ban=ban,
        calendar_days=stored_days,
    )
    log.info(
        "universe.refreshed",
        extra={"stocks": report.stocks, "ranked_by": ranked_by, "deactivated": deactivated},
    )
    return report


async def _holidays(client: UpstoxClient) -> list[CalendarDay] | None:
    """This year's NSE holidays from Upstox; None (the stored calendar stays) if the call fails."""
    try:
        return await fetch_calendar_days(client)
    except UpstoxBotError as exc:
        log.warning("calendar.upstox_fetch_failed", extra={"error": str(exc)})
        return None


async def read_ban_list(
    location: str, *, transport: httpx.AsyncBaseTransport | None = None
) -> BanList:
    """Read a ban list from a file path or an http(s) URL.

    Raises:
        ConfigError: the location cannot be read (missing file, HTTP error).
    """
    if location.startswith(("http://", "https://")):
        try:
            async with httpx.AsyncClient(
                timeout=BAN_LIST_TIMEOUT_S, follow_redirects=True, transport=transport
            ) as http:
                response = await http.get(location, headers=_BROWSER_HEADERS)
                response.raise_for_status()
        except httpx.HTTPError as exc:
            raise ConfigError(f"FNO_BAN_LIST {location}: {type(exc).__name__}: {exc}") from exc
        return parse_ban_list(response.text)
    return read_ban_list_file(Path(location))


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


def apply_ban_list(
    session: Session, ban: BanList, *, at: datetime, source: str = ""
) -> BanListReport:
    """Mark every stored instrument of the banned stocks (the stock and its derivatives) in_ban,
    and clear the flag everywhere else (in the caller's transaction)."""
    banned = sorted(ban.symbols)
    rows: list[tuple[str, str, str | None]] = []
    if banned:
        stmt = select(
            SymbolRow.instrument_key, SymbolRow.trading_symbol, SymbolRow.underlying_symbol
        ).where(or_(SymbolRow.trading_symbol.in_(banned), SymbolRow.underlying_symbol.in_(banned)))
        rows = [(key, symbol, under) for key, symbol, under in session.execute(stmt).all()]
    keys: list[str] = []
    found: set[str] = set()
    for key, symbol, underlying in rows:
        keys.append(key)
        found.update(s for s in (symbol, underlying) if s in ban.symbols)
    SymbolRepository(session).set_ban_list(keys, at)
    trading_date = at.astimezone(IST).date()
    report = BanListReport(
        source=source,
        symbols=tuple(banned),
        banned_keys=len(keys),
        unknown_symbols=tuple(s for s in banned if s not in found),
        trade_date=ban.trade_date,
        stale=ban.is_stale(trading_date),
    )
    if report.stale:
        log.warning(
            "ban_list.stale",
            extra={"trade_date": str(ban.trade_date), "today": trading_date.isoformat()},
        )
    return report


async def refresh_ban_list(
    session: Session, location: str, *, now: datetime | None = None
) -> BanListReport:
    """Read the ban list at ``location`` and apply it (see :func:`apply_ban_list`).

    Raises:
        ConfigError: the list cannot be read; the stored flags are left as they were.
    """
    ban = await read_ban_list(location)
    return apply_ban_list(session, ban, at=now or datetime.now(UTC), source=location)


def banned_symbols(session: Session) -> set[str]:
    """Trading symbols of the active stocks currently in the ban period (for the entry check)."""
    stmt = select(SymbolRow.trading_symbol).where(
        SymbolRow.in_ban.is_(True), SymbolRow.is_active.is_(True), SymbolRow.segment == "NSE_EQ"
    )
    return set(session.scalars(stmt))


def banned_instrument_keys(session: Session) -> set[str]:
    """Keys of every active instrument (stocks and their derivatives) in the F&O ban period.

    The entry check of a harness: refuse a new position in any of these.
    """
    stmt = select(SymbolRow.instrument_key).where(
        SymbolRow.in_ban.is_(True), SymbolRow.is_active.is_(True)
    )
    return set(session.scalars(stmt))

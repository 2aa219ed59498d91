"""Refresh the stored F&O universe and ban list: instrument master in, ``symbols`` table out.

The adapter around :mod:`upstox_bot.screening` (``instruments``, ``ban_list`` and the pure part
of the refresh, ``universe``): it downloads Upstox's instrument master (or reads a local copy),
ranks the stocks by liquidity with the quotes of their near-month futures when an Upstox token
is usable, stores NSE's holidays from Upstox, writes the ``symbols`` table in the caller's
transaction, and marks the stocks of the F&O ban list (NSE's file, read over HTTP or locally).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import httpx
from pydantic import SecretStr
from sqlalchemy.orm import Session

from upstox_bot.clock import CalendarDay
from upstox_bot.config import Settings
from upstox_bot.db.repositories.audit import AuditRepository
from upstox_bot.db.repositories.symbols import SymbolRepository
from upstox_bot.domain import IST, AuditRecord
from upstox_bot.errors import ConfigError, UpstoxBotError
from upstox_bot.screening.ban_list import BanList, parse_ban_list
from upstox_bot.screening.instruments import Universe, build_universe, rank_by_liquidity
from upstox_bot.screening.universe import (
    BanListReport,
    UniverseReport,
    liquidity_of,
    read_ban_list_file,
    read_instrument_file,
    shipped_prices,
    shipped_sectors,
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


async def _quotes(client: UpstoxClient, universe: Universe) -> dict[str, FullQuote]:
    keys = [s.near_future.instrument_key for s in universe.stocks if s.near_future is not None]
    try:
        return await client.full_quotes(keys)
    except UpstoxApiError as exc:
        log.warning("universe.quotes.unavailable", extra={"error": str(exc)})
        return {}


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
        universe = build_universe(records, trading_date, sectors=shipped_sectors())
        quotes = await _quotes(client, universe) if not own_client or token else {}
        holidays = await _holidays(client) if not own_client or token else None
    finally:
        if own_client:
            await client.aclose()

    symbols = SymbolRepository(session)
    instruments = universe.instruments()
    symbols.upsert_many(instruments, at)
    deactivated = symbols.deactivate_missing([i.instrument_key for i in instruments], at)
    known = symbols.stock_last_prices()
    liquidity, ranked_by = liquidity_of(universe, quotes, known, shipped_prices())
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
    ban: BanListReport | None = None
    ban_error: str | None = None
    if ban_location:
        try:
            ban = await refresh_ban_list(session, ban_location, now=at)
        except ConfigError as exc:
            # NSE's file is often slow or refused: the morning refresh must still finish, and
            # the stocks banned yesterday stay banned (a ban lasts days) until a list is read.
            ban_error = str(exc)
            ban = keep_last_ban_list(session, error=ban_error, source=ban_location, at=at)
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
        ban_error=ban_error,
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


def apply_ban_list(
    session: Session, ban: BanList, *, at: datetime, source: str = ""
) -> BanListReport:
    """Mark every stored instrument of the banned stocks (the stock and its derivatives) in_ban,
    and clear the flag everywhere else (in the caller's transaction)."""
    banned = sorted(ban.symbols)
    symbols = SymbolRepository(session)
    rows = symbols.of_underlyings(banned)
    keys: list[str] = []
    found: set[str] = set()
    for key, symbol, underlying in rows:
        keys.append(key)
        found.update(s for s in (symbol, underlying) if s in ban.symbols)
    symbols.set_ban_list(keys, at)
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


def keep_last_ban_list(session: Session, *, error: str, source: str, at: datetime) -> BanListReport:
    """The ban list could not be read: apply the last known one again (so new contracts of a
    banned stock are banned too) and record the failure (audit ``universe.ban_list_failed``,
    which raises the ``ban_list_failed`` alert)."""
    kept = sorted(SymbolRepository(session).banned_symbols())
    report = apply_ban_list(session, BanList(symbols=frozenset(kept)), at=at, source=source)
    log.error("universe.ban_list_failed", extra={"error": error, "kept": len(kept)})
    AuditRepository(session).add(
        AuditRecord(
            event="universe.ban_list_failed",
            entity="universe",
            entity_id=source[:64],
            at=at,
            data={"error": error, "kept": len(kept), "symbols": kept},
            actor="universe_refresh",
        )
    )
    return report

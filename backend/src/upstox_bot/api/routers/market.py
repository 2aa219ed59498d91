"""Symbols (the F&O universe), candles and latest quotes."""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import ColumnElement, or_
from sqlalchemy.orm import Session

from upstox_bot.api.auth import TradeActor
from upstox_bot.api.deps import SessionDep, SettingsDep, ViewDep
from upstox_bot.api.errors import NotAvailable
from upstox_bot.api.queries import (
    PRINTABLE,
    TOTAL_DOC,
    TOTAL_HEADER,
    Filter,
    Limit,
    Offset,
    PathId,
    Since,
    Until,
    page,
)
from upstox_bot.api.routing import GuardedRoute
from upstox_bot.api.schemas.common import ERRORS, ErrorBody
from upstox_bot.api.schemas.market import CandleRead, QuoteRead, RefreshRead, SymbolRead
from upstox_bot.db.base import jsonable
from upstox_bot.db.models import SymbolRow
from upstox_bot.db.repositories.candles import CandleRepository
from upstox_bot.db.repositories.symbols import SymbolRecord, SymbolRepository, symbol_from_row
from upstox_bot.db.repositories.ticks import TickRepository
from upstox_bot.domain import InstrumentKind, ms_to_datetime, paise_to_rupees
from upstox_bot.errors import Conflict, NotFound

if TYPE_CHECKING:
    from upstox_bot.runtime.control import KernelView

router = APIRouter(tags=["market"], responses=ERRORS, route_class=GuardedRoute)

SYMBOL_SORT = {
    "trading_symbol": SymbolRow.trading_symbol,
    "liquidity_rank": SymbolRow.liquidity_rank,
    "updated_at": SymbolRow.updated_at,
}
SymbolSort = Literal["trading_symbol", "-trading_symbol", "liquidity_rank", "-updated_at"]
UNIVERSE_MODULE = "upstox_bot.upstox.universe"


def find_symbol(session: Session, key_or_symbol: str) -> SymbolRecord:
    """An instrument by its key or its trading symbol.

    Raises:
        NotFound: neither matches.
    """
    repo = SymbolRepository(session)
    record = repo.get_or_none(key_or_symbol)
    if record is not None:
        return record
    try:
        return repo.get_by_symbol(key_or_symbol)
    except Conflict as exc:
        raise NotFound(f"{exc}: use the instrument key") from None


@router.get("/symbols", response_model=list[SymbolRead], responses={200: TOTAL_DOC})
def list_symbols(
    response: Response,
    session: SessionDep,
    q: Annotated[
        str | None,
        Query(max_length=64, pattern=PRINTABLE, description="Trading symbol or name contains."),
    ] = None,
    kind: InstrumentKind | None = None,
    segment: Filter = None,
    underlying_symbol: Filter = None,
    active: bool = True,
    exclude_banned: bool = False,
    sort: SymbolSort = "trading_symbol",
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[SymbolRead]:
    """The instruments the bot knows (the F&O universe); X-Total-Count holds how many match."""
    where: list[ColumnElement[bool]] = []
    if q:
        pattern = f"%{q.upper()}%"
        where.append(or_(SymbolRow.trading_symbol.like(pattern), SymbolRow.name.ilike(f"%{q}%")))
    if kind is not None:
        where.append(SymbolRow.kind == kind.value)
    if segment is not None:
        where.append(SymbolRow.segment == segment)
    if underlying_symbol is not None:
        where.append(SymbolRow.underlying_symbol == underlying_symbol)
    if active:
        where.append(SymbolRow.is_active.is_(True))
    if exclude_banned:
        where.append(SymbolRow.in_ban.is_(False))
    rows, total = page(
        session, SymbolRow, where=where, sort=sort, columns=SYMBOL_SORT, limit=limit, offset=offset
    )
    response.headers[TOTAL_HEADER] = str(total)
    return [SymbolRead.of(symbol_from_row(row)) for row in rows]


@router.post(
    "/symbols/refresh",
    response_model=RefreshRead,
    responses={
        501: {"model": ErrorBody},
        503: {"model": ErrorBody, "description": "Upstox could not be reached."},
    },
)
async def refresh_symbols(session: SessionDep, settings: SettingsDep, actor: TradeActor) -> Any:
    """Refresh the F&O universe from the Upstox instrument master (index underlyings excluded).
    501 when this installation has no universe refresh."""
    try:
        module = importlib.import_module(UNIVERSE_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name not in (UNIVERSE_MODULE, "upstox_bot.upstox"):
            raise
        module = None
    refresh = getattr(module, "refresh_universe", None)
    if refresh is None:
        raise NotAvailable(
            "the F&O universe refresh is not part of this installation yet "
            f"({UNIVERSE_MODULE}.refresh_universe)"
        )
    if inspect.iscoroutinefunction(refresh):
        result = await refresh(session, settings)
    else:
        result = await run_in_threadpool(refresh, session, settings)
    return RefreshRead(status="refreshed", result=jsonable(result))


@router.get(
    "/symbols/{instrument_key}", response_model=SymbolRead, responses={404: {"model": ErrorBody}}
)
def read_symbol(instrument_key: PathId, session: SessionDep) -> SymbolRead:
    """One instrument, by key (e.g. NSE_EQ|INE002A01018) or trading symbol (e.g. RELIANCE)."""
    return SymbolRead.of(find_symbol(session, instrument_key))


@router.get(
    "/symbols/{instrument_key}/candles",
    response_model=list[CandleRead],
    responses={404: {"model": ErrorBody}},
)
def read_candles(
    instrument_key: PathId,
    session: SessionDep,
    interval_s: Annotated[int, Query(ge=60, le=86_400, description="Bar length, seconds.")] = 60,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 375,
) -> list[CandleRead]:
    """Stored candles, oldest first: the last `limit` bars, or those from `since` on."""
    key = find_symbol(session, instrument_key).instrument.instrument_key
    repo = CandleRepository(session)
    if since is None and until is None:
        candles = repo.latest(key, interval_s, limit)
    else:
        candles = repo.find(key, interval_s, since=since, until=until, limit=limit)
    return [CandleRead.of(c) for c in candles]


def quote_of(session: Session, view: KernelView | None, record: SymbolRecord) -> QuoteRead:
    """The latest price of an instrument: the running kernel's, else a stored tick's, else
    the symbol master's."""
    i = record.instrument
    key = i.instrument_key
    if view is not None and key in view.last_prices:
        return QuoteRead(
            instrument_key=key,
            trading_symbol=i.trading_symbol,
            last_price=paise_to_rupees(view.last_prices[key]),
            at=view.at,
            source="engine",
        )
    tick = TickRepository(session).latest(key)
    if tick is not None:
        return QuoteRead(
            instrument_key=key,
            trading_symbol=i.trading_symbol,
            last_price=paise_to_rupees(tick.ltp_paise),
            at=ms_to_datetime(tick.ts_ms),
            source="tick",
            volume=tick.volume,
            bid=None if tick.bid_paise is None else paise_to_rupees(tick.bid_paise),
            ask=None if tick.ask_paise is None else paise_to_rupees(tick.ask_paise),
        )
    if record.last_price_paise is not None:
        return QuoteRead(
            instrument_key=key,
            trading_symbol=i.trading_symbol,
            last_price=paise_to_rupees(record.last_price_paise),
            at=record.updated_at,
            source="symbol",
        )
    return QuoteRead(
        instrument_key=key, trading_symbol=i.trading_symbol, last_price=None, at=None, source="none"
    )


@router.get(
    "/symbols/{instrument_key}/quote",
    response_model=QuoteRead,
    responses={404: {"model": ErrorBody}},
)
def read_quote(instrument_key: PathId, session: SessionDep, view: ViewDep) -> QuoteRead:
    """The latest price of one instrument."""
    return quote_of(session, view, find_symbol(session, instrument_key))


@router.get("/quotes", response_model=list[QuoteRead], responses={404: {"model": ErrorBody}})
def read_quotes(
    session: SessionDep,
    view: ViewDep,
    symbols: Annotated[
        str | None,
        Query(
            max_length=4000,
            pattern=PRINTABLE,
            description="Comma-separated keys or trading symbols; omit for every open position"
            " and the most liquid instruments (up to 50).",
        ),
    ] = None,
) -> list[QuoteRead]:
    """The latest prices of several instruments."""
    if symbols:
        wanted = [s.strip() for s in symbols.split(",") if s.strip()][:200]
        records = [find_symbol(session, s) for s in wanted]
    else:
        records = SymbolRepository(session).find(limit=50)
    return [quote_of(session, view, r) for r in records]

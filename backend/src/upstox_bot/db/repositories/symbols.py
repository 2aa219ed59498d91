"""The instrument master: upsert from the Upstox master file, rank, ban list, lookups."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import bindparam, nulls_last, or_, select, update
from sqlalchemy.orm import Session

from upstox_bot.db.models import SymbolRow
from upstox_bot.db.repositories._writes import execute_count, table_of, upsert
from upstox_bot.domain import Instrument, InstrumentKind, OptionType
from upstox_bot.errors import Conflict, NotFound

# Columns that come from the master file; rank, ban and last price are kept across refreshes.
MASTER_COLUMNS = (
    "trading_symbol",
    "name",
    "isin",
    "lot_size",
    "tick_size_paise",
    "kind",
    "exchange",
    "segment",
    "sector",
    "underlying_symbol",
    "expiry",
    "strike_paise",
    "option_type",
    "is_active",
    "updated_at",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SymbolRecord:
    """An instrument with what the bot knows about it beyond the master file."""

    instrument: Instrument
    liquidity_rank: int | None  # 1 = most liquid; None = not ranked
    last_price_paise: int | None
    is_active: bool
    in_ban: bool  # in the F&O ban period: no new positions
    updated_at: datetime


def symbol_values(instrument: Instrument, at: datetime) -> dict[str, Any]:
    """Column values of a symbols row for `instrument`, active and refreshed at `at`."""
    return {
        "instrument_key": instrument.instrument_key,
        "trading_symbol": instrument.trading_symbol,
        "name": instrument.name,
        "isin": instrument.isin,
        "lot_size": instrument.lot_size,
        "tick_size_paise": instrument.tick_size_paise,
        "kind": instrument.kind.value,
        "exchange": instrument.exchange,
        "segment": instrument.segment,
        "sector": instrument.sector,
        "underlying_symbol": instrument.underlying_symbol,
        "expiry": date.fromisoformat(instrument.expiry) if instrument.expiry else None,
        "strike_paise": instrument.strike_paise,
        "option_type": instrument.option_type.value if instrument.option_type else None,
        "liquidity_rank": None,
        "last_price_paise": None,
        "is_active": True,
        "in_ban": False,
        "updated_at": at,
    }


def symbol_from_row(row: SymbolRow) -> SymbolRecord:
    """The instrument stored in `row` with its rank, ban flag and last price."""
    instrument = Instrument(
        instrument_key=row.instrument_key,
        trading_symbol=row.trading_symbol,
        name=row.name,
        isin=row.isin,
        lot_size=row.lot_size,
        tick_size_paise=row.tick_size_paise,
        kind=InstrumentKind(row.kind),
        exchange=row.exchange,
        segment=row.segment,
        sector=row.sector,
        underlying_symbol=row.underlying_symbol,
        expiry=row.expiry.isoformat() if row.expiry else None,
        strike_paise=row.strike_paise,
        option_type=OptionType(row.option_type) if row.option_type else None,
    )
    return SymbolRecord(
        instrument=instrument,
        liquidity_rank=row.liquidity_rank,
        last_price_paise=row.last_price_paise,
        is_active=row.is_active,
        in_ban=row.in_ban,
        updated_at=row.updated_at,
    )


class SymbolRepository:
    """Stores and reads the instrument master (shared by every account)."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def upsert_many(self, instruments: Iterable[Instrument], at: datetime) -> int:
        """Insert new instruments and refresh known ones (marking them active).

        The liquidity rank, ban flag and last price of known instruments are kept.
        Returns how many instruments were given.
        """
        values = [symbol_values(instrument, at) for instrument in instruments]
        upsert(self._session, SymbolRow, values, conflict=["instrument_key"], update=MASTER_COLUMNS)
        return len(values)

    def get_or_none(self, instrument_key: str) -> SymbolRecord | None:
        """The instrument with this key, or None."""
        row = self._session.scalar(
            select(SymbolRow)
            .where(SymbolRow.instrument_key == instrument_key)
            .execution_options(populate_existing=True)
        )
        return symbol_from_row(row) if row is not None else None

    def get(self, instrument_key: str) -> SymbolRecord:
        """The instrument with this key.

        Raises:
            NotFound: no such instrument.
        """
        record = self.get_or_none(instrument_key)
        if record is None:
            raise NotFound(f"instrument {instrument_key!r} not found")
        return record

    def get_by_symbol(self, trading_symbol: str, *, segment: str | None = None) -> SymbolRecord:
        """The active instrument with this trading symbol (case-insensitive), e.g. "RELIANCE".

        Raises:
            NotFound: no active instrument has that symbol.
            Conflict: several do (give the segment, e.g. "NSE_EQ").
        """
        stmt = select(SymbolRow).where(
            SymbolRow.trading_symbol == trading_symbol.upper(), SymbolRow.is_active.is_(True)
        )
        if segment is not None:
            stmt = stmt.where(SymbolRow.segment == segment)
        rows = list(self._session.scalars(stmt.limit(2).execution_options(populate_existing=True)))
        if not rows:
            raise NotFound(f"symbol {trading_symbol!r} not found")
        if len(rows) > 1:
            raise Conflict(f"symbol {trading_symbol!r} is ambiguous: give the segment")
        return symbol_from_row(rows[0])

    def find(
        self,
        *,
        kind: InstrumentKind | None = None,
        segment: str | None = None,
        underlying_symbol: str | None = None,
        active_only: bool = True,
        exclude_banned: bool = False,
        ranked_only: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[SymbolRecord]:
        """Instruments by liquidity rank (unranked last), then trading symbol."""
        stmt = select(SymbolRow)
        if kind is not None:
            stmt = stmt.where(SymbolRow.kind == kind.value)
        if segment is not None:
            stmt = stmt.where(SymbolRow.segment == segment)
        if underlying_symbol is not None:
            stmt = stmt.where(SymbolRow.underlying_symbol == underlying_symbol)
        if active_only:
            stmt = stmt.where(SymbolRow.is_active.is_(True))
        if exclude_banned:
            stmt = stmt.where(SymbolRow.in_ban.is_(False))
        if ranked_only:
            stmt = stmt.where(SymbolRow.liquidity_rank.is_not(None))
        stmt = stmt.order_by(
            nulls_last(SymbolRow.liquidity_rank.asc()), SymbolRow.trading_symbol, SymbolRow.id
        )
        rows = self._session.scalars(
            stmt.limit(limit).offset(offset).execution_options(populate_existing=True)
        )
        return [symbol_from_row(row) for row in rows]

    def set_liquidity_ranks(self, ranks: Mapping[str, int], at: datetime) -> None:
        """Replace the liquidity ranking: keys in `ranks` get their rank, all others none."""
        execute_count(
            self._session,
            update(SymbolRow)
            .where(SymbolRow.liquidity_rank.is_not(None))
            .values(liquidity_rank=None, updated_at=at)
            .execution_options(synchronize_session=False),
        )
        self._set_many("liquidity_rank", ranks, at)

    def set_ban_list(self, instrument_keys: Collection[str], at: datetime) -> None:
        """Replace the F&O ban list: the given instruments are banned, all others not."""
        banned = list(instrument_keys)
        self._session.execute(
            update(SymbolRow)
            .where(SymbolRow.in_ban.is_(True), SymbolRow.instrument_key.not_in(banned))
            .values(in_ban=False, updated_at=at)
            .execution_options(synchronize_session=False)
        )
        if banned:
            self._session.execute(
                update(SymbolRow)
                .where(SymbolRow.instrument_key.in_(banned))
                .values(in_ban=True, updated_at=at)
                .execution_options(synchronize_session=False)
            )

    def stock_last_prices(self) -> dict[str, int]:
        """The stored last price of each stock (NSE_EQ) that has one, by instrument key."""
        stmt = select(SymbolRow.instrument_key, SymbolRow.last_price_paise).where(
            SymbolRow.segment == "NSE_EQ", SymbolRow.last_price_paise.is_not(None)
        )
        return {key: price for key, price in self._session.execute(stmt).all() if price is not None}

    def of_underlyings(self, symbols: Collection[str]) -> list[tuple[str, str, str | None]]:
        """(instrument key, trading symbol, underlying symbol) of every instrument that is one of
        these stocks or a derivative of one."""
        if not symbols:
            return []
        names = sorted(symbols)
        stmt = select(
            SymbolRow.instrument_key, SymbolRow.trading_symbol, SymbolRow.underlying_symbol
        ).where(or_(SymbolRow.trading_symbol.in_(names), SymbolRow.underlying_symbol.in_(names)))
        return [(key, symbol, under) for key, symbol, under in self._session.execute(stmt).all()]

    def banned_symbols(self) -> set[str]:
        """Trading symbols of the active stocks now in the ban period (for the entry check)."""
        stmt = select(SymbolRow.trading_symbol).where(
            SymbolRow.in_ban.is_(True), SymbolRow.is_active.is_(True), SymbolRow.segment == "NSE_EQ"
        )
        return set(self._session.scalars(stmt))

    def banned_instrument_keys(self) -> set[str]:
        """Keys of every active instrument (stocks and their derivatives) in the F&O ban period.

        The entry check of a harness: refuse a new position in any of these.
        """
        stmt = select(SymbolRow.instrument_key).where(
            SymbolRow.in_ban.is_(True), SymbolRow.is_active.is_(True)
        )
        return set(self._session.scalars(stmt))

    def set_last_prices(self, prices_paise: Mapping[str, int], at: datetime) -> None:
        """Record the last traded price of these instruments."""
        self._set_many("last_price_paise", prices_paise, at)

    def deactivate_missing(self, present_keys: Collection[str], at: datetime) -> int:
        """Mark active instruments not in `present_keys` inactive (gone from the master file).

        Returns how many were deactivated.
        """
        return execute_count(
            self._session,
            update(SymbolRow)
            .where(
                SymbolRow.is_active.is_(True), SymbolRow.instrument_key.not_in(list(present_keys))
            )
            .values(is_active=False, updated_at=at)
            .execution_options(synchronize_session=False),
        )

    def _set_many(self, column: str, values: Mapping[str, int], at: datetime) -> None:
        if not values:
            return
        table = table_of(SymbolRow)
        stmt = (
            update(table)
            .where(table.c.instrument_key == bindparam("b_key"))
            .values({column: bindparam("b_value"), "updated_at": bindparam("b_at")})
        )
        params = [{"b_key": key, "b_value": value, "b_at": at} for key, value in values.items()]
        self._session.execute(stmt, params)

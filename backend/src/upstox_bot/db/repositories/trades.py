"""Closed trades: row mapping, listing and P&L sums by trading date."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from upstox_bot.db.models import TradeRow
from upstox_bot.domain import ClientOrderId, Direction, ExitReason, Trade
from upstox_bot.errors import NotFound

IST = ZoneInfo("Asia/Kolkata")

_T = TypeVar("_T")


def trading_date_of(at: datetime) -> date:
    """The NSE trading date (Asia/Kolkata) of an aware instant."""
    if at.tzinfo is None:
        raise ValueError("naive datetime: every time in upstox-bot is timezone-aware")
    return at.astimezone(IST).date()


def trade_values(trade: Trade, account: str) -> dict[str, Any]:
    """Column values of a trades row; the trading date is the IST date of the exit."""
    return {
        "trade_id": trade.trade_id,
        "account": account,
        "instrument_key": trade.instrument_key,
        "direction": trade.direction.value,
        "quantity": trade.quantity,
        "lots": trade.lots,
        "entry_price_paise": trade.entry_price_paise,
        "exit_price_paise": trade.exit_price_paise,
        "entry_at": trade.entry_at,
        "exit_at": trade.exit_at,
        "gross_pnl_paise": trade.gross_pnl_paise,
        "charges_paise": trade.charges_paise,
        "net_pnl_paise": trade.net_pnl_paise,
        "exit_reason": trade.exit_reason.value,
        "entry_order_id": trade.entry_order_id,
        "exit_order_id": trade.exit_order_id,
        "strategy": trade.strategy,
        "trading_date": trading_date_of(trade.exit_at),
    }


def trade_from_row(row: TradeRow) -> Trade:
    """The domain trade stored in `row`."""
    return Trade(
        trade_id=row.trade_id,
        instrument_key=row.instrument_key,
        direction=Direction(row.direction),
        quantity=row.quantity,
        lots=row.lots,
        entry_price_paise=row.entry_price_paise,
        exit_price_paise=row.exit_price_paise,
        entry_at=row.entry_at,
        exit_at=row.exit_at,
        gross_pnl_paise=row.gross_pnl_paise,
        charges_paise=row.charges_paise,
        net_pnl_paise=row.net_pnl_paise,
        exit_reason=ExitReason(row.exit_reason),
        entry_order_id=ClientOrderId(row.entry_order_id),
        exit_order_id=ClientOrderId(row.exit_order_id),
        strategy=row.strategy,
    )


class TradeRepository:
    """Reads the closed trades of one account."""

    def __init__(self, session: Session, account: str) -> None:
        self._session = session
        self._account = account

    def get(self, trade_id: str) -> Trade:
        """The trade with this id.

        Raises:
            NotFound: no trade of this account has that id.
        """
        row = self._session.scalar(
            select(TradeRow).where(TradeRow.account == self._account, TradeRow.trade_id == trade_id)
        )
        if row is None:
            raise NotFound(f"trade {trade_id!r} not found")
        return trade_from_row(row)

    def find(
        self,
        *,
        instrument_key: str | None = None,
        strategy: str | None = None,
        start_date: date | None = None,
        end_date: date | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Trade]:
        """Trades newest exit first, filtered.

        Args:
            start_date, end_date: trading dates (IST), both inclusive.
            limit: at most this many; offset: skip this many (pagination).
        """
        stmt = self._filtered(select(TradeRow), instrument_key, strategy, start_date, end_date)
        stmt = stmt.order_by(TradeRow.exit_at.desc(), TradeRow.id.desc())
        rows = self._session.scalars(stmt.limit(limit).offset(offset))
        return [trade_from_row(row) for row in rows]

    def count(
        self,
        *,
        instrument_key: str | None = None,
        strategy: str | None = None,
        start_date: date | None = None,
        end_date: date | None = None,
    ) -> int:
        """How many trades `find` would return without a limit."""
        stmt = select(func.count()).select_from(TradeRow)
        stmt = self._filtered(stmt, instrument_key, strategy, start_date, end_date)
        return self._session.scalar(stmt) or 0

    def net_pnl_paise(self, start_date: date, end_date: date | None = None) -> int:
        """Net P&L (after charges) of the trades closed from `start_date` to `end_date`.

        Args:
            start_date: first trading date (IST), inclusive.
            end_date: last trading date, inclusive; None means `start_date` alone.
        """
        stmt = select(func.coalesce(func.sum(TradeRow.net_pnl_paise), 0))
        stmt = self._filtered(stmt, None, None, start_date, end_date or start_date)
        return int(self._session.scalar(stmt) or 0)

    def _filtered(
        self,
        stmt: Select[_T],
        instrument_key: str | None,
        strategy: str | None,
        start_date: date | None,
        end_date: date | None,
    ) -> Select[_T]:
        stmt = stmt.where(TradeRow.account == self._account)
        if instrument_key is not None:
            stmt = stmt.where(TradeRow.instrument_key == instrument_key)
        if strategy is not None:
            stmt = stmt.where(TradeRow.strategy == strategy)
        if start_date is not None:
            stmt = stmt.where(TradeRow.trading_date >= start_date)
        if end_date is not None:
            stmt = stmt.where(TradeRow.trading_date <= end_date)
        return stmt

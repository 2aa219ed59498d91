"""Positions: row mapping, the open book (restart recovery) and the history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from upstox_bot.db.models import PositionRow, PositionStatus
from upstox_bot.domain import ClientOrderId, Direction, Position

# Columns that change while a position is open (the exit manager's state).
POSITION_STATE_COLUMNS = (
    "quantity",
    "lots",
    "entry_price_paise",  # a part-filled entry that fills more moves these three
    "entry_value_paise",
    "entry_quantity",
    "stop_paise",
    "target_paise",
    "trailing_active",
    "best_price_paise",
    "trail_stop_paise",
    "last_price_paise",
    "unrealised_pnl_paise",
    "exit_pending",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class PositionRecord:
    """A stored position, open or closed, with its bookkeeping."""

    id: int
    position: Position
    status: PositionStatus
    opened_at: datetime
    closed_at: datetime | None
    realised_pnl_paise: int | None  # net of charges; set when closed
    unrealised_pnl_paise: int
    updated_at: datetime


def position_state_values(position: Position) -> dict[str, Any]:
    """The values of the columns in POSITION_STATE_COLUMNS for `position`.

    Until the position has seen a price (`last_price_paise` 0) its unrealised P&L is 0.
    """
    unrealised = position.unrealised_pnl_paise if position.last_price_paise > 0 else 0
    return {
        "quantity": position.quantity,
        "lots": position.lots,
        "entry_price_paise": position.entry_price_paise,
        "entry_value_paise": position.entry_value_paise,
        "entry_quantity": position.entry_quantity,
        "stop_paise": position.stop_paise,
        "target_paise": position.target_paise,
        "trailing_active": position.trailing_active,
        "best_price_paise": position.best_price_paise,
        "trail_stop_paise": position.trail_stop_paise,
        "last_price_paise": position.last_price_paise,
        "unrealised_pnl_paise": unrealised,
        "exit_pending": position.exit_pending,
    }


def position_values(position: Position, account: str, at: datetime) -> dict[str, Any]:
    """Column values of a new open positions row for `position`, written at `at`.

    `opened_at` is the entry time, so that a replayed or backtested run stores the same rows.
    """
    return {
        "account": account,
        "instrument_key": position.instrument_key,
        "direction": position.direction.value,
        "status": PositionStatus.OPEN.value,
        "entry_at": position.entry_at,
        "entry_order_id": position.entry_order_id,
        "realised_pnl_paise": None,
        "entry_charges_paise": position.entry_charges_paise,
        "strategy": position.strategy,
        "opened_at": position.entry_at,
        "closed_at": None,
        "updated_at": at,
        **position_state_values(position),
    }


def position_from_row(row: PositionRow) -> Position:
    """The domain position stored in `row`."""
    return Position(
        instrument_key=row.instrument_key,
        direction=Direction(row.direction),
        quantity=row.quantity,
        lots=row.lots,
        entry_price_paise=row.entry_price_paise,
        entry_at=row.entry_at,
        entry_order_id=ClientOrderId(row.entry_order_id),
        stop_paise=row.stop_paise,
        target_paise=row.target_paise,
        trailing_active=row.trailing_active,
        best_price_paise=row.best_price_paise,
        trail_stop_paise=row.trail_stop_paise,
        last_price_paise=row.last_price_paise,
        entry_charges_paise=row.entry_charges_paise,
        strategy=row.strategy,
        exit_pending=row.exit_pending,
        entry_value_paise=row.entry_value_paise,
        entry_quantity=row.entry_quantity,
    )


def record_from_row(row: PositionRow) -> PositionRecord:
    """The stored position in `row` with its bookkeeping."""
    return PositionRecord(
        id=row.id,
        position=position_from_row(row),
        status=PositionStatus(row.status),
        opened_at=row.opened_at,
        closed_at=row.closed_at,
        realised_pnl_paise=row.realised_pnl_paise,
        unrealised_pnl_paise=row.unrealised_pnl_paise,
        updated_at=row.updated_at,
    )


class PositionRepository:
    """Reads the positions of one account."""

    def __init__(self, session: Session, account: str) -> None:
        self._session = session
        self._account = account

    def open_positions(self) -> list[Position]:
        """The open positions, oldest entry first (what the engine restores after a restart)."""
        rows = self._session.scalars(
            select(PositionRow)
            .where(
                PositionRow.account == self._account,
                PositionRow.status == PositionStatus.OPEN.value,
            )
            .order_by(PositionRow.entry_at, PositionRow.id)
            .execution_options(populate_existing=True)
        )
        return [position_from_row(row) for row in rows]

    def get_open(self, instrument_key: str) -> Position | None:
        """The open position in `instrument_key`, or None."""
        row = self._session.scalar(
            select(PositionRow)
            .where(
                PositionRow.account == self._account,
                PositionRow.instrument_key == instrument_key,
                PositionRow.status == PositionStatus.OPEN.value,
            )
            .execution_options(populate_existing=True)
        )
        return position_from_row(row) if row is not None else None

    def history(
        self,
        *,
        instrument_key: str | None = None,
        status: PositionStatus | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[PositionRecord]:
        """Positions newest entry first, filtered.

        Args:
            since: entered at or after (aware). until: entered before (aware).
            limit: at most this many; offset: skip this many (pagination).
        """
        stmt = select(PositionRow).where(PositionRow.account == self._account)
        if instrument_key is not None:
            stmt = stmt.where(PositionRow.instrument_key == instrument_key)
        if status is not None:
            stmt = stmt.where(PositionRow.status == status.value)
        if since is not None:
            stmt = stmt.where(PositionRow.entry_at >= since)
        if until is not None:
            stmt = stmt.where(PositionRow.entry_at < until)
        stmt = stmt.order_by(PositionRow.entry_at.desc(), PositionRow.id.desc())
        rows = self._session.scalars(
            stmt.limit(limit).offset(offset).execution_options(populate_existing=True)
        )
        return [record_from_row(row) for row in rows]

"""Orders and their fills: row mapping and the read side (API, restart recovery)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from upstox_bot.db.models import FillRow, OrderRow
from upstox_bot.domain import (
    ClientOrderId,
    ExitReason,
    Fill,
    Order,
    OrderPurpose,
    OrderStatus,
    OrderType,
    Side,
    SignalId,
)
from upstox_bot.errors import NotFound

_T = TypeVar("_T")

TERMINAL_STATUSES = tuple(status.value for status in OrderStatus if status.is_terminal)

# Columns the order's later states may change; the rest is fixed when the order is created.
ORDER_STATE_COLUMNS = (
    "status",
    "broker_order_id",
    "filled_quantity",
    "average_price_paise",
    "filled_value_paise",
    "rejection_reason",
    "updated_at",
)


def order_values(order: Order, account: str) -> dict[str, Any]:
    """Column values of an orders row for `order` of `account`."""
    return {
        "client_order_id": order.client_order_id,
        "account": account,
        "instrument_key": order.instrument_key,
        "side": order.side.value,
        "quantity": order.quantity,
        "lots": order.lots,
        "purpose": order.purpose.value,
        "order_type": order.order_type.value,
        "status": order.status.value,
        "reason": order.reason,
        "limit_price_paise": order.limit_price_paise,
        "signal_id": order.signal_id,
        "exit_reason": order.exit_reason.value if order.exit_reason else None,
        "broker_order_id": order.broker_order_id,
        "filled_quantity": order.filled_quantity,
        "average_price_paise": order.average_price_paise,
        "filled_value_paise": order.filled_value_paise,
        "rejection_reason": order.rejection_reason,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
    }


def order_from_row(row: OrderRow) -> Order:
    """The domain order stored in `row`."""
    return Order(
        client_order_id=ClientOrderId(row.client_order_id),
        instrument_key=row.instrument_key,
        side=Side(row.side),
        quantity=row.quantity,
        lots=row.lots,
        purpose=OrderPurpose(row.purpose),
        order_type=OrderType(row.order_type),
        status=OrderStatus(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
        reason=row.reason,
        limit_price_paise=row.limit_price_paise,
        signal_id=SignalId(row.signal_id) if row.signal_id is not None else None,
        exit_reason=ExitReason(row.exit_reason) if row.exit_reason is not None else None,
        broker_order_id=row.broker_order_id,
        filled_quantity=row.filled_quantity,
        average_price_paise=row.average_price_paise,
        rejection_reason=row.rejection_reason,
        filled_value_paise=row.filled_value_paise,
    )


def fill_values(fill: Fill) -> dict[str, Any]:
    """Column values of a fills row for `fill`."""
    return {
        "fill_id": fill.fill_id,
        "client_order_id": fill.client_order_id,
        "broker_order_id": fill.broker_order_id,
        "instrument_key": fill.instrument_key,
        "side": fill.side.value,
        "quantity": fill.quantity,
        "price_paise": fill.price_paise,
        "filled_at": fill.filled_at,
    }


def fill_from_row(row: FillRow) -> Fill:
    """The domain fill stored in `row`."""
    return Fill(
        fill_id=row.fill_id,
        client_order_id=ClientOrderId(row.client_order_id),
        broker_order_id=row.broker_order_id,
        instrument_key=row.instrument_key,
        side=Side(row.side),
        quantity=row.quantity,
        price_paise=row.price_paise,
        filled_at=row.filled_at,
    )


class OrderRepository:
    """Reads the orders of one account."""

    def __init__(self, session: Session, account: str) -> None:
        self._session = session
        self._account = account

    def get_or_none(self, client_order_id: str) -> Order | None:
        """The order with this client id, or None."""
        row = self._session.scalar(
            select(OrderRow)
            .where(OrderRow.account == self._account, OrderRow.client_order_id == client_order_id)
            .execution_options(populate_existing=True)
        )
        return order_from_row(row) if row is not None else None

    def get(self, client_order_id: str) -> Order:
        """The order with this client id.

        Raises:
            NotFound: no order of this account has that id.
        """
        order = self.get_or_none(client_order_id)
        if order is None:
            raise NotFound(f"order {client_order_id!r} not found")
        return order

    def find(
        self,
        *,
        instrument_key: str | None = None,
        status: OrderStatus | Collection[OrderStatus] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Order]:
        """Orders newest first, filtered.

        Args:
            status: one status or several.
            since: created at or after (aware).
            until: created before (aware).
            limit: at most this many; offset: skip this many (pagination).
        """
        stmt = self._filtered(select(OrderRow), instrument_key, status, since, until)
        stmt = stmt.order_by(OrderRow.created_at.desc(), OrderRow.id.desc())
        rows = self._session.scalars(
            stmt.limit(limit).offset(offset).execution_options(populate_existing=True)
        )
        return [order_from_row(row) for row in rows]

    def count(
        self,
        *,
        instrument_key: str | None = None,
        status: OrderStatus | Collection[OrderStatus] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """How many orders `find` would return without a limit."""
        stmt = self._filtered(
            select(func.count()).select_from(OrderRow), instrument_key, status, since, until
        )
        return self._session.scalar(stmt) or 0

    def unfinished(self) -> list[Order]:
        """Orders not yet filled, cancelled or rejected, oldest first (restart recovery)."""
        rows = self._session.scalars(
            select(OrderRow)
            .where(OrderRow.account == self._account, OrderRow.status.not_in(TERMINAL_STATUSES))
            .order_by(OrderRow.created_at, OrderRow.id)
            .execution_options(populate_existing=True)
        )
        return [order_from_row(row) for row in rows]

    def fills(self, client_order_id: str) -> list[Fill]:
        """The fills of one order, oldest first."""
        rows = self._session.scalars(
            select(FillRow)
            .join(OrderRow, OrderRow.client_order_id == FillRow.client_order_id)
            .where(OrderRow.account == self._account, FillRow.client_order_id == client_order_id)
            .order_by(FillRow.filled_at, FillRow.id)
        )
        return [fill_from_row(row) for row in rows]

    def _filtered(
        self,
        stmt: Select[_T],
        instrument_key: str | None,
        status: OrderStatus | Collection[OrderStatus] | None,
        since: datetime | None,
        until: datetime | None,
    ) -> Select[_T]:
        stmt = stmt.where(OrderRow.account == self._account)
        if instrument_key is not None:
            stmt = stmt.where(OrderRow.instrument_key == instrument_key)
        if isinstance(status, OrderStatus):
            stmt = stmt.where(OrderRow.status == status.value)
        elif status is not None:
            stmt = stmt.where(OrderRow.status.in_([s.value for s in status]))
        if since is not None:
            stmt = stmt.where(OrderRow.created_at >= since)
        if until is not None:
            stmt = stmt.where(OrderRow.created_at < until)
        return stmt

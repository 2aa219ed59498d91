"""SqlJournal: the trading core's Journal protocol, written into the caller's transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, text, update
from sqlalchemy.orm import Session

from upstox_bot.db.models import (
    FillRow,
    OrderRow,
    PositionRow,
    PositionStatus,
    RiskDecisionRow,
    SignalRow,
    TradeRow,
)
from upstox_bot.db.repositories._writes import execute_count, insert_ignore, table_of
from upstox_bot.db.repositories.accounts import AccountRepository
from upstox_bot.db.repositories.audit import AuditRepository
from upstox_bot.db.repositories.candles import CandleRepository
from upstox_bot.db.repositories.orders import ORDER_STATE_COLUMNS, fill_values, order_values
from upstox_bot.db.repositories.positions import position_state_values, position_values
from upstox_bot.db.repositories.rate_limits import RateLimitLogRepository
from upstox_bot.db.repositories.signals import signal_values
from upstox_bot.db.repositories.trades import trade_values
from upstox_bot.domain import (
    AccountSnapshot,
    AuditRecord,
    Candle,
    Fill,
    Order,
    Position,
    RiskDecision,
    Signal,
    SignalStatus,
    Trade,
)
from upstox_bot.errors import Conflict, NotFound

log = logging.getLogger(__name__)

# What identifies an order: a second write with the same client id must agree on these.
# What makes an order that order; its quantity, type and price may change (a modify).
_ORDER_IDENTITY = ("account", "instrument_key", "side", "purpose")
_FILL_IDENTITY = ("client_order_id", "quantity", "price_paise")
_OPEN = PositionStatus.OPEN.value


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SqlJournal:
    """Persists what the engine records, for one account, in the session's transaction.

    It flushes but never commits: the harness commits the unit of work before it reports
    the effect (and before an order goes to the broker). Every write is safe to repeat:
    orders are keyed by client id, fills by fill id, signals by signal id, trades by trade
    id, and positions by (account, instrument) while open.

    Args:
        session: the caller's session (its transaction).
        account: the account every row is written for.
        now: the clock for the `updated_at` columns (aware UTC); a position's `opened_at`
            is its entry time.
    """

    def __init__(
        self, session: Session, account: str, *, now: Callable[[], datetime] = _utc_now
    ) -> None:
        self._session = session
        self._account = account
        self._now = now

    def candle(self, candle: Candle) -> None:
        """Store a closed candle (replacing one with the same instrument, interval, start)."""
        CandleRepository(self._session).upsert_many([candle])

    def signal(self, signal: Signal, status: SignalStatus) -> None:
        """Store a signal; recording the same signal again only updates its status."""
        values = signal_values(signal, status, self._account)
        if insert_ignore(self._session, SignalRow, values, conflict=["signal_id"]) == 0:
            self.signal_status(signal.signal_id, status)

    def signal_status(self, signal_id: str, status: SignalStatus) -> None:
        """Set the status of a stored signal.

        Raises:
            NotFound: the signal was never recorded for this account.
        """
        stmt = (
            update(SignalRow)
            .where(SignalRow.account == self._account, SignalRow.signal_id == signal_id)
            .values(status=status.value)
            .execution_options(synchronize_session=False)
        )
        if execute_count(self._session, stmt) == 0:
            raise NotFound(f"signal {signal_id!r} not found")

    def risk_decision(self, decision: RiskDecision) -> None:
        """Append a risk decision."""
        self._session.execute(
            insert(table_of(RiskDecisionRow)),
            {
                "account": self._account,
                "signal_id": decision.signal_id,
                "instrument_key": decision.instrument_key,
                "approved": decision.approved,
                "rule": decision.rule.value if decision.rule else None,
                "reason": decision.reason,
                "quantity": decision.quantity,
                "lots": decision.lots,
                "price_paise": decision.price_paise,
                "stop_paise": decision.stop_paise,
                "target_paise": decision.target_paise,
                "decided_at": decision.decided_at,
            },
        )

    def order(self, order: Order) -> None:
        """Insert the order, or update its state when its client id is already stored.

        An update older than the stored state (earlier `updated_at`) is ignored, so a
        late retry cannot move an order back.

        Raises:
            Conflict: the stored order with this client id is a different order (other
                account, instrument, side or purpose).
        """
        values = order_values(order, self._account)
        if insert_ignore(self._session, OrderRow, values, conflict=["client_order_id"]):
            return
        stored = self._session.execute(
            select(*(getattr(OrderRow, name) for name in _ORDER_IDENTITY)).where(
                OrderRow.client_order_id == order.client_order_id
            )
        ).one()
        self._require_same("order", order.client_order_id, _ORDER_IDENTITY, stored, values)
        stmt = (
            update(OrderRow)
            .where(
                OrderRow.client_order_id == order.client_order_id,
                OrderRow.updated_at <= order.updated_at,
            )
            .values({name: values[name] for name in ORDER_STATE_COLUMNS})
            .execution_options(synchronize_session=False)
        )
        if execute_count(self._session, stmt) == 0:
            log.warning(
                "journal.order.stale_update",
                extra={"client_order_id": order.client_order_id, "status": order.status.value},
            )

    def order_sent(self, client_order_id: str, at: datetime) -> None:
        """Log that the order went to the broker (one rate_limit_logs row)."""
        RateLimitLogRepository(self._session, self._account).add(
            at, client_order_id=client_order_id
        )

    def fill(self, fill: Fill) -> None:
        """Store a fill; the same fill id again is ignored.

        Raises:
            Conflict: a stored fill with this id differs (order, quantity or price).
            sqlalchemy.exc.IntegrityError: the fill's order is not stored.
        """
        values = fill_values(fill)
        if insert_ignore(self._session, FillRow, values, conflict=["fill_id"]):
            return
        stored = self._session.execute(
            select(*(getattr(FillRow, name) for name in _FILL_IDENTITY)).where(
                FillRow.fill_id == fill.fill_id
            )
        ).one()
        self._require_same("fill", fill.fill_id, _FILL_IDENTITY, stored, values)

    def position_opened(self, position: Position) -> None:
        """Store a new open position; recording the same one (same entry order) again is a no-op.

        Raises:
            Conflict: another position in the instrument is open for this account.
        """
        values = position_values(position, self._account, self._now())
        inserted = insert_ignore(
            self._session,
            PositionRow,
            values,
            conflict=["account", "instrument_key"],
            # A literal predicate: a bound parameter here stops matching the partial index once
            # psycopg prepares the statement (after five runs on a connection).
            conflict_where=text("status = 'open'"),
        )
        if inserted:
            return
        entry_order_id = self._session.scalar(
            select(PositionRow.entry_order_id).where(*self._open_position(position.instrument_key))
        )
        if entry_order_id != position.entry_order_id:
            raise Conflict(
                f"{self._account}: a position in {position.instrument_key} is already open "
                f"(entry order {entry_order_id!r})"
            )

    def position_updated(self, position: Position) -> None:
        """Persist the open position's exit state and last price.

        Raises:
            NotFound: no open position with this entry order.
        """
        stmt = (
            update(PositionRow)
            .where(
                *self._open_position(position.instrument_key),
                PositionRow.entry_order_id == position.entry_order_id,
            )
            .values(updated_at=self._now(), **position_state_values(position))
            .execution_options(synchronize_session=False)
        )
        if execute_count(self._session, stmt) == 0:
            raise NotFound(
                f"{self._account}: no open position in {position.instrument_key} "
                f"with entry order {position.entry_order_id!r}"
            )

    def position_closed(self, position: Position, trade: Trade) -> None:
        """Close the open position and store its trade; a trade id seen before is a no-op.

        Raises:
            NotFound: no open position with this entry order.
        """
        trade_row = trade_values(trade, self._account)
        if insert_ignore(self._session, TradeRow, trade_row, conflict=["trade_id"]) == 0:
            return
        values: dict[str, Any] = {
            **position_state_values(position),
            "status": PositionStatus.CLOSED.value,
            "last_price_paise": trade.exit_price_paise,
            "unrealised_pnl_paise": 0,
            "realised_pnl_paise": trade.net_pnl_paise,
            "exit_pending": False,
            "closed_at": trade.exit_at,
            "updated_at": self._now(),
        }
        stmt = (
            update(PositionRow)
            .where(
                *self._open_position(position.instrument_key),
                PositionRow.entry_order_id == position.entry_order_id,
            )
            .values(values)
            .execution_options(synchronize_session=False)
        )
        if execute_count(self._session, stmt) == 0:
            raise NotFound(
                f"{self._account}: no open position in {position.instrument_key} "
                f"with entry order {position.entry_order_id!r} to close"
            )

    def account(self, snapshot: AccountSnapshot) -> None:
        """Insert or replace the account's figures for the snapshot's trading date."""
        AccountRepository(self._session).save_snapshot(self._account, snapshot, self._now())

    def audit(self, record: AuditRecord) -> None:
        """Append an audit record."""
        AuditRepository(self._session).add(record)

    def _open_position(self, instrument_key: str) -> tuple[Any, ...]:
        return (
            PositionRow.account == self._account,
            PositionRow.instrument_key == instrument_key,
            PositionRow.status == _OPEN,
        )

    @staticmethod
    def _require_same(
        what: str, key: str, names: tuple[str, ...], stored: Any, values: dict[str, Any]
    ) -> None:
        differing = [name for name, got in zip(names, stored, strict=True) if got != values[name]]
        if differing:
            raise Conflict(f"{what} {key!r} is already stored with other {', '.join(differing)}")

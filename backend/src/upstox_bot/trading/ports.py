"""The protocols through which the trading core reaches brokers and storage."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from enum import StrEnum
from typing import Protocol

from upstox_bot.domain import (
    AccountSnapshot,
    AuditRecord,
    Candle,
    Direction,
    Fill,
    InstrumentKind,
    Order,
    Position,
    RiskDecision,
    Signal,
    SignalStatus,
    Trade,
)
from upstox_bot.trading.charges import OrderExecution


class Broker(Protocol):
    """Places orders. A paper broker fills at once; a live broker reports fills later."""

    def place(self, order: Order) -> Sequence[Fill]:
        """Send the order; return the fills known now (possibly none).

        Raises:
            OrderRejected: the broker refused the order (record it, do not retry).
            BrokerUnavailable: transient failure (look the order up by its tag before re-placing).
        """
        ...

    def find_by_tag(self, client_order_id: str) -> Order | None:
        """Return the broker's view of the order carrying this tag, or None if it never arrived."""
        ...


class CancelOutcome(StrEnum):
    """What a broker did with a cancel request."""

    CANCELLED = "cancelled"  # done and final now (paper): apply it to the engine at once
    REQUESTED = "requested"  # sent; the broker's confirmation arrives later as an order update
    NOT_WORKING = "not_working"  # unknown to the broker, filled or already ended: nothing to do


class ConfirmingBroker(Protocol):
    """A broker whose cancels are confirmed later (the live broker).

    The engine's order changes only when the broker's order update says so: a cancel confirmed
    becomes ``Engine.on_order_closed``; a cancel that lost the race to a fill leaves the fill.
    """

    def request_cancel(self, client_order_id: str, *, by: str) -> CancelOutcome:
        """Ask the broker to cancel the order's unfilled part.

        Raises:
            Conflict: the order is not acknowledged by the broker yet (try again).
            BrokerUnavailable: the broker could not be asked (the order may still work).
        """
        ...


class Journal(Protocol):
    """Records everything the engine decides. Implementations persist (SQL) or keep (memory).

    Calls come in the order the effects happen. A SQL journal writes inside the caller's
    unit of work; the harness commits it before it reports the effect.
    """

    def candle(self, candle: Candle) -> None: ...

    def signal(self, signal: Signal, status: SignalStatus) -> None: ...

    def signal_status(self, signal_id: str, status: SignalStatus) -> None: ...

    def risk_decision(self, decision: RiskDecision) -> None: ...

    def order(self, order: Order) -> None:
        """Insert the order, or update it when its client id is known (idempotent)."""
        ...

    def order_sent(self, client_order_id: str, at: datetime) -> None:
        """Log that an order went to the broker (rate_limit_logs), to rebuild rate windows."""
        ...

    def fill(self, fill: Fill) -> None: ...

    def position_opened(self, position: Position) -> None: ...

    def position_updated(self, position: Position) -> None:
        """Persist the stop state (trailing flag, best price, trail stop) and last price."""
        ...

    def position_closed(self, position: Position, trade: Trade) -> None: ...

    def account(self, snapshot: AccountSnapshot) -> None: ...

    def audit(self, record: AuditRecord) -> None: ...


class ChargesModel(Protocol):
    """Charges of one closed trade, in paise.

    The engine says what was traded (`kind`: the stock, a future or an option, charged at that
    segment's rates whatever TRADE_INSTRUMENT says) and which orders the trade's shares came
    from (`entry_order`, `exit_order`: each order's id, side, executed quantity and exact
    value), so a model can charge one contract note per scrip and day
    (trading.charges.ContractNotes). `quantity` and the prices are the trade's own (average
    prices rounded to the paisa).
    """

    def __call__(
        self,
        *,
        direction: Direction,
        entry_price_paise: int,
        exit_price_paise: int,
        quantity: int,
        trading_date: date,
        kind: InstrumentKind,
        instrument_key: str,
        entry_order: OrderExecution,
        exit_order: OrderExecution,
    ) -> int: ...

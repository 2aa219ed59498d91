"""In-process journals: one that keeps every record (tests, backtests) and one that buffers
records for a harness to write to the database in one transaction per batch."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

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
from upstox_bot.trading.ports import Journal


@dataclass(slots=True)
class MemoryJournal:
    """Keeps what the engine records, in memory, newest state per order and position."""

    candles: list[Candle] = field(default_factory=list)
    signals: dict[str, tuple[Signal, SignalStatus]] = field(default_factory=dict)
    decisions: list[RiskDecision] = field(default_factory=list)
    orders: dict[str, Order] = field(default_factory=dict)
    sent: list[tuple[str, datetime]] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    positions: dict[str, Position] = field(default_factory=dict)  # open, by instrument
    trades: list[Trade] = field(default_factory=list)
    accounts: list[AccountSnapshot] = field(default_factory=list)
    audits: list[AuditRecord] = field(default_factory=list)
    keep_candles: bool = False

    def candle(self, candle: Candle) -> None:
        if self.keep_candles:
            self.candles.append(candle)

    def signal(self, signal: Signal, status: SignalStatus) -> None:
        self.signals[signal.signal_id] = (signal, status)

    def signal_status(self, signal_id: str, status: SignalStatus) -> None:
        signal, _ = self.signals[signal_id]
        self.signals[signal_id] = (signal, status)

    def risk_decision(self, decision: RiskDecision) -> None:
        self.decisions.append(decision)

    def order(self, order: Order) -> None:
        self.orders[order.client_order_id] = order.copy()

    def order_sent(self, client_order_id: str, at: datetime) -> None:
        self.sent.append((client_order_id, at))

    def fill(self, fill: Fill) -> None:
        self.fills.append(fill)

    def position_opened(self, position: Position) -> None:
        self.positions[position.instrument_key] = copy.copy(position)

    def position_updated(self, position: Position) -> None:
        self.positions[position.instrument_key] = copy.copy(position)

    def position_closed(self, position: Position, trade: Trade) -> None:
        self.positions.pop(position.instrument_key, None)
        self.trades.append(trade)

    def account(self, snapshot: AccountSnapshot) -> None:
        self.accounts.append(snapshot)

    def audit(self, record: AuditRecord) -> None:
        self.audits.append(record)


class BufferedJournal:
    """Buffers journal calls (with copies of mutable state) until `replay_into` replays them.

    The embedded harness drains it into a SQL journal inside one transaction per batch, and
    before every order goes to a broker, so that an order is on disk before it is sent.
    """

    def __init__(self) -> None:
        self._ops: list[tuple[str, tuple[Any, ...]]] = []

    def __len__(self) -> int:
        return len(self._ops)

    def _add(self, name: str, *args: Any) -> None:
        self._ops.append((name, args))

    def candle(self, candle: Candle) -> None:
        self._add("candle", candle)

    def signal(self, signal: Signal, status: SignalStatus) -> None:
        self._add("signal", signal, status)

    def signal_status(self, signal_id: str, status: SignalStatus) -> None:
        self._add("signal_status", signal_id, status)

    def risk_decision(self, decision: RiskDecision) -> None:
        self._add("risk_decision", decision)

    def order(self, order: Order) -> None:
        self._add("order", order.copy())

    def order_sent(self, client_order_id: str, at: datetime) -> None:
        self._add("order_sent", client_order_id, at)

    def fill(self, fill: Fill) -> None:
        self._add("fill", fill)

    def position_opened(self, position: Position) -> None:
        self._add("position_opened", copy.copy(position))

    def position_updated(self, position: Position) -> None:
        self._add("position_updated", copy.copy(position))

    def position_closed(self, position: Position, trade: Trade) -> None:
        self._add("position_closed", copy.copy(position), trade)

    def account(self, snapshot: AccountSnapshot) -> None:
        self._add("account", snapshot)

    def audit(self, record: AuditRecord) -> None:
        self._add("audit", record)

    def replay_into(self, target: Journal) -> int:
        """Replay the buffered calls on target in order; return how many were replayed.

        The calls stay buffered until `forget(n)`: call it once the target's transaction
        committed, so that a failed commit loses nothing.
        """
        ops = list(self._ops)
        for name, args in ops:
            getattr(target, name)(*args)
        return len(ops)

    def ops(self, count: int) -> list[tuple[str, tuple[Any, ...]]]:
        """The first `count` buffered calls as (method name, arguments)."""
        return list(self._ops[:count])

    def audit_records(self, count: int) -> list[AuditRecord]:
        """The audit records among the first `count` buffered calls (to alert on them)."""
        return [args[0] for name, args in self._ops[:count] if name == "audit"]

    def forget(self, count: int) -> None:
        """Drop the first `count` buffered calls (those a committed transaction holds)."""
        del self._ops[:count]

    def discard(self) -> None:
        self._ops.clear()

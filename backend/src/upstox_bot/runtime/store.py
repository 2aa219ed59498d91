"""The account's store for every harness: one commit, one checkpoint, one recovery reader.

`AccountStore` is the kernel's port onto the database (SQLite or PostgreSQL): it commits what
the engine journalled together with the harness's checkpoint in one transaction, reads the
state a restart must rebuild (`read_state`, the only recovery reader), and knows the account's
capital on any trading date. Before a market event's orders are sent, what it recorded is
written ahead (`write_ahead`: one encoded row beside the checkpoint) and moved into its tables
right after the send (`settle`), or by the next start if the process died in between
(`settle_pending`). A database that is briefly unavailable (a PostgreSQL restart, a
SQLite file locked by another process, a full disk) is waited for, never a reason to stop.
"""

from __future__ import annotations

import logging
import time as walltime
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from upstox_bot.db.models import AccountMode, OrderRow, RiskDecisionRow, SignalRow
from upstox_bot.db.repositories import pending_writes
from upstox_bot.db.repositories.accounts import AccountRepository
from upstox_bot.db.repositories.audit import AuditRepository
from upstox_bot.db.repositories.candles import CandleRepository
from upstox_bot.db.repositories.checkpoints import (
    Checkpoint,
    CheckpointRepository,
    FencedOut,
)
from upstox_bot.db.repositories.journal import SqlJournal
from upstox_bot.db.repositories.orders import OrderRepository
from upstox_bot.db.repositories.pending_writes import Ops, PendingWriteRepository
from upstox_bot.db.repositories.positions import PositionRepository
from upstox_bot.db.repositories.rate_limits import RateLimitLogRepository
from upstox_bot.db.repositories.symbols import SymbolRepository
from upstox_bot.db.repositories.ticks import TickRepository
from upstox_bot.db.repositories.trades import TradeRepository
from upstox_bot.db.session import session_scope
from upstox_bot.domain import (
    IST,
    Candle,
    ExitReason,
    Instrument,
    OrderPurpose,
    SignalStatus,
    Tick,
    datetime_to_ms,
)
from upstox_bot.trading.charges import OrderExecution
from upstox_bot.trading.engine import EngineState
from upstox_bot.trading.journal import BufferedJournal

log = logging.getLogger(__name__)

ENTRY_TYPES = ("entry_long", "entry_short")
_T = TypeVar("_T")


# --- waiting out an unavailable database ----------------------------------------------------


def is_transient(exc: DBAPIError) -> bool:
    """Whether a database error is the store being briefly unavailable (worth waiting for):
    a lost connection (a PostgreSQL restart), a locked SQLite file, a full disk."""
    if exc.connection_invalidated:
        return True
    text = str(exc.orig).lower()
    return any(
        word in text
        for word in (
            "connection",
            "terminating",
            "shutting down",
            "starting up",
            "closed",
            "database is locked",
            "database table is locked",
            "disk is full",
            "disk i/o error",
            "no space left",
        )
    )


@dataclass(slots=True)
class RetryPolicy:
    """How long a unit of work waits for an unavailable database.

    Args:
        deadline_s: give up (raise) after this long; None waits as long as it takes.
        on_wait: called once when a unit of work first has to wait, with the error.
        stop: checked between tries; True gives up at once (the harness is stopping).
    """

    deadline_s: float | None = 90.0
    on_wait: Callable[[Exception], None] | None = None
    stop: Callable[[], bool] | None = None


def with_db_retry(work: Callable[[], _T], policy: RetryPolicy | None = None) -> _T:
    """Run a unit of work, trying again while the database is briefly unavailable.

    Raises:
        sqlalchemy.exc.DBAPIError: the error is not transient, or the policy gave up.
    """
    policy = policy or RetryPolicy()
    started = walltime.monotonic()
    pause = 0.05
    waited = False
    while True:
        try:
            return work()
        except DBAPIError as exc:
            if not is_transient(exc):
                raise
            if policy.deadline_s is not None and walltime.monotonic() - started > policy.deadline_s:
                raise
            if policy.stop is not None and policy.stop():
                raise
            if not waited:
                waited = True
                log.warning("db.unavailable", extra={"error": str(exc.orig)[:200]})
                if policy.on_wait is not None:
                    policy.on_wait(exc)
            walltime.sleep(pause)
            pause = min(pause * 2, 2.0)


# --- the store ------------------------------------------------------------------------------


class _CandleBatchingJournal:
    """Replays into a SqlJournal but keeps the candles for one multi-row upsert at the end
    (candles reference nothing, so writing them last in the transaction changes nothing)."""

    def __init__(self, inner: SqlJournal) -> None:
        self.inner = inner
        self.candles: list[Candle] = []

    def candle(self, candle: Candle) -> None:
        self.candles.append(candle)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _apply(session: Session, account: str, batches: Iterable[tuple[Ops, Sequence[Tick]]]) -> None:
    """Write journal calls and sampled ticks into their tables, in order."""
    journal = _CandleBatchingJournal(SqlJournal(session, account))
    stored: list[Tick] = []
    for ops, ticks in batches:
        for name, args in ops:
            getattr(journal, name)(*args)
        stored.extend(ticks)
    # One row per key: a multi-row upsert must not touch a row twice.
    latest = {(c.instrument_key, c.interval_s, c.start_ms): c for c in journal.candles}
    if latest:
        CandleRepository(session).upsert_many(latest.values())
    if stored:
        TickRepository(session).insert_many(stored)


@dataclass(frozen=True, slots=True)
class AccountRecord:
    """What the account row says at start-up."""

    kill_switch: bool
    kill_switch_reason: str
    starting_capital_paise: int


class AccountStore:
    """One account's records in one database, for one harness's checkpoint.

    Args:
        sessions: the database's session factory.
        account: the account's name.
        harness: whose checkpoint row ("embedded", "distributed").
        retry: how long a unit of work waits for an unavailable database.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        account: str,
        *,
        harness: str,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.sessions = sessions
        self.account = account
        self.harness = harness
        self.retry = retry or RetryPolicy()

    def run(self, work: Callable[[Session], _T]) -> _T:
        """Run `work` in one transaction, waiting out an unavailable database."""

        def unit() -> _T:
            with session_scope(self.sessions) as session:
                return work(session)

        return with_db_retry(unit, self.retry)

    # --- set-up -------------------------------------------------------------------------------

    def prepare(
        self, instruments: Iterable[Instrument], *, starting_capital_paise: int, mode: AccountMode
    ) -> AccountRecord:
        """Create the account and its symbols if new; return its switches and capital."""
        listed = list(instruments)

        def work(session: Session) -> AccountRecord:
            now = datetime.now(UTC)
            SymbolRepository(session).upsert_many(listed, now)
            record = AccountRepository(session).get_or_create(
                self.account, mode=mode, starting_capital_paise=starting_capital_paise, at=now
            )
            return AccountRecord(
                kill_switch=record.kill_switch,
                kill_switch_reason=record.kill_switch_reason or "",
                starting_capital_paise=record.starting_capital_paise,
            )

        return self.run(work)

    def capital_on(self, trading_date: date, starting_capital_paise: int) -> int:
        """The account's opening capital on `trading_date`: the starting capital plus the net
        P&L of every trade of the days before."""

        def work(session: Session) -> int:
            earlier = TradeRepository(session, self.account).net_pnl_paise(
                date(1970, 1, 1), trading_date - timedelta(days=1)
            )
            return starting_capital_paise + earlier

        return self.run(work)

    def banned(self) -> frozenset[str]:
        """Instruments in the F&O ban period (marked by `universe refresh --ban-list`)."""
        return self.run(
            lambda session: frozenset(SymbolRepository(session).banned_instrument_keys())
        )

    # --- checkpoint and commit ------------------------------------------------------------------

    def checkpoint(self) -> Checkpoint | None:
        """The harness's newest checkpoint, or None (it never ran)."""
        return self.run(
            lambda session: CheckpointRepository(session, self.account, self.harness).get_or_none()
        )

    def commit(
        self,
        buffer: BufferedJournal,
        checkpoint: Checkpoint | None,
        *,
        ticks: Sequence[Tick] = (),
        extra: Sequence[Callable[[Session], None]] = (),
    ) -> int:
        """Write what the engine journalled, sampled ticks, the caller's `extra` writes and the
        checkpoint in one transaction; returns how many journal entries were written (forget
        them after).

        Raises:
            FencedOut: another holder committed for the account since this one did.
        """

        def work(session: Session) -> int:
            ops = buffer.ops(len(buffer))
            _apply(session, self.account, [(ops, ticks)])
            for write in extra:
                write(session)
            if checkpoint is not None:
                CheckpointRepository(session, self.account, self.harness).save(
                    checkpoint, datetime.now(UTC)
                )
            return len(ops)

        return self.run(work)

    def write_ahead(self, ops: Ops, ticks: Sequence[Tick], checkpoint: Checkpoint) -> int:
        """Make journal calls and sampled ticks durable as one pending write beside the
        checkpoint they lead to (db/repositories/pending_writes.py): what goes before an order
        is sent, at a fraction of the cost of `commit`. `settle` them soon after.

        Returns:
            the pending write's id.

        Raises:
            FencedOut: another holder committed for the account since this one did.
        """
        payload = pending_writes.encode(ops, ticks)

        def work(session: Session) -> int:
            now = datetime.now(UTC)
            ident = PendingWriteRepository(session, self.account, self.harness).add(payload, now)
            CheckpointRepository(session, self.account, self.harness).save(checkpoint, now)
            return ident

        return self.run(work)

    def settle(self, written: Sequence[tuple[int, Ops, Sequence[Tick]]]) -> None:
        """Move pending writes (id, journal calls, ticks), oldest first, into their tables and
        delete them, in one transaction.

        Raises:
            FencedOut: another instance settled them first (it took the account over).
        """
        ids = [ident for ident, _, _ in written]

        def work(session: Session) -> None:
            removed = PendingWriteRepository(session, self.account, self.harness).remove(ids)
            if removed != len(ids):
                raise FencedOut(
                    f"account {self.account!r}: pending writes {ids} were settled by another holder"
                )
            _apply(session, self.account, [(ops, ticks) for _, ops, ticks in written])

        self.run(work)

    def settle_pending(self) -> int:
        """Settle what a kernel of this harness wrote ahead and did not settle (its process
        died between the write and the settle); returns how many pending writes there were.
        The kernel calls it when it is built, before it reads anything."""

        def work(session: Session) -> int:
            taken = PendingWriteRepository(session, self.account, self.harness).take_all()
            _apply(session, self.account, [pending_writes.decode(payload) for payload in taken])
            return len(taken)

        count = self.run(work)
        if count:
            log.warning(
                "store.pending_writes_settled",
                extra={"account": self.account, "harness": self.harness, "count": count},
            )
        return count

    def contract_notes(self, trading_date: date) -> list[tuple[str, int, list[OrderExecution]]]:
        """The day's contract notes as its trades left them: per instrument, the charges its
        trades paid and the orders they executed (trading/charges.py), so that a restarted
        kernel charges the next trades as without the restart."""

        def work(session: Session) -> list[tuple[str, int, list[OrderExecution]]]:
            trades = TradeRepository(session, self.account).find(
                start_date=trading_date, end_date=trading_date, limit=1_000_000
            )
            orders = OrderRepository(session, self.account)
            notes: dict[str, tuple[int, dict[str, OrderExecution]]] = {}
            for trade in trades:
                booked, executed = notes.get(trade.instrument_key, (0, {}))
                for order_id in (trade.entry_order_id, trade.exit_order_id):
                    order = orders.get_or_none(order_id)
                    if order is not None and order.filled_quantity:
                        executed[order_id] = OrderExecution(
                            order_id=order_id,
                            side=order.side,
                            quantity=order.filled_quantity,
                            value_paise=order.executed_value_paise,
                        )
                notes[trade.instrument_key] = (booked + trade.charges_paise, executed)
            return [(key, booked, list(ex.values())) for key, (booked, ex) in notes.items()]

        return self.run(work)

    # --- the recovery reader ----------------------------------------------------------------

    def read_state(
        self,
        *,
        trading_date: date,
        now: datetime,
        capital_paise: int,
        instruments: Iterable[str],
        candle_interval_s: int,
        series_capacity: int,
        rate_horizon_s: int,
        last_prices: Mapping[str, int],
    ) -> EngineState:
        """What the engine held on `trading_date` up to `now`, as the database records it.

        Args:
            capital_paise: the day's opening capital (`capital_on`).
            instruments: whose candle windows to rebuild.
            rate_horizon_s: how far back the order-rate windows reach.
            last_prices: the latest prices known (warmed up from ticks); positions are
                priced at them.
        """
        keys = list(instruments)

        def work(session: Session) -> EngineState:
            return _read_state(
                session,
                self.account,
                trading_date=trading_date,
                now=now,
                capital_paise=capital_paise,
                instruments=keys,
                candle_interval_s=candle_interval_s,
                series_capacity=series_capacity,
                rate_horizon_s=rate_horizon_s,
                last_prices=last_prices,
            )

        return self.run(work)


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), tzinfo=IST)
    return start, start + timedelta(days=1)


def _read_state(
    session: Session,
    account: str,
    *,
    trading_date: date,
    now: datetime,
    capital_paise: int,
    instruments: Sequence[str],
    candle_interval_s: int,
    series_capacity: int,
    rate_horizon_s: int,
    last_prices: Mapping[str, int],
) -> EngineState:
    day_start, day_end = _day_bounds(trading_date)
    # The strategy's candle windows up to the restart point (they span days).
    candles_repo = CandleRepository(session)
    candles: dict[str, list[Candle]] = {}
    for key in instruments:
        window = candles_repo.latest(key, candle_interval_s, series_capacity, before=now)
        if window:
            candles[key] = window
    positions = PositionRepository(session, account).open_positions()
    # The day's money and counters.
    todays = TradeRepository(session, account).find(
        start_date=trading_date, end_date=trading_date, limit=1_000_000
    )
    orders_today = (
        session.scalar(
            select(func.count())
            .select_from(OrderRow)
            .where(
                OrderRow.account == account,
                OrderRow.created_at >= day_start,
                OrderRow.created_at < day_end,
            )
        )
        or 0
    )
    snapshot = AccountRepository(session).latest_snapshot(account, on_or_before=trading_date)
    loss_limit_hit = bool(
        snapshot and snapshot.trading_date == trading_date.isoformat() and snapshot.loss_limit_hit
    )
    cooldowns: dict[str, int] = {}
    rows = session.execute(
        select(SignalRow.instrument_key, func.max(SignalRow.created_at))
        .where(
            SignalRow.account == account,
            SignalRow.created_at >= day_start,
            SignalRow.created_at < day_end,
            SignalRow.type.in_(ENTRY_TYPES),
            SignalRow.status != SignalStatus.IGNORED.value,
        )
        .group_by(SignalRow.instrument_key)
    )
    for key, latest in rows:
        cooldowns[key] = datetime_to_ms(latest)
    # Exits that were waiting for a slot, and how many exit orders each position has had.
    audit = AuditRepository(session)
    orders = OrderRepository(session, account)
    queued: dict[str, ExitReason] = {}
    attempts: dict[str, int] = {}
    for position in positions:
        key = position.instrument_key
        exit_orders = [
            o
            for o in orders.find(instrument_key=key, since=position.entry_at, limit=1000)
            if o.purpose is OrderPurpose.EXIT
        ]
        if exit_orders:
            attempts[key] = len(exit_orders)
        if position.exit_pending:
            continue
        triggers = audit.find(
            entity="position",
            entity_id=key,
            event="exit.triggered",
            since=position.entry_at,
            limit=1,
        )
        last_exit_order_at = max((o.created_at for o in exit_orders), default=None)
        if triggers and (last_exit_order_at is None or triggers[0].at >= last_exit_order_at):
            queued[key] = ExitReason(str(triggers[0].data["reason"]))
    # Orders left in flight, and the price each entry was sized at.
    unfinished = orders.unfinished()
    references: dict[str, int] = {}
    for order in unfinished:
        if order.purpose is OrderPurpose.ENTRY and order.signal_id:
            price = session.scalar(
                select(RiskDecisionRow.price_paise)
                .where(RiskDecisionRow.signal_id == order.signal_id)
                .limit(1)
            )
            if price:
                references[order.client_order_id] = int(price)
    sent = RateLimitLogRepository(session, account).sent_ms_since(
        now - timedelta(seconds=rate_horizon_s)
    )
    prices = dict(last_prices)
    for key, window in candles.items():
        prices.setdefault(key, window[-1].close_paise)
    return EngineState(
        trading_date=trading_date,
        capital_paise=capital_paise,
        positions=positions,
        unfinished_orders=unfinished,
        reference_prices=references,
        realised_paise=sum(t.net_pnl_paise for t in todays),
        charges_paise=sum(t.charges_paise for t in todays),
        trades=len(todays),
        orders=orders_today,
        loss_limit_hit=loss_limit_hit,
        last_prices=prices,
        candles=candles,
        last_entry_signal_ms=cooldowns,
        sent_ms=[ms for ms in sent if ms <= datetime_to_ms(now)],
        queued_exits=queued,
        exit_attempts=attempts,
    )

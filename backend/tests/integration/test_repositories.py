"""Repositories and SqlJournal against SQLite and PostgreSQL, each test rolled back."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from upstox_bot.db import migrate
from upstox_bot.db.models import (
    AccountMode,
    ApiKeyScope,
    FillRow,
    OrderRow,
    PositionRow,
    PositionStatus,
    RateLimitLogRow,
    RiskDecisionRow,
)
from upstox_bot.db.repositories import (
    AccountRepository,
    ApiKeyRepository,
    AuditRepository,
    CandleRepository,
    OrderRepository,
    PositionRepository,
    RateLimitLogRepository,
    SettingsOverrideRepository,
    SignalRepository,
    SqlJournal,
    SymbolRepository,
    TickRepository,
    TradeRepository,
)
from upstox_bot.db.repositories.orders import order_values
from upstox_bot.db.repositories.positions import position_values
from upstox_bot.db.session import make_engine, make_session_factory, session_scope
from upstox_bot.domain import (
    AccountSnapshot,
    AuditRecord,
    Candle,
    ClientOrderId,
    Direction,
    ExitReason,
    Fill,
    Instrument,
    InstrumentKind,
    OptionType,
    Order,
    OrderPurpose,
    OrderStatus,
    OrderType,
    Position,
    RiskDecision,
    Side,
    Signal,
    SignalId,
    SignalStatus,
    SignalType,
    Tick,
    Trade,
    datetime_to_ms,
)
from upstox_bot.errors import Conflict, NotFound
from upstox_bot.trading.ports import Journal

IST = ZoneInfo("Asia/Kolkata")
ACCOUNT = "paper"
T0 = datetime(2026, 11, 23, 9, 30, tzinfo=IST)  # a Monday, 04:00 UTC
RELIANCE = "NSE_EQ|INE002A01018"
TCS = "NSE_EQ|INE467B01029"


def make_order(**overrides: Any) -> Order:
    values: dict[str, Any] = {
        "client_order_id": ClientOrderId("ub-entry-0001"),
        "instrument_key": RELIANCE,
        "side": Side.BUY,
        "quantity": 10,
        "lots": 1,
        "purpose": OrderPurpose.ENTRY,
        "order_type": OrderType.MARKET,
        "status": OrderStatus.PENDING,
        "created_at": T0,
        "updated_at": T0,
        "reason": "ema cross",
        "signal_id": SignalId("sig-0001"),
    }
    values.update(overrides)
    return Order(**values)


def make_position(**overrides: Any) -> Position:
    values: dict[str, Any] = {
        "instrument_key": RELIANCE,
        "direction": Direction.LONG,
        "quantity": 10,
        "lots": 1,
        "entry_price_paise": 250_000,
        "entry_at": T0,
        "entry_order_id": ClientOrderId("ub-entry-0001"),
        "stop_paise": 237_500,
        "target_paise": 260_000,
        "best_price_paise": 250_000,
        "last_price_paise": 250_000,
        "entry_charges_paise": 1_234,
        "strategy": "ema_rsi",
    }
    values.update(overrides)
    return Position(**values)


def make_trade(**overrides: Any) -> Trade:
    values: dict[str, Any] = {
        "trade_id": "trade-0001",
        "instrument_key": RELIANCE,
        "direction": Direction.LONG,
        "quantity": 10,
        "lots": 1,
        "entry_price_paise": 250_000,
        "exit_price_paise": 262_000,
        "entry_at": T0,
        "exit_at": T0 + timedelta(hours=2),
        "gross_pnl_paise": 120_000,
        "charges_paise": 6_000,
        "net_pnl_paise": 114_000,
        "exit_reason": ExitReason.TRAILING_STOP,
        "entry_order_id": ClientOrderId("ub-entry-0001"),
        "exit_order_id": ClientOrderId("ub-exit-0001"),
        "strategy": "ema_rsi",
    }
    values.update(overrides)
    return Trade(**values)


def make_signal(**overrides: Any) -> Signal:
    values: dict[str, Any] = {
        "signal_id": SignalId("sig-0001"),
        "instrument_key": RELIANCE,
        "strategy": "ema_rsi",
        "type": SignalType.ENTRY_LONG,
        "strength": 0.75,
        "reason": "ema 9 crossed above 21",
        "price_paise": 250_000,
        "candle_start_ms": datetime_to_ms(T0 - timedelta(minutes=1)),
        "created_at": T0,
        "indicators": {"ema_fast": 2501.5, "ema_slow": 2499.0, "rsi": 61.2},
    }
    values.update(overrides)
    return Signal(**values)


def make_snapshot(**overrides: Any) -> AccountSnapshot:
    values: dict[str, Any] = {
        "trading_date": "2026-11-23",
        "capital_paise": 10_000_000,
        "realised_pnl_paise": 0,
        "unrealised_pnl_paise": 0,
        "charges_paise": 0,
        "open_positions": 0,
        "trades": 0,
        "orders": 0,
        "loss_limit_paise": 200_000,
        "loss_limit_hit": False,
        "kill_switch": False,
    }
    values.update(overrides)
    return AccountSnapshot(**values)


def make_fill(**overrides: Any) -> Fill:
    values: dict[str, Any] = {
        "fill_id": "fill-0001",
        "client_order_id": ClientOrderId("ub-entry-0001"),
        "broker_order_id": "B-1",
        "instrument_key": RELIANCE,
        "side": Side.BUY,
        "quantity": 10,
        "price_paise": 250_000,
        "filled_at": T0 + timedelta(seconds=1),
    }
    values.update(overrides)
    return Fill(**values)


def journal(session: Session) -> SqlJournal:
    return SqlJournal(session, ACCOUNT, now=lambda: T0)


def count(session: Session, model: type[Any]) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


# --- Orders and fills ------------------------------------------------------------------------


def test_sql_journal_satisfies_the_journal_protocol(db_session: Session) -> None:
    recorder: Journal = journal(db_session)
    assert isinstance(recorder, SqlJournal)


def test_order_insert_and_update_by_client_id_is_idempotent(db_session: Session) -> None:
    recorder = journal(db_session)
    order = make_order()

    recorder.order(order)
    recorder.order(order)
    filled = replace(
        order,
        status=OrderStatus.FILLED,
        broker_order_id="B-1",
        filled_quantity=10,
        average_price_paise=250_050,
        updated_at=T0 + timedelta(seconds=2),
    )
    recorder.order(filled)
    recorder.order(filled)

    assert count(db_session, OrderRow) == 1
    assert OrderRepository(db_session, ACCOUNT).get(order.client_order_id) == filled


def test_order_update_older_than_the_stored_state_is_ignored(db_session: Session) -> None:
    recorder = journal(db_session)
    order = make_order()
    filled = replace(order, status=OrderStatus.FILLED, updated_at=T0 + timedelta(seconds=5))
    late_retry = replace(order, status=OrderStatus.SUBMITTING, updated_at=T0 + timedelta(seconds=1))

    recorder.order(order)
    recorder.order(filled)
    recorder.order(late_retry)

    assert OrderRepository(db_session, ACCOUNT).get(order.client_order_id).status is (
        OrderStatus.FILLED
    )


def test_order_with_a_known_client_id_but_other_contents_conflicts(db_session: Session) -> None:
    recorder = journal(db_session)
    recorder.order(make_order())

    with pytest.raises(Conflict, match="instrument_key"):
        recorder.order(make_order(instrument_key=TCS))


def test_database_rejects_a_second_order_with_the_same_client_id(db_session: Session) -> None:
    db_session.add(OrderRow(**order_values(make_order(), ACCOUNT)))
    db_session.flush()

    savepoint = db_session.begin_nested()
    db_session.add(OrderRow(**order_values(make_order(instrument_key=TCS), ACCOUNT)))
    with pytest.raises(IntegrityError):
        db_session.flush()
    savepoint.rollback()

    assert count(db_session, OrderRow) == 1


def test_fill_is_recorded_once_and_needs_its_order(db_session: Session) -> None:
    recorder = journal(db_session)
    recorder.order(make_order())
    fill = make_fill()

    recorder.fill(fill)
    recorder.fill(fill)
    with pytest.raises(Conflict):
        recorder.fill(replace(fill, price_paise=251_000))
    with pytest.raises(IntegrityError), db_session.begin_nested():
        recorder.fill(make_fill(fill_id="fill-orphan", client_order_id=ClientOrderId("unknown")))

    assert count(db_session, FillRow) == 1
    assert OrderRepository(db_session, ACCOUNT).fills("ub-entry-0001") == [fill]


def test_unknown_order_is_not_found(db_session: Session) -> None:
    orders = OrderRepository(db_session, ACCOUNT)
    assert orders.get_or_none("nope") is None
    with pytest.raises(NotFound):
        orders.get("nope")


def test_orders_are_listed_newest_first_with_filters_and_pages(db_session: Session) -> None:
    recorder = journal(db_session)
    statuses = [OrderStatus.FILLED, OrderStatus.REJECTED, OrderStatus.FILLED, OrderStatus.OPEN]
    for i, status in enumerate(statuses):
        at = T0 + timedelta(minutes=i)
        recorder.order(
            make_order(
                client_order_id=ClientOrderId(f"ub-{i}"),
                instrument_key=RELIANCE if i % 2 == 0 else TCS,
                status=status,
                created_at=at,
                updated_at=at,
            )
        )
    SqlJournal(db_session, "other").order(make_order(client_order_id=ClientOrderId("ub-x")))
    orders = OrderRepository(db_session, ACCOUNT)

    assert [o.client_order_id for o in orders.find()] == ["ub-3", "ub-2", "ub-1", "ub-0"]
    assert [o.client_order_id for o in orders.find(limit=2, offset=1)] == ["ub-2", "ub-1"]
    assert [o.client_order_id for o in orders.find(instrument_key=TCS)] == ["ub-3", "ub-1"]
    assert [o.client_order_id for o in orders.find(status=OrderStatus.FILLED)] == ["ub-2", "ub-0"]
    both = orders.find(status=[OrderStatus.REJECTED, OrderStatus.OPEN])
    assert [o.client_order_id for o in both] == ["ub-3", "ub-1"]
    window = orders.find(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3))
    assert [o.client_order_id for o in window] == ["ub-2", "ub-1"]
    assert orders.count() == 4
    assert orders.count(status=OrderStatus.FILLED, instrument_key=RELIANCE) == 2
    assert [o.client_order_id for o in orders.unfinished()] == ["ub-3"]


# --- Positions, trades and the journal end to end -------------------------------------------


def test_database_allows_one_open_position_per_instrument(db_session: Session) -> None:
    def row(entry_order_id: str, status: PositionStatus) -> PositionRow:
        position = make_position(entry_order_id=ClientOrderId(entry_order_id))
        values = position_values(position, ACCOUNT, T0)
        values["status"] = status.value
        return PositionRow(**values)

    db_session.add_all([row("e-1", PositionStatus.CLOSED), row("e-2", PositionStatus.CLOSED)])
    db_session.add(row("e-3", PositionStatus.OPEN))
    db_session.flush()

    savepoint = db_session.begin_nested()
    db_session.add(row("e-4", PositionStatus.OPEN))
    with pytest.raises(IntegrityError):
        db_session.flush()
    savepoint.rollback()

    assert count(db_session, PositionRow) == 3


def test_journal_refuses_a_second_open_position_in_an_instrument(db_session: Session) -> None:
    recorder = journal(db_session)
    position = make_position()

    recorder.position_opened(position)
    recorder.position_opened(position)  # the same position again: no-op
    with pytest.raises(Conflict, match="already open"):
        recorder.position_opened(make_position(entry_order_id=ClientOrderId("ub-entry-0002")))

    assert PositionRepository(db_session, ACCOUNT).open_positions() == [position]


def test_journal_records_a_round_trip_end_to_end(db_session: Session) -> None:
    accounts = AccountRepository(db_session)
    accounts.get_or_create(
        ACCOUNT, mode=AccountMode.PAPER, starting_capital_paise=10_000_000, at=T0
    )
    recorder = journal(db_session)
    signal = make_signal()
    entry = make_order()
    position = make_position()
    trade = make_trade()

    recorder.signal(signal, SignalStatus.NEW)
    recorder.risk_decision(
        RiskDecision(
            approved=True,
            reason="sized at 5% risk",
            instrument_key=RELIANCE,
            signal_id=signal.signal_id,
            quantity=10,
            lots=1,
            price_paise=250_000,
            stop_paise=237_500,
            target_paise=260_000,
            decided_at=T0,
        )
    )
    recorder.signal_status(signal.signal_id, SignalStatus.ACCEPTED)
    recorder.order(entry)
    recorder.order(replace(entry, status=OrderStatus.SUBMITTING))
    recorder.order_sent(entry.client_order_id, T0)
    recorder.order(replace(entry, status=OrderStatus.FILLED, filled_quantity=10))
    recorder.fill(make_fill())
    recorder.position_opened(position)
    recorder.account(make_snapshot(open_positions=1, orders=1))

    moved = replace(
        position,
        trailing_active=True,
        best_price_paise=265_000,
        trail_stop_paise=259_700,
        last_price_paise=264_000,
        exit_pending=True,
    )
    recorder.position_updated(moved)
    positions = PositionRepository(db_session, ACCOUNT)
    assert positions.open_positions() == [moved]
    assert positions.history()[0].unrealised_pnl_paise == 140_000

    exit_order = make_order(
        client_order_id=ClientOrderId("ub-exit-0001"),
        side=Side.SELL,
        purpose=OrderPurpose.EXIT,
        exit_reason=ExitReason.TRAILING_STOP,
        signal_id=None,
        status=OrderStatus.FILLED,
        created_at=trade.exit_at,
        updated_at=trade.exit_at,
    )
    recorder.order(exit_order)
    recorder.order_sent(exit_order.client_order_id, trade.exit_at)
    recorder.position_closed(moved, trade)
    recorder.position_closed(moved, trade)  # a replay: the trade id is known, nothing changes
    recorder.account(make_snapshot(realised_pnl_paise=114_000, trades=1, orders=2))
    recorder.audit(
        AuditRecord(
            event="position.closed",
            entity="position",
            entity_id=RELIANCE,
            at=trade.exit_at,
            data={"pnl": Decimal("1140.00"), "reason": ExitReason.TRAILING_STOP, "x": math.inf},
        )
    )

    assert positions.open_positions() == []
    (closed,) = positions.history()
    assert closed.status is PositionStatus.CLOSED
    assert closed.realised_pnl_paise == 114_000
    assert closed.closed_at == trade.exit_at
    assert closed.position.last_price_paise == 262_000
    trades = TradeRepository(db_session, ACCOUNT)
    assert trades.find() == [trade]
    assert trades.get("trade-0001") == trade
    assert trades.net_pnl_paise(date(2026, 11, 23)) == 114_000
    assert SignalRepository(db_session, ACCOUNT).get("sig-0001").status is SignalStatus.ACCEPTED
    assert count(db_session, RiskDecisionRow) == 1
    assert OrderRepository(db_session, ACCOUNT).unfinished() == []
    snapshot = accounts.latest_snapshot(ACCOUNT)
    assert snapshot == make_snapshot(realised_pnl_paise=114_000, trades=1, orders=2)
    assert accounts.trading_days(ACCOUNT) == 1
    sent = RateLimitLogRepository(db_session, ACCOUNT).sent_ms_since(T0)
    assert sent == [datetime_to_ms(T0), datetime_to_ms(trade.exit_at)]
    (audit,) = AuditRepository(db_session).find(entity="position", entity_id=RELIANCE)
    assert audit.data == {"pnl": "1140.00", "reason": "trailing_stop", "x": None}


def test_updating_or_closing_a_position_that_is_not_open_is_not_found(db_session: Session) -> None:
    recorder = journal(db_session)
    with pytest.raises(NotFound):
        recorder.position_updated(make_position())
    with pytest.raises(NotFound), db_session.begin_nested():
        recorder.position_closed(make_position(), make_trade())
    with pytest.raises(NotFound):
        recorder.signal_status("no-such-signal", SignalStatus.IGNORED)


def test_trades_filter_by_trading_date_and_sum_net_pnl(db_session: Session) -> None:
    recorder = journal(db_session)
    days = [T0, T0 + timedelta(days=1), T0 + timedelta(days=1, hours=1), T0 + timedelta(days=2)]
    for i, entry_at in enumerate(days):
        entry_id = ClientOrderId(f"e-{i}")
        instrument = RELIANCE if i != 2 else TCS
        recorder.position_opened(
            make_position(entry_order_id=entry_id, instrument_key=instrument, entry_at=entry_at)
        )
        recorder.position_closed(
            make_position(entry_order_id=entry_id, instrument_key=instrument),
            make_trade(
                trade_id=f"t-{i}",
                instrument_key=instrument,
                entry_at=entry_at,
                exit_at=entry_at + timedelta(minutes=30),
                net_pnl_paise=1_000 * (i + 1),
                entry_order_id=entry_id,
            ),
        )
    trades = TradeRepository(db_session, ACCOUNT)

    assert [t.trade_id for t in trades.find()] == ["t-3", "t-2", "t-1", "t-0"]
    assert [t.trade_id for t in trades.find(limit=1, offset=1)] == ["t-2"]
    assert [t.trade_id for t in trades.find(instrument_key=TCS)] == ["t-2"]
    nov24 = date(2026, 11, 24)
    assert [t.trade_id for t in trades.find(start_date=nov24, end_date=nov24)] == ["t-2", "t-1"]
    assert trades.net_pnl_paise(nov24) == 5_000
    assert trades.net_pnl_paise(date(2026, 11, 23), date(2026, 11, 25)) == 10_000
    assert trades.net_pnl_paise(date(2026, 11, 30)) == 0
    assert trades.count(start_date=nov24) == 3
    history = PositionRepository(db_session, ACCOUNT).history(instrument_key=RELIANCE, limit=2)
    assert [r.position.entry_order_id for r in history] == ["e-3", "e-1"]


def test_trading_date_is_the_ist_date_of_the_exit(db_session: Session) -> None:
    # 00:30 IST on the 24th is still the 23rd in UTC.
    exit_at = datetime(2026, 11, 24, 0, 30, tzinfo=IST)
    recorder = journal(db_session)
    recorder.position_opened(make_position())
    recorder.position_closed(make_position(), make_trade(exit_at=exit_at))

    trades = TradeRepository(db_session, ACCOUNT)
    assert trades.net_pnl_paise(date(2026, 11, 24)) == 114_000
    assert trades.net_pnl_paise(date(2026, 11, 23)) == 0


# --- Signals, audit, accounts ------------------------------------------------------------------


def test_signals_round_trip_with_filters_and_non_finite_indicators(db_session: Session) -> None:
    recorder = journal(db_session)
    first = make_signal(indicators={"rsi": math.nan, "ema": 2500.25})
    second = make_signal(
        signal_id=SignalId("sig-0002"),
        instrument_key=TCS,
        type=SignalType.EXIT_LONG,
        created_at=T0 + timedelta(minutes=5),
    )
    recorder.signal(first, SignalStatus.NEW)
    recorder.signal(first, SignalStatus.REJECTED)  # recorded again: only the status changes
    recorder.signal(second, SignalStatus.IGNORED)
    signals = SignalRepository(db_session, ACCOUNT)

    stored = signals.get("sig-0001")
    assert stored.status is SignalStatus.REJECTED
    assert math.isnan(stored.signal.indicators["rsi"])
    assert stored.signal.indicators["ema"] == 2500.25
    assert replace(stored.signal, indicators={}) == replace(first, indicators={})
    assert [r.signal.signal_id for r in signals.recent()] == ["sig-0002", "sig-0001"]
    assert [r.signal.signal_id for r in signals.recent(instrument_key=TCS)] == ["sig-0002"]
    assert [r.signal.signal_id for r in signals.recent(status=SignalStatus.REJECTED)] == [
        "sig-0001"
    ]
    assert [r.signal.signal_id for r in signals.recent(signal_type=SignalType.EXIT_LONG)] == [
        "sig-0002"
    ]
    assert [r.signal.signal_id for r in signals.recent(until=T0 + timedelta(minutes=1))] == [
        "sig-0001"
    ]
    assert [r.signal.signal_id for r in signals.recent(limit=1, offset=1)] == ["sig-0001"]
    with pytest.raises(NotFound):
        SignalRepository(db_session, "other").get("sig-0001")


def test_audit_log_is_queried_by_entity_event_and_time(db_session: Session) -> None:
    audit = AuditRepository(db_session)
    events = [
        ("order.created", "order", "ub-1"),
        ("order.filled", "order", "ub-1"),
        ("setting.changed", "setting", "RISK_PER_TRADE"),
        ("order_book.synced", "broker", "all"),
    ]
    for i, (event, entity, entity_id) in enumerate(events):
        audit.add(
            AuditRecord(
                event=event,
                entity=entity,
                entity_id=entity_id,
                at=T0 + timedelta(minutes=i),
                data={"i": i},
                actor="api" if entity == "setting" else "engine",
            )
        )

    assert [r.event for r in audit.find(entity="order", entity_id="ub-1")] == [
        "order.filled",
        "order.created",
    ]
    # "_" is a LIKE wildcard: the prefix must be matched literally.
    assert [r.event for r in audit.find(event_prefix="order.")] == ["order.filled", "order.created"]
    assert [r.event for r in audit.find(actor="api")] == ["setting.changed"]
    window = audit.find(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3))
    assert [r.data["i"] for r in window] == [2, 1]
    assert [r.event for r in audit.find(limit=1, offset=3)] == ["order.created"]


def test_account_is_created_once_and_its_switches_change(db_session: Session) -> None:
    accounts = AccountRepository(db_session)
    created = accounts.get_or_create(
        ACCOUNT, mode=AccountMode.PAPER, starting_capital_paise=10_000_000, at=T0
    )
    again = accounts.get_or_create(
        ACCOUNT, mode=AccountMode.LIVE, starting_capital_paise=1, at=T0 + timedelta(days=1)
    )
    assert again == created
    assert created.paper_started_at == T0

    later = T0 + timedelta(hours=1)
    on = accounts.set_kill_switch(ACCOUNT, on=True, reason="daily loss limit", at=later)
    assert (on.kill_switch, on.kill_switch_reason, on.updated_at) == (
        True,
        "daily loss limit",
        later,
    )
    off = accounts.set_kill_switch(ACCOUNT, on=False, reason="ignored when off", at=later)
    assert (off.kill_switch, off.kill_switch_reason) == (False, None)
    assert accounts.set_live_trading(ACCOUNT, enabled=True, at=later).live_trading_enabled
    assert accounts.set_mode(ACCOUNT, mode=AccountMode.LIVE, at=later).mode is AccountMode.LIVE
    with pytest.raises(NotFound):
        accounts.set_kill_switch("nobody", on=True, reason="x", at=later)


def test_account_snapshots_upsert_by_trading_date(db_session: Session) -> None:
    recorder = journal(db_session)
    accounts = AccountRepository(db_session)
    recorder.account(make_snapshot(trading_date="2026-11-23", realised_pnl_paise=-5_000))
    recorder.account(make_snapshot(trading_date="2026-11-24", realised_pnl_paise=1_000))
    recorder.account(make_snapshot(trading_date="2026-11-24", realised_pnl_paise=2_000))

    latest = accounts.latest_snapshot(ACCOUNT)
    assert latest is not None
    assert (latest.trading_date, latest.realised_pnl_paise) == ("2026-11-24", 2_000)
    earlier = accounts.latest_snapshot(ACCOUNT, on_or_before=date(2026, 11, 23))
    assert earlier is not None
    assert earlier.realised_pnl_paise == -5_000
    assert accounts.latest_snapshot(ACCOUNT, on_or_before=date(2026, 11, 22)) is None
    span = accounts.snapshots(ACCOUNT, date(2026, 11, 23), date(2026, 11, 24))
    assert [s.trading_date for s in span] == ["2026-11-23", "2026-11-24"]
    assert accounts.trading_days(ACCOUNT) == 2


# --- Time zones ------------------------------------------------------------------------------


def test_an_ist_datetime_comes_back_as_the_same_aware_instant(db_session: Session) -> None:
    at = datetime(2026, 11, 23, 15, 29, 59, 123456, tzinfo=IST)
    journal(db_session).order(make_order(created_at=at, updated_at=at))
    db_session.expire_all()

    stored = OrderRepository(db_session, ACCOUNT).get("ub-entry-0001")
    assert stored.created_at == at
    assert stored.created_at.utcoffset() == timedelta(0)
    assert stored.created_at.isoformat() == "2026-11-23T09:59:59.123456+00:00"
    window = OrderRepository(db_session, ACCOUNT).find(
        since=datetime(2026, 11, 23, 9, 59, 59, tzinfo=UTC),
        until=datetime(2026, 11, 23, 15, 30, tzinfo=IST),
    )
    assert len(window) == 1


def test_a_naive_datetime_is_refused(db_session: Session) -> None:
    naive = datetime(2026, 11, 23, 9, 30)  # noqa: DTZ001 - the naive value under test
    with pytest.raises(StatementError, match="naive datetime"):
        journal(db_session).order(make_order(created_at=naive, updated_at=naive))


# --- Market data and instruments --------------------------------------------------------------


def test_candles_upsert_replaces_a_bar_and_reads_in_order(db_session: Session) -> None:
    candles = CandleRepository(db_session)
    start = datetime_to_ms(T0)

    def bar(i: int, close: int) -> Candle:
        return Candle(
            instrument_key=RELIANCE,
            interval_s=60,
            start_ms=start + i * 60_000,
            open_paise=250_000,
            high_paise=max(250_000, close),
            low_paise=min(250_000, close),
            close_paise=close,
            volume=1_000 + i,
            ticks=5,
        )

    candles.upsert_many([bar(i, 250_000 + i * 100) for i in range(5)])
    candles.upsert_many([bar(4, 240_000)])
    journal(db_session).candle(bar(5, 241_000))

    stored = candles.find(RELIANCE, 60)
    assert [c.start_ms for c in stored] == [start + i * 60_000 for i in range(6)]
    assert stored[4] == bar(4, 240_000)
    assert candles.latest(RELIANCE, 60, 2) == [bar(4, 240_000), bar(5, 241_000)]
    window = candles.find(RELIANCE, 60, since=bar(1, 0).start_at, until=bar(3, 0).start_at)
    assert [c.start_ms for c in window] == [bar(1, 0).start_ms, bar(2, 0).start_ms]
    assert candles.find(RELIANCE, 300) == []


def test_ticks_bulk_insert_and_read_back(db_session: Session) -> None:
    base_ms = datetime_to_ms(T0)
    ticks = [
        Tick(
            instrument_key=RELIANCE if i % 2 == 0 else TCS,
            ts_ms=base_ms + i * 1_000,
            ltp_paise=250_000 + i,
            ltq=i,
            volume=10 * i,
            bid_paise=249_995 + i,
            ask_paise=250_005 + i,
            oi=None if i % 3 else 1_000,
            iv=0.2 if i % 4 == 0 else None,
        )
        for i in range(2_000)
    ]
    repo = TickRepository(db_session)

    assert repo.insert_many(ticks) == 2_000
    stored = repo.find(RELIANCE)
    assert stored == [t for t in ticks if t.instrument_key == RELIANCE]
    assert repo.latest(TCS) == ticks[-1]
    assert repo.delete_before(T0 + timedelta(seconds=1_000)) == 1_000
    assert len(repo.find(TCS)) == 500


def test_symbols_upsert_keeps_rank_and_ban_and_finds_by_symbol(db_session: Session) -> None:
    symbols = SymbolRepository(db_session)
    reliance = Instrument(
        instrument_key=RELIANCE, trading_symbol="RELIANCE", name="Reliance", lot_size=500
    )
    tcs = Instrument(instrument_key=TCS, trading_symbol="TCS", name="TCS", lot_size=175)
    future = Instrument(
        instrument_key="NSE_FO|1",
        trading_symbol="RELIANCE",
        kind=InstrumentKind.FUTURE,
        segment="NSE_FO",
        underlying_symbol="RELIANCE",
        expiry="2026-11-26",
        lot_size=500,
    )
    option = Instrument(
        instrument_key="NSE_FO|2",
        trading_symbol="RELIANCE 2500 CE",
        kind=InstrumentKind.OPTION,
        segment="NSE_FO",
        underlying_symbol="RELIANCE",
        expiry="2026-11-26",
        strike_paise=250_000,
        option_type=OptionType.CALL,
        lot_size=500,
    )
    symbols.upsert_many([reliance, tcs, future, option], T0)
    symbols.set_liquidity_ranks({TCS: 1, RELIANCE: 2}, T0)
    symbols.set_ban_list([TCS], T0)
    symbols.set_last_prices({RELIANCE: 250_000}, T0)
    symbols.upsert_many([replace(reliance, lot_size=250)], T0 + timedelta(days=1))

    stored = symbols.get(RELIANCE)
    assert stored.instrument == replace(reliance, lot_size=250)
    assert (stored.liquidity_rank, stored.last_price_paise, stored.in_ban) == (2, 250_000, False)
    assert symbols.get("NSE_FO|2").instrument == option
    assert symbols.get_by_symbol("tcs").instrument == tcs
    with pytest.raises(Conflict):
        symbols.get_by_symbol("RELIANCE")
    assert symbols.get_by_symbol("RELIANCE", segment="NSE_FO").instrument == future
    ranked = symbols.find(kind=InstrumentKind.EQUITY)
    assert [r.instrument.trading_symbol for r in ranked] == ["TCS", "RELIANCE"]
    assert [r.instrument.trading_symbol for r in symbols.find(exclude_banned=True, limit=1)] == [
        "RELIANCE"
    ]
    assert len(symbols.find(underlying_symbol="RELIANCE")) == 2

    symbols.set_liquidity_ranks({RELIANCE: 1}, T0)
    symbols.set_ban_list([], T0)
    assert symbols.deactivate_missing([RELIANCE, TCS], T0) == 2
    assert symbols.get(TCS).liquidity_rank is None
    assert not symbols.get(TCS).in_ban
    assert [r.instrument.instrument_key for r in symbols.find()] == [RELIANCE, TCS]
    with pytest.raises(NotFound):
        symbols.get_by_symbol("RELIANCE 2500 CE")


def test_settings_overrides_set_replace_and_delete(db_session: Session) -> None:
    overrides = SettingsOverrideRepository(db_session)
    overrides.set("RISK_PER_TRADE", Decimal("2.5"), updated_by="api", at=T0)
    overrides.set("ALLOW_SHORT", True, updated_by="api", at=T0)
    overrides.set("STRATEGY_PARAMS", {"fast": 9}, updated_by="cli", at=T0)
    overrides.set("ALLOW_SHORT", False, updated_by="cli", at=T0 + timedelta(minutes=1))

    assert overrides.get_all() == {
        "ALLOW_SHORT": False,
        "RISK_PER_TRADE": "2.5",
        "STRATEGY_PARAMS": {"fast": 9},
    }
    allow_short = overrides.find()[0]
    assert (allow_short.updated_by, allow_short.updated_at) == ("cli", T0 + timedelta(minutes=1))
    assert overrides.delete("ALLOW_SHORT")
    assert not overrides.delete("ALLOW_SHORT")
    assert set(overrides.get_all()) == {"RISK_PER_TRADE", "STRATEGY_PARAMS"}


def test_api_keys_store_only_a_hash_and_can_be_revoked(db_session: Session) -> None:
    keys = ApiKeyRepository(db_session)
    record, key = keys.create("dashboard", ApiKeyScope.READ, T0)

    stored_hashes = db_session.scalars(text("SELECT hashed_key FROM api_keys")).all()
    assert key not in stored_hashes
    assert record.prefix == key[:12]
    used = keys.authenticate(key, T0 + timedelta(minutes=1))
    assert used is not None
    assert (used.id, used.scope, used.last_used_at) == (
        record.id,
        ApiKeyScope.READ,
        T0 + timedelta(minutes=1),
    )
    assert keys.authenticate(key + "x", T0) is None

    revoked = keys.revoke(record.id, T0 + timedelta(hours=1))
    assert not revoked.active
    assert keys.authenticate(key, T0 + timedelta(hours=2)) is None
    assert keys.revoke(record.id, T0 + timedelta(hours=3)).revoked_at == T0 + timedelta(hours=1)
    assert keys.find(include_revoked=False) == []
    assert [k.name for k in keys.find()] == ["dashboard"]
    with pytest.raises(NotFound):
        keys.revoke(999_999, T0)


def test_rate_limit_log_rebuilds_the_window_of_allowed_orders(db_session: Session) -> None:
    log = RateLimitLogRepository(db_session, ACCOUNT)
    for seconds in (0, 30, 60, 90):
        log.add(T0 + timedelta(seconds=seconds), client_order_id=f"ub-{seconds}")
    log.add(T0 + timedelta(seconds=95), allowed=False, reason="order_spacing")
    RateLimitLogRepository(db_session, "other").add(T0 + timedelta(seconds=70))

    sent = log.sent_ms_since(T0 + timedelta(seconds=30))
    assert sent == [datetime_to_ms(T0 + timedelta(seconds=s)) for s in (30, 60, 90)]
    assert count(db_session, RateLimitLogRow) == 6


# --- Sessions ---------------------------------------------------------------------------------


def test_session_scope_commits_on_success_and_rolls_back_on_error(tmp_path: Path) -> None:
    url = f"sqlite:///{(tmp_path / 'var' / 'scope.sqlite').as_posix()}"  # make_engine adds var/
    migrate.upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    try:
        with session_scope(factory) as session:
            journal(session).order(make_order())

        def fail_midway() -> None:
            with session_scope(factory) as session:
                journal(session).order(make_order(client_order_id=ClientOrderId("ub-lost")))
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            fail_midway()

        with session_scope(factory) as session:
            assert [o.client_order_id for o in OrderRepository(session, ACCOUNT).find()] == [
                "ub-entry-0001"
            ]
            pragmas = {
                name: session.execute(text(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")
            }
        assert pragmas == {
            "journal_mode": "wal",
            "foreign_keys": 1,
            "synchronous": 1,
            "busy_timeout": 5000,
        }
    finally:
        engine.dispose()

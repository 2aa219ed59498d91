"""Every REST endpoint over a database filled by a real bot session, with and without the bot."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.unit.api.conftest import SESSION_DATE, BotApp
from upstox_bot.config import Settings
from upstox_bot.db.session import make_engine
from upstox_bot.domain import (
    IST,
    ClientOrderId,
    Order,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    OrderType,
    Side,
)
from upstox_bot.trading.ports import CancelOutcome


def rows(settings: Settings, sql: str, **params: object) -> list[Any]:
    engine = make_engine(settings.database_url)
    with engine.connect() as connection:
        result = list(connection.execute(text(sql), params))
    engine.dispose()
    return result


def _error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert body["error"] == code
    assert body["detail"]


# --- health, root, metrics ---------------------------------------------------------------------


def test_health_and_ready_need_no_key(settings: Settings) -> None:
    from upstox_bot.api.app import create_app

    with TestClient(create_app(settings)) as anonymous:
        assert anonymous.get("/health").json()["database"] == "ok"
        ready = anonymous.get("/ready")
        assert ready.status_code == 200
        assert ready.json() == {
            "ready": True,
            "checks": {"database": {"ok": True, "detail": "ok"}},
        }
        assert anonymous.get("/openapi.json").status_code == 200
        assert anonymous.get("/docs").status_code == 200
        _error(anonymous.get("/api/v1"), 401, "unauthenticated")
        _error(anonymous.get("/metrics"), 401, "unauthenticated")


def test_ready_answers_503_when_redis_is_unreachable(settings: Settings) -> None:
    from upstox_bot.api.app import create_app

    broken = settings.model_copy(update={"REDIS_URL": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(broken)) as anonymous:
        response = anonymous.get("/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["redis"]["ok"] is False
    assert response.json()["checks"]["database"]["ok"] is True


def test_root_names_the_docs_and_the_stream(client: TestClient) -> None:
    assert client.get("/api/v1").json()["stream"] == "/api/v1/ws"


def test_metrics_expose_orders_positions_and_headroom(
    client: TestClient, settings: Settings
) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    body = response.text
    ((filled,),) = rows(settings, "SELECT count(*) FROM orders WHERE status = 'filled'")
    assert f'upstox_bot_orders{{status="filled"}} {float(filled)}' in body
    ((open_positions,),) = rows(settings, "SELECT open_positions FROM account_days")
    assert f"upstox_bot_open_positions {float(open_positions)}" in body
    assert "upstox_bot_loss_limit_headroom_rupees" in body
    assert "upstox_bot_kill_switch 0.0" in body


def test_metrics_count_ticks_of_the_running_bot(bot_app: BotApp) -> None:
    body = bot_app.client.get("/metrics").text
    assert f"upstox_bot_ticks_total {float(bot_app.bot.stats.ticks)}" in body


# --- positions ---------------------------------------------------------------------------------


def test_positions_from_the_database_match_the_open_rows(
    client: TestClient, settings: Settings
) -> None:
    stored = rows(settings, "SELECT instrument_key FROM positions WHERE status = 'open'")
    positions = client.get("/api/v1/positions").json()
    assert {p["instrument_key"] for p in positions} == {r[0] for r in stored}
    assert positions, "the two-hour session ends with open positions"
    one = positions[0]
    by_key = client.get(f"/api/v1/positions/{one['instrument_key']}").json()
    by_symbol = client.get(f"/api/v1/positions/{one['trading_symbol']}").json()
    assert by_key == by_symbol == one
    _error(client.get("/api/v1/positions/NSE_EQ|NOPE"), 404, "not_found")


def test_closing_a_position_without_the_bot_is_a_409(client: TestClient) -> None:
    key = client.get("/api/v1/positions").json()[0]["instrument_key"]
    _error(client.post(f"/api/v1/positions/{key}/close"), 409, "bot_not_running")


def test_closing_a_position_with_the_bot_queues_its_exit(bot_app: BotApp) -> None:
    engine = bot_app.bot.engine
    key, position = next(iter(engine.positions.items()))
    engine.risk.rate_limiter.restore([])  # an order slot is free: the exit goes at once

    response = bot_app.client.post(f"/api/v1/positions/{key}/close")

    assert response.status_code == 202, response.text
    assert response.json()["status"] == "exit_queued"
    assert position.exit_pending
    audit = bot_app.client.get(
        "/api/v1/audit", params={"event": "position.close_requested", "entity_id": key}
    ).json()
    assert audit["total"] == 1
    assert audit["items"][0]["actor"].startswith("apikey:trader#")
    orders = bot_app.client.get(
        "/api/v1/orders", params={"instrument_key": key, "sort": "-created_at"}
    ).json()
    assert orders[0]["purpose"] == "exit"
    assert orders[0]["exit_reason"] == "manual"
    _error(bot_app.client.post("/api/v1/positions/NSE_EQ|NOPE/close"), 404, "not_found")


def test_delete_closes_a_position_by_key_or_trading_symbol(bot_app: BotApp) -> None:
    engine = bot_app.bot.engine
    engine.risk.rate_limiter.restore([])
    keys = list(engine.positions)
    assert len(keys) >= 2, "the session ends with positions to close"
    symbol = bot_app.bot.instruments[keys[1]].trading_symbol
    read = {"X-API-Key": bot_app.keys.read}
    _error(bot_app.client.delete(f"/api/v1/positions/{keys[0]}", headers=read), 403, "forbidden")

    by_key = bot_app.client.delete(f"/api/v1/positions/{keys[0]}")
    by_symbol = bot_app.client.delete(f"/api/v1/positions/{symbol}")

    for response, key in ((by_key, keys[0]), (by_symbol, keys[1])):
        assert response.status_code == 202, response.text
        assert response.json() == {
            "status": "exit_queued",
            "detail": f"exit of {key} queued at market",
        }
        audit = bot_app.client.get(
            "/api/v1/audit", params={"event": "position.close_requested", "entity_id": key}
        ).json()
        assert audit["total"] == 1
    assert engine.positions[keys[0]].exit_pending  # sent at once; the other waits its slot
    _error(bot_app.client.delete("/api/v1/positions/NSE_EQ|NOPE"), 404, "not_found")


def test_delete_without_the_bot_is_a_409(client: TestClient) -> None:
    key = client.get("/api/v1/positions").json()[0]["instrument_key"]
    _error(client.delete(f"/api/v1/positions/{key}"), 409, "bot_not_running")


def test_live_positions_come_from_the_engine(bot_app: BotApp) -> None:
    positions = bot_app.client.get("/api/v1/positions").json()
    engine = bot_app.bot.engine
    assert {p["instrument_key"] for p in positions} == set(engine.positions)
    for p in positions:
        live = engine.positions[p["instrument_key"]]
        assert Decimal(p["last_price"]) * 100 == live.last_price_paise


# --- trades ------------------------------------------------------------------------------------


def test_trades_paginate_filter_and_sort(client: TestClient, settings: Settings) -> None:
    ((count,),) = rows(settings, "SELECT count(*) FROM trades")
    first = client.get("/api/v1/trades", params={"limit": 3}).json()
    second = client.get("/api/v1/trades", params={"limit": 3, "offset": 3}).json()
    assert first["total"] == second["total"] == count > 3
    ids = [t["trade_id"] for t in first["items"] + second["items"]]
    assert len(set(ids)) == 6
    exits = [t["exit_at"] for t in first["items"]]
    assert exits == sorted(exits, reverse=True)
    by_pnl = client.get("/api/v1/trades", params={"sort": "net_pnl", "limit": 1000}).json()
    pnls = [Decimal(t["net_pnl"]) for t in by_pnl["items"]]
    assert pnls == sorted(pnls)
    key = by_pnl["items"][0]["instrument_key"]
    only = client.get("/api/v1/trades", params={"instrument_key": key}).json()
    assert only["items"]
    assert all(t["instrument_key"] == key for t in only["items"])
    day = SESSION_DATE.isoformat()
    assert client.get("/api/v1/trades", params={"from": day, "to": day}).json()["total"] == count
    assert client.get("/api/v1/trades", params={"from": "2026-11-26"}).json()["total"] == 0
    invalid = client.get("/api/v1/trades", params={"sort": "password"})
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["loc"] == ["query", "sort"]


def test_trade_detail_and_404(client: TestClient) -> None:
    trade = client.get("/api/v1/trades", params={"limit": 1}).json()["items"][0]
    detail = client.get(f"/api/v1/trades/{trade['trade_id']}").json()
    assert detail == trade
    assert Decimal(detail["net_pnl"]) == Decimal(detail["gross_pnl"]) - Decimal(detail["charges"])
    _error(client.get("/api/v1/trades/nope"), 404, "not_found")


def test_manual_trade_without_the_bot_is_a_409(client: TestClient) -> None:
    response = client.post("/api/v1/trades", json={"instrument_key": "NSE_EQ|X"})
    _error(response, 409, "bot_not_running")


def test_manual_trade_goes_through_the_engine_risk_checks(bot_app: BotApp) -> None:
    engine = bot_app.bot.engine
    free = next(k for k in engine.instruments if k not in engine.positions)
    # Make room: a live settings change lifts the position cap; a free order slot.
    lifted = bot_app.client.patch("/api/v1/settings", json={"changes": {"MAX_OPEN_POSITIONS": 10}})
    assert lifted.json()["changes"][0]["applied"] == "live"
    engine.risk.rate_limiter.restore([])

    response = bot_app.client.post(
        "/api/v1/trades", json={"instrument_key": free, "direction": "long", "reason": "test"}
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["accepted"] is True
    assert body["quantity"] > 0
    assert Decimal(body["stop"]) < Decimal(body["price"]) < Decimal(body["target"])
    assert free in engine.pending_entries
    order = bot_app.client.get(f"/api/v1/orders/{body['client_order_id']}").json()
    assert order["purpose"] == "entry"
    assert order["status"] == "open"

    again = bot_app.client.post("/api/v1/trades", json={"instrument_key": free})
    _error(again, 409, "risk_refused")
    assert "already_in_position" in again.json()["detail"] or "order_" in again.json()["detail"]


def test_manual_trade_in_an_unknown_instrument_is_a_404(bot_app: BotApp) -> None:
    response = bot_app.client.post("/api/v1/trades", json={"instrument_key": "NSE_EQ|NOPE"})
    _error(response, 404, "not_found")


# --- signals -----------------------------------------------------------------------------------


def test_signals_filter_sort_and_count(client: TestClient, settings: Settings) -> None:
    ((count,),) = rows(settings, "SELECT count(*) FROM signals")
    response = client.get("/api/v1/signals", params={"limit": 5})
    assert response.headers["X-Total-Count"] == str(count)
    signals = response.json()
    assert len(signals) == 5
    assert [s["created_at"] for s in signals] == sorted(
        (s["created_at"] for s in signals), reverse=True
    )
    accepted = client.get("/api/v1/signals", params={"status": "accepted", "limit": 1000}).json()
    assert accepted
    assert all(s["status"] == "accepted" for s in accepted)
    strongest = client.get("/api/v1/signals", params={"sort": "-strength", "limit": 3}).json()
    assert [s["strength"] for s in strongest] == sorted(
        (s["strength"] for s in strongest), reverse=True
    )
    detail = client.get(f"/api/v1/signals/{signals[0]['signal_id']}").json()
    assert detail == signals[0]
    _error(client.get("/api/v1/signals/nope"), 404, "not_found")


def _bars(closes: Sequence[float]) -> list[dict[str, Any]]:
    return [
        {
            "start_at": f"2026-11-25T{9 + (15 + i) // 60:02d}:{(15 + i) % 60:02d}:00+05:30",
            "open": c,
            "high": c + 0.5,
            "low": c - 0.5,
            "close": c,
            "volume": 1000,
        }
        for i, c in enumerate(closes)
    ]


def test_signal_test_over_posted_candles_finds_a_crossover(client: TestClient) -> None:
    # 30 bars falling, then 30 rising: EMA(3) crosses EMA(6) up while RSI has room.
    closes = [200 - i for i in range(30)] + [171 + 2 * i for i in range(30)]
    body = {"strategy": "ema_rsi", "params": {"fast": 3, "slow": 6, "rsi_period": 5}}

    response = client.post("/api/v1/signals/test", json={**body, "candles": _bars(closes)})

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["candles"] == 60
    assert result["params"]["fast"] == 3
    types = [s["type"] for s in result["signals"]]
    assert "entry_long" in types
    entry = result["signals"][types.index("entry_long")]
    assert entry["candle_start_at"] > "2026-11-25T04:15"  # after the turn (stored in UTC)
    assert "ema_fast" in entry["indicators"]


def test_signal_test_over_stored_candles_and_its_errors(
    client: TestClient, settings: Settings
) -> None:
    ((symbol,),) = rows(settings, "SELECT trading_symbol FROM symbols LIMIT 1")
    stored = client.post("/api/v1/signals/test", json={"instrument_key": symbol, "limit": 120})
    assert stored.status_code == 200, stored.text
    assert stored.json()["candles"] == 120
    assert stored.json()["strategy"] == "ema_rsi"

    bad_params = client.post(
        "/api/v1/signals/test", json={"params": {"fast": 0}, "candles": _bars([100.0, 101.0])}
    )
    assert bad_params.status_code == 422
    assert bad_params.json()["errors"][0]["loc"] == ["body", "params"]
    bad_bar = _bars([100.0])
    bad_bar[0]["high"] = 50
    invalid = client.post("/api/v1/signals/test", json={"candles": bad_bar})
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["loc"][:3] == ["body", "candles", 0]
    unordered = client.post("/api/v1/signals/test", json={"candles": _bars([1.0, 2.0])[::-1]})
    assert unordered.status_code == 422
    _error(client.post("/api/v1/signals/test", json={"strategy": "nope"}), 404, "not_found")


def test_signal_test_needs_only_the_read_scope(client: TestClient, keys: Any) -> None:
    response = client.post(
        "/api/v1/signals/test",
        json={"candles": _bars([100.0, 101.0])},
        headers={"X-API-Key": keys.read},
    )
    assert response.status_code == 200


# --- orders ------------------------------------------------------------------------------------


def test_orders_list_detail_and_filters(client: TestClient, settings: Settings) -> None:
    ((count,),) = rows(settings, "SELECT count(*) FROM orders")
    response = client.get("/api/v1/orders", params={"limit": 1000})
    assert response.headers["X-Total-Count"] == str(count)
    orders = response.json()
    assert len(orders) == count
    filled = client.get("/api/v1/orders", params={"status": "filled", "limit": 1000}).json()
    assert filled
    assert all(o["status"] == "filled" for o in filled)
    one = client.get(f"/api/v1/orders/{orders[0]['client_order_id']}").json()
    assert one == orders[0]
    _error(client.get("/api/v1/orders/nope"), 404, "not_found")


def test_cancelling_a_filled_order_is_a_409(client: TestClient) -> None:
    order = client.get("/api/v1/orders", params={"status": "filled", "limit": 1}).json()[0]
    response = client.post(f"/api/v1/orders/{order['client_order_id']}/cancel")
    _error(response, 409, "conflict")
    _error(client.post("/api/v1/orders/nope/cancel"), 404, "not_found")


def test_cancelling_a_working_exit_order_is_refused(bot_app: BotApp) -> None:
    engine = bot_app.bot.engine
    key = next(iter(engine.positions))
    engine.risk.rate_limiter.restore([])
    bot_app.client.post(f"/api/v1/positions/{key}/close")
    working = next(
        order_id for order_id, order in engine.orders.items() if order.purpose.value == "exit"
    )

    response = bot_app.client.post(f"/api/v1/orders/{working}/cancel")

    _error(response, 409, "conflict")
    assert "exit order is not cancelled" in response.json()["detail"]  # a stop is never lost
    assert working in engine.orders


class ConfirmingBroker:
    """A live-like broker: cancels are requested, and confirmed later by an order update."""

    def __init__(self, outcome: CancelOutcome) -> None:
        self.outcome = outcome
        self.requested: list[tuple[str, str]] = []

    def request_cancel(self, client_order_id: str, *, by: str) -> CancelOutcome:
        self.requested.append((client_order_id, by))
        return self.outcome


def _working_entry(bot_app: BotApp) -> str:
    engine = bot_app.bot.engine
    now = engine.clock.now()
    order = Order(
        client_order_id=ClientOrderId("ub-live-entry-1"),
        instrument_key=next(iter(engine.instruments)),
        side=Side.BUY,
        quantity=10,
        lots=10,
        purpose=OrderPurpose.ENTRY,
        order_type=OrderType.LIMIT,
        status=OrderStatus.OPEN,
        created_at=now,
        updated_at=now,
        reason="test",
        limit_price_paise=10_000,
    )
    engine.on_order_created(order)
    bot_app.bot.flush()  # the API shows what the kernel committed
    return order.client_order_id


def test_cancel_through_a_confirming_broker_is_202_and_waits_for_the_confirmation(
    bot_app: BotApp,
) -> None:
    broker = ConfirmingBroker(CancelOutcome.REQUESTED)
    bot_app.bot.kernel.use_broker(broker)  # type: ignore[arg-type]
    order_id = _working_entry(bot_app)

    response = bot_app.client.post(f"/api/v1/orders/{order_id}/cancel")

    assert response.status_code == 202, response.text
    assert response.json()["status"] == "cancel_requested"
    assert broker.requested[0][0] == order_id
    engine = bot_app.bot.engine
    assert engine.orders[order_id].status is OrderStatus.OPEN  # not cancelled on the request
    engine.on_order_closed(order_id, OrderStatus.CANCELLED, "Cancelled by user", by="api")
    assert order_id not in engine.orders


def test_cancel_of_an_order_the_broker_no_longer_works_is_a_409(bot_app: BotApp) -> None:
    bot_app.bot.kernel.use_broker(ConfirmingBroker(CancelOutcome.NOT_WORKING))  # type: ignore[arg-type]
    order_id = _working_entry(bot_app)

    response = bot_app.client.post(f"/api/v1/orders/{order_id}/cancel")

    _error(response, 409, "conflict")
    assert order_id in bot_app.bot.engine.orders  # a fill on its way will complete it


def _paper_entry(bot_app: BotApp, cid: str = "ub-paper-limit-1") -> str:
    """A working LIMIT entry, sent to the paper broker through the executor."""
    bot = bot_app.bot
    engine = bot.engine
    key = next(k for k in engine.instruments if k not in engine.positions)
    bot.kernel.executor.execute(
        [
            OrderIntent(
                client_order_id=ClientOrderId(cid),
                instrument_key=key,
                side=Side.BUY,
                quantity=10,
                lots=10,
                purpose=OrderPurpose.ENTRY,
                reason="test",
                created_at=engine.clock.now(),
                order_type=OrderType.LIMIT,
                limit_price_paise=5_000,
            )
        ]
    )
    bot.flush()
    assert engine.orders[cid].status is OrderStatus.OPEN
    return cid


def test_put_order_modifies_a_working_paper_order_and_audits_who_and_why(
    bot_app: BotApp,
) -> None:
    order_id = _paper_entry(bot_app)

    response = bot_app.client.put(
        f"/api/v1/orders/{order_id}",
        json={"price": "51.50", "quantity": 5, "reason": "closer to the market"},
    )

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "modified"
    working = bot_app.bot.engine.orders[order_id]
    assert (working.limit_price_paise, working.quantity) == (5_150, 5)
    stored = bot_app.client.get(f"/api/v1/orders/{order_id}").json()
    assert (stored["limit_price"], stored["quantity"]) == ("51.50", 5)
    audit = bot_app.client.get(
        "/api/v1/audit", params={"entity_id": order_id, "event_prefix": "order.modif"}
    ).json()
    events = {a["event"]: a for a in audit["items"]}
    assert events["order.modify_requested"]["data"]["reason"] == "closer to the market"
    assert events["order.modified"]["actor"] == events["order.modify_requested"]["actor"]


def test_put_order_refuses_what_would_break_a_rule(bot_app: BotApp) -> None:
    order_id = _paper_entry(bot_app)

    _error(bot_app.client.put(f"/api/v1/orders/{order_id}", json={"quantity": 11}), 409, "conflict")
    off_tick = bot_app.client.put(f"/api/v1/orders/{order_id}", json={"price": "51.03"})
    assert off_tick.status_code == 422
    assert "price" in off_tick.text
    assert bot_app.client.put(f"/api/v1/orders/{order_id}", json={}).status_code == 422
    negative = bot_app.client.put(f"/api/v1/orders/{order_id}", json={"price": "-1"})
    assert negative.status_code == 422
    trigger = bot_app.client.put(f"/api/v1/orders/{order_id}", json={"trigger_price": "50"})
    _error(trigger, 409, "conflict")
    _error(bot_app.client.put("/api/v1/orders/nope", json={"price": "50.00"}), 404, "not_found")
    assert bot_app.bot.engine.orders[order_id].limit_price_paise == 5_000  # unchanged


def test_put_order_without_the_bot_is_a_409(client: TestClient) -> None:
    _error(client.put("/api/v1/orders/any", json={"price": "50.00"}), 409, "bot_not_running")


# --- account -----------------------------------------------------------------------------------


def test_account_days_and_pnl_agree_with_the_trades(client: TestClient, settings: Settings) -> None:
    ((net, gross, charges, count),) = rows(
        settings,
        "SELECT sum(net_pnl_paise), sum(gross_pnl_paise), sum(charges_paise), count(*) FROM trades",
    )
    account = client.get("/api/v1/account").json()
    assert account["realised_pnl"] == f"{net / 100:.2f}"
    days = client.get("/api/v1/account/days").json()
    assert [d["trading_date"] for d in days] == [SESSION_DATE.isoformat()]
    assert days[0]["realised_pnl"] == f"{net / 100:.2f}"
    pnl = client.get("/api/v1/account/pnl", params={"from": SESSION_DATE.isoformat()}).json()
    assert pnl["trades"] == count
    assert pnl["net_pnl"] == f"{net / 100:.2f}"
    assert pnl["gross_pnl"] == f"{gross / 100:.2f}"
    assert pnl["charges"] == f"{charges / 100:.2f}"
    assert pnl["wins"] + pnl["losses"] <= count
    assert len(pnl["by_day"]) == 1
    empty = client.get("/api/v1/account/days", params={"from": "2030-01-01"}).json()
    assert empty == []


def test_account_stats_agree_with_the_days_and_the_trades(
    client: TestClient, settings: Settings
) -> None:
    trades = rows(settings, "SELECT net_pnl_paise, gross_pnl_paise, charges_paise FROM trades")
    nets = [net for net, _, _ in trades]
    days = client.get("/api/v1/account/days").json()

    stats = client.get("/api/v1/account/stats").json()

    assert stats["trades"] == len(trades)
    assert stats["wins"] == sum(1 for n in nets if n > 0)
    assert stats["losses"] == sum(1 for n in nets if n < 0)
    assert stats["win_rate"] == pytest.approx(stats["wins"] / len(trades))
    assert stats["net_pnl"] == f"{sum(nets) / 100:.2f}"
    assert stats["gross_pnl"] == f"{sum(g for _, g, _ in trades) / 100:.2f}"
    assert stats["charges"] == f"{sum(c for _, _, c in trades) / 100:.2f}"
    assert stats["best_trade"] == f"{max(nets) / 100:.2f}"
    assert stats["worst_trade"] == f"{min(nets) / 100:.2f}"
    assert stats["trading_days"] == len(days) == 1
    assert stats["days_net_pnl"] == days[0]["realised_pnl"] == stats["net_pnl"]
    assert stats["best_day"] == {
        "trading_date": days[0]["trading_date"],
        "net_pnl": days[0]["realised_pnl"],
    }
    assert (stats["winning_days"], stats["losing_days"]).count(1) <= 1
    assert [p["label"] for p in stats["periods"]] == [SESSION_DATE.isoformat()]
    (day,) = stats["periods"]
    assert {k: day[k] for k in ("trades", "net_pnl", "charges")} == {
        k: stats[k] for k in ("trades", "net_pnl", "charges")
    }
    weekly = client.get("/api/v1/account/stats", params={"period": "week"}).json()
    assert [p["label"] for p in weekly["periods"]] == ["2026-W48"]
    assert weekly["periods"][0]["start_date"] == "2026-11-23"  # Monday
    monthly = client.get("/api/v1/account/stats", params={"period": "month"}).json()
    assert monthly["periods"][0]["label"] == "2026-11"
    later = client.get("/api/v1/account/stats", params={"from": "2026-11-26"}).json()
    assert (later["trades"], later["trading_days"], later["periods"]) == (0, 0, [])
    assert later["win_rate"] is None
    assert client.get("/api/v1/account/stats", params={"period": "hour"}).status_code == 422


def test_account_figures_carry_the_market_time_they_hold_at(
    bot_app: BotApp, client: TestClient
) -> None:
    # With the engine in the process: its clock (the simulated session's), not the wall clock.
    live = bot_app.client.get("/api/v1/account").json()
    as_of = datetime.fromisoformat(live["as_of"])
    assert as_of == bot_app.bot.engine.clock.now()
    assert as_of.astimezone(IST).date() == SESSION_DATE
    # From the stored snapshot alone there is no market time to give.
    assert client.get("/api/v1/account").json()["as_of"] is None


# --- symbols, candles, quotes ------------------------------------------------------------------


def test_symbols_list_search_detail(client: TestClient) -> None:
    response = client.get("/api/v1/symbols", params={"limit": 5})
    assert response.headers["X-Total-Count"] == "12"
    symbols = response.json()
    assert len(symbols) == 5
    names = [s["trading_symbol"] for s in symbols]
    assert names == sorted(names)
    one = symbols[0]
    assert client.get(f"/api/v1/symbols/{one['instrument_key']}").json() == one
    assert client.get(f"/api/v1/symbols/{one['trading_symbol']}").json() == one
    found = client.get("/api/v1/symbols", params={"q": one["trading_symbol"][:4]}).json()
    assert one["instrument_key"] in {s["instrument_key"] for s in found}
    _error(client.get("/api/v1/symbols/NOPE"), 404, "not_found")


def test_symbols_refresh_runs_the_universe_refresh(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from upstox_bot.upstox import universe

    real = universe.refresh_universe
    sample = Path(universe.__file__).parents[1] / "data" / "upstox_instruments_sample.json.gz"

    async def from_sample(session: Any, settings: Any) -> Any:
        # The shipped instrument master instead of the download (no network in tests).
        return await real(session, settings, source=sample)

    monkeypatch.setattr(universe, "refresh_universe", from_sample)

    response = client.post("/api/v1/symbols/refresh")

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "refreshed"
    assert response.json()["result"]["stocks"] > 0
    total = client.get("/api/v1/symbols", params={"limit": 1}).headers["X-Total-Count"]
    assert int(total) > 12


def test_symbols_refresh_is_501_without_the_universe_module(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from upstox_bot.api.routers import market

    monkeypatch.setattr(market, "UNIVERSE_MODULE", "upstox_bot.screening.no_such_module")
    _error(client.post("/api/v1/symbols/refresh"), 501, "not_available")


def test_candles_and_quotes(client: TestClient, settings: Settings) -> None:
    ((key, symbol),) = rows(settings, "SELECT instrument_key, trading_symbol FROM symbols LIMIT 1")
    candles = client.get(f"/api/v1/symbols/{symbol}/candles", params={"limit": 10}).json()
    assert len(candles) == 10
    starts = [c["start_at"] for c in candles]
    assert starts == sorted(starts)
    ranged = client.get(
        f"/api/v1/symbols/{key}/candles",
        params={"since": "2026-11-25T09:15:00+05:30", "until": "2026-11-25T09:20:00+05:30"},
    ).json()
    assert len(ranged) == 5
    quote = client.get(f"/api/v1/symbols/{key}/quote").json()
    assert quote["source"] == "tick"
    ((ltp,),) = rows(
        settings,
        "SELECT ltp_paise FROM ticks WHERE instrument_key = :key ORDER BY ts DESC LIMIT 1",
        key=key,
    )
    assert Decimal(quote["last_price"]) * 100 == ltp
    quotes = client.get("/api/v1/quotes", params={"symbols": f"{symbol},{key}"}).json()
    assert [q["instrument_key"] for q in quotes] == [key, key]
    assert len(client.get("/api/v1/quotes").json()) == 12


def test_quotes_of_the_running_bot_are_the_engine_prices(bot_app: BotApp) -> None:
    key, price = next(iter(bot_app.bot.engine.last_price.items()))
    quote = bot_app.client.get(f"/api/v1/symbols/{key}/quote").json()
    assert quote["source"] == "engine"
    assert Decimal(quote["last_price"]) * 100 == price


# --- strategies --------------------------------------------------------------------------------


def test_strategies_list_parameters_and_enable(client: TestClient) -> None:
    strategies = client.get("/api/v1/strategies").json()
    active = [s for s in strategies if s["active"]]
    assert [s["name"] for s in active] == ["ema_rsi"]
    params = client.get("/api/v1/strategies/ema_rsi/parameters").json()
    assert {p["name"] for p in params} >= {"fast", "slow"}
    assert client.get("/api/v1/strategies/ema_rsi").json()["parameters"] == params
    _error(client.get("/api/v1/strategies/nope"), 404, "not_found")
    assert client.post("/api/v1/strategies/ema_rsi/enable").json()["changes"] == []
    _error(client.post("/api/v1/strategies/ema_rsi/disable"), 409, "conflict")
    _error(client.post("/api/v1/strategies/nope/enable"), 404, "not_found")


def test_strategy_parameters_update_is_validated_stored_and_applied(bot_app: BotApp) -> None:
    client = bot_app.client
    bad = client.put("/api/v1/strategies/ema_rsi/parameters", json={"params": {"fast": "x"}})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["loc"] == ["body", "changes", "STRATEGY_PARAMS"]

    response = client.put(
        "/api/v1/strategies/ema_rsi/parameters", json={"params": {"fast": 5, "slow": 15}}
    )

    assert response.status_code == 200, response.text
    (change,) = response.json()["changes"]
    assert change == {
        "key": "STRATEGY_PARAMS",
        "old": {},
        "new": {"fast": 5, "slow": 15},
        "applied": "live",
    }
    assert bot_app.bot.engine.strategy.params["fast"] == 5
    fast = next(
        p for p in client.get("/api/v1/strategies/ema_rsi/parameters").json() if p["name"] == "fast"
    )
    assert fast["value"] == 5


# --- audit, auth status, risk ------------------------------------------------------------------


def test_audit_query_filters_by_event_prefix_and_time(
    client: TestClient, settings: Settings
) -> None:
    ((orders_events,),) = rows(
        settings, "SELECT count(*) FROM audit_logs WHERE event LIKE 'order.%'"
    )
    page = client.get("/api/v1/audit", params={"event_prefix": "order.", "limit": 2}).json()
    assert page["total"] == orders_events > 2
    assert len(page["items"]) == 2
    assert all(i["event"].startswith("order.") for i in page["items"])
    later = client.get("/api/v1/audit", params={"since": "2030-01-01T00:00:00Z"}).json()
    assert later["total"] == 0
    oldest = client.get("/api/v1/audit", params={"sort": "at", "limit": 1}).json()["items"][0]
    newest = client.get("/api/v1/audit", params={"limit": 1}).json()["items"][0]
    assert oldest["at"] <= newest["at"]


def test_auth_status_reports_the_token_state_and_the_key(client: TestClient) -> None:
    status = client.get("/api/v1/auth/status").json()
    assert status["upstox"] == {
        "market": "sim",
        "api_key_configured": False,
        "access_token_present": False,
        "paper_trading": True,
    }
    assert status["api_key"]["name"] == "trader"
    assert status["api_key"]["scope"] == "trade"
    assert "key" not in status["api_key"]


def test_risk_status_from_the_database(client: TestClient, settings: Settings) -> None:
    risk = client.get("/api/v1/risk").json()
    assert risk["source"] == "database"
    assert risk["max_open_positions"] == 3
    assert risk["max_orders_per_minute"] == 10
    assert risk["orders_last_minute"] == 0  # the session's orders are not in the last minute
    assert risk["seconds_until_next_order"] == 0
    assert risk["entry_window"] == "09:20-14:45"
    ((open_positions,),) = rows(settings, "SELECT open_positions FROM account_days")
    assert risk["open_positions"] == open_positions
    assert Decimal(risk["daily_loss_limit"]) == Decimal(2000)


def test_risk_status_from_the_engine_counts_recent_orders(bot_app: BotApp) -> None:
    engine = bot_app.bot.engine
    now_ms = engine.clock.now_ms()
    engine.risk.rate_limiter.restore([now_ms - 50_000, now_ms - 10_000])
    bot_app.bot.flush()  # the API shows what the kernel committed

    risk = bot_app.client.get("/api/v1/risk").json()

    assert risk["source"] == "engine"
    assert risk["orders_last_minute"] == 2
    assert risk["seconds_until_next_order"] == 20.0
    assert risk["open_positions"] == len(engine.positions) + len(engine.pending_entries)


def test_kill_switch_without_the_bot_is_stored_on_the_account(
    client: TestClient, settings: Settings
) -> None:
    response = client.post("/api/v1/risk/kill-switch", json={"active": True, "reason": "lunch"})

    assert response.status_code == 200, response.text
    assert response.json()["applied_to_running_bot"] is False
    assert rows(settings, "SELECT kill_switch, kill_switch_reason FROM accounts") == [(1, "lunch")]
    assert client.get("/api/v1/risk").json()["kill_switch"] is True
    assert client.get("/api/v1/account").json()["kill_switch"] is True
    audit = client.get("/api/v1/audit", params={"event": "kill_switch.on"}).json()
    assert audit["items"][0]["data"]["reason"] == "lunch"
    client.post("/api/v1/risk/kill-switch", json={"active": False, "reason": "back"})
    assert rows(settings, "SELECT kill_switch FROM accounts") == [(0,)]
    invalid = client.post("/api/v1/risk/kill-switch", json={"active": True})
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["loc"] == ["body", "reason"]


def test_kill_switch_with_the_bot_stops_entries_and_closes_positions(bot_app: BotApp) -> None:
    engine = bot_app.bot.engine
    held = len(engine.positions)

    response = bot_app.client.post(
        "/api/v1/risk/kill-switch", json={"active": True, "reason": "stop"}
    )

    body = response.json()
    assert body["applied_to_running_bot"] is True
    assert body["active"] is True
    assert body["positions_closing"] == held > 0
    assert engine.risk.kill_switch.active
    assert all(p.exit_pending or k in engine.exit_queue for k, p in engine.positions.items())
    free = next(k for k in engine.instruments if k not in engine.positions)
    engine.risk.rate_limiter.restore([])
    refused = bot_app.client.post("/api/v1/trades", json={"instrument_key": free})
    _error(refused, 409, "risk_refused")
    assert rows(bot_app.bot.settings, "SELECT kill_switch FROM accounts") == [(1,)]

"""The day at a glance through the API: the equity curve ends at the account's figure,
performance per strategy adds up to the trades, signals carry their outcome in rupees, and
backtests list their parameters and where they were run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from fastapi.testclient import TestClient

from tests.unit.api.conftest import BotApp
from upstox_bot.api.routers.reports import equity_points
from upstox_bot.backtest import jobs
from upstox_bot.config import Settings
from upstox_bot.db.repositories.backtests import BacktestRepository
from upstox_bot.db.session import make_engine, make_session_factory, session_scope
from upstox_bot.domain import (
    ClientOrderId,
    Direction,
    ExitReason,
    Trade,
)


def test_the_equity_curve_of_the_stored_day_ends_at_the_accounts_figure(
    client: TestClient,
) -> None:
    account = client.get("/api/v1/account").json()
    curve = client.get("/api/v1/account/equity").json()
    assert curve["source"] == "database"
    assert curve["trading_date"] == account["trading_date"]
    assert Decimal(curve["capital"]) == Decimal(account["capital"])
    points = curve["points"]
    assert points[0]["at"].startswith(f"{account['trading_date']}T09:15")
    assert Decimal(points[0]["equity"]) == Decimal(account["capital"])
    last = points[-1]
    assert Decimal(last["equity"]) == Decimal(account["capital"]) + Decimal(account["day_pnl"])
    times = [datetime.fromisoformat(p["at"]) for p in points]
    assert times == sorted(times)
    assert len(set(times)) == len(times)
    # Realised P&L only grows by closed trades: at the end it is the trades' sum.
    trades = client.get(f"/api/v1/trades?from={account['trading_date']}&limit=1000").json()
    assert Decimal(last["realised_pnl"]) == sum(Decimal(t["net_pnl"]) for t in trades["items"])
    # The curve moved during the day: open positions were marked at the candles' closes.
    assert len({p["equity"] for p in points}) > 3


def test_the_live_curve_ends_at_the_running_engines_figures(bot_app: BotApp) -> None:
    account = bot_app.client.get("/api/v1/account").json()
    curve = bot_app.client.get("/api/v1/account/equity").json()
    assert curve["source"] == "engine"
    assert curve["as_of"] == account["as_of"]
    assert Decimal(curve["day_pnl"]) == Decimal(account["day_pnl"])
    assert Decimal(curve["points"][-1]["equity"]) == Decimal(account["capital"]) + Decimal(
        account["day_pnl"]
    )
    other = bot_app.client.get("/api/v1/account/equity?date=2026-11-24").json()
    assert other["trading_date"] == "2026-11-24"
    assert other["source"] == "database"


def _trade(entry_min: int, exit_min: int, net: int, qty: int = 10) -> Trade:
    opens = datetime(2026, 11, 25, 3, 45, tzinfo=UTC)  # 09:15 IST
    return Trade(
        trade_id=f"t{entry_min}",
        instrument_key="K",
        direction=Direction.LONG,
        quantity=qty,
        lots=qty,
        entry_price_paise=10_000,
        exit_price_paise=10_000 + net // qty,
        entry_at=opens + timedelta(minutes=entry_min),
        exit_at=opens + timedelta(minutes=exit_min),
        gross_pnl_paise=net,
        charges_paise=0,
        net_pnl_paise=net,
        exit_reason=ExitReason.TAKE_PROFIT,
        entry_order_id=ClientOrderId("e"),
        exit_order_id=ClientOrderId("x"),
    )


def test_equity_points_mark_held_quantities_at_the_minute_close() -> None:
    opens = datetime(2026, 11, 25, 3, 45, tzinfo=UTC)
    closes = {
        "K": [(opens + timedelta(minutes=m + 1), 10_000 + 10 * (m + 1)) for m in range(0, 10)]
    }
    points = equity_points(
        capital_paise=1_000_000,
        opens_at=opens,
        as_of=opens + timedelta(minutes=6, seconds=30),
        trades=[_trade(1, 5, 500)],
        positions=[],
        closes=closes,
        final_day_pnl_paise=500,
    )
    by_minute = [int(p.equity * 100) - 1_000_000 for p in points]
    # minute 1: bought at 100.00, candle close 100.10 -> +10 x 10 paise; minute 5: sold
    assert by_minute[:7] == [0, 10 * 10, 10 * 20, 10 * 30, 10 * 40, 500, 500]
    assert by_minute[-1] == 500
    assert [p.realised_pnl for p in points[:6]] == [Decimal(0)] * 5 + [Decimal("5.00")]


def test_performance_per_strategy_adds_up_to_the_trades(client: TestClient) -> None:
    trades = client.get("/api/v1/trades?limit=1000").json()["items"]
    perf = client.get("/api/v1/account/performance").json()["strategies"]
    assert perf, "the played session closed trades"
    assert sum(p["trades"] for p in perf) == len(trades)
    for p in perf:
        mine = [t for t in trades if t["strategy"] == p["strategy"]]
        assert p["trades"] == len(mine)
        assert Decimal(p["net_pnl"]) == sum(Decimal(t["net_pnl"]) for t in mine)
        wins = sum(1 for t in mine if Decimal(t["net_pnl"]) > 0)
        assert p["wins"] == wins
        assert p["win_rate"] == wins / len(mine)
    empty = client.get("/api/v1/account/performance?from=2020-01-01&to=2020-01-02").json()
    assert empty["strategies"] == []


def test_signals_say_what_came_of_them_in_rupees(client: TestClient) -> None:
    signals = client.get("/api/v1/signals?limit=1000").json()
    refused = [s for s in signals if s["status"] == "rejected"]
    accepted = [s for s in signals if s["status"] == "accepted" and s["type"].startswith("entry")]
    assert refused, "the played session refuses some entries"
    assert accepted
    for s in refused:
        assert s["refusal_rule"]
        assert s["refusal_reason"]
        assert "paise" not in s["refusal_reason"]
        assert s["outcome"].startswith(f"refused by {s['refusal_rule']}")
    for s in accepted:
        assert s["order_id"]
        assert s["outcome"] == f"entry order {s['order_status']}"
    one = client.get(f"/api/v1/signals/{refused[0]['signal_id']}").json()
    assert one["refusal_reason"] == refused[0]["refusal_reason"]


def test_backtests_list_their_parameters_and_source(client: TestClient, settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    now = datetime.now(UTC)
    request = {
        "data": "/data/bars",
        "strategy": "sma_crossover",
        "params": {"fast": 5, "slow": 20},
        "symbols": ["SBIN"],
        "start": "2026-11-02",
        "end": None,
        "source": "cli",
    }
    with session_scope(make_session_factory(engine)) as session:
        record = BacktestRepository(session).create(request, now)
    engine.dispose()
    items = client.get("/api/v1/backtests").json()["items"]
    item = next(i for i in items if i["id"] == record.id)
    assert item["params"] == {"fast": 5, "slow": 20}
    assert item["source"] == "cli"
    assert item["symbols"] == ["SBIN"]
    assert item["start"] == "2026-11-02"
    assert item["end"] is None


def test_backtest_data_lists_the_bars_a_backtest_may_read(
    client: TestClient, settings: Settings
) -> None:
    bars = Path(settings.DATA_DIR) / "bars"
    bars.mkdir()
    for name in ("SBIN", "INFY"):
        (bars / f"{name}.csv").write_text("timestamp,open,high,low,close\n")
    cache = Path(settings.DATA_DIR) / "candles" / "1m" / "SBIN"
    cache.mkdir(parents=True)
    (cache / "2026-11.csv").write_text("timestamp,open,high,low,close\n")
    listed = {d["path"]: d for d in client.get("/api/v1/backtest-data").json()}
    assert listed["bars"] == {"path": "bars", "kind": "folder", "files": 2}
    assert listed["candles/1m"]["files"] == 1
    assert [c.path for c in jobs.data_choices(settings)] == list(listed)


def test_the_equity_curve_of_the_first_and_last_dates_is_answered(client: TestClient) -> None:
    # The day before 0001-01-01 does not exist: the earlier days' P&L is none, not a 500.
    for day in ("0001-01-01", "9999-12-31"):
        answer = client.get("/api/v1/account/equity", params={"date": day})
        assert answer.status_code == 200, answer.text
        assert answer.json()["trading_date"] == day

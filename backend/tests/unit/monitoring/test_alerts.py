"""Alerts: audit mapping, end-of-day summary, and the dispatcher's dedupe, rate limit, failures."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from tests.support.factories import ist
from tests.support.waiting import wait_until
from upstox_bot.clock import SimClock
from upstox_bot.domain import (
    AccountSnapshot,
    AuditRecord,
    ClientOrderId,
    Direction,
    ExitReason,
    Trade,
)
from upstox_bot.money import format_rupees
from upstox_bot.monitoring.alerts.delivery import AlertDeliveryError, RetryPolicy, deliver
from upstox_bot.monitoring.alerts.dispatcher import AlertDispatcher
from upstox_bot.monitoring.alerts.model import Alert, AlertKind, Severity, make_alert
from upstox_bot.monitoring.alerts.rules import alerts_for_audit, end_of_day_summary

NO_WAIT = RetryPolicy(max_attempts=3, base_delay_s=0.0, max_delay_s=0.0)


class RecordingNotifier:
    """A channel that keeps what it is sent; it raises the queued errors first, one per send."""

    def __init__(self, name: str = "rec", errors: list[Exception] | None = None) -> None:
        self.name = name
        self.errors = list(errors or [])
        self.sent: list[Alert] = []
        self.calls = 0
        self.closed = False

    def send(self, alert: Alert) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        self.sent.append(alert)

    def close(self) -> None:
        self.closed = True


class BlockingNotifier(RecordingNotifier):
    """A channel that hangs on each send until released (a receiver that does not answer)."""

    def __init__(self) -> None:
        super().__init__("slow")
        self.release = threading.Event()
        self.entered = threading.Event()

    def send(self, alert: Alert) -> None:
        self.entered.set()
        self.release.wait(10)
        super().send(alert)


def audit(
    event: str, data: dict[str, object], *, entity_id: str = "paper", actor: str = "engine"
) -> AuditRecord:
    return AuditRecord(
        event=event, entity="account", entity_id=entity_id, at=ist(11, 2), data=data, actor=actor
    )


def make_dispatcher(
    *notifiers: RecordingNotifier, clock: SimClock, **options: object
) -> AlertDispatcher:
    settings: dict[str, object] = {"account": "paper", "retry": NO_WAIT, "idle_s": 0.02}
    return AlertDispatcher(list(notifiers), clock=clock, **(settings | options))  # type: ignore[arg-type]


@pytest.fixture
def clock() -> SimClock:
    return SimClock(ist(10, 0))


# --- audit records ---------------------------------------------------------------------------


def test_loss_limit_record_becomes_a_critical_alert_with_rupee_amounts() -> None:
    record = audit("risk.daily_loss_limit_hit", {"day_pnl_paise": -215_050, "limit_paise": 200_000})
    [alert] = alerts_for_audit(record)
    assert alert.kind is AlertKind.DAILY_LOSS_LIMIT_HIT
    assert alert.severity is Severity.CRITICAL
    assert "-₹2,150.50" in alert.message
    assert "₹2,000.00" in alert.message
    assert alert.key == "2026-11-25"
    assert alert.at == record.at


def test_kill_switch_on_is_critical_and_off_is_informational() -> None:
    [on] = alerts_for_audit(audit("kill_switch.on", {"reason": "news"}, actor="api:alice"))
    [off] = alerts_for_audit(audit("kill_switch.off", {"reason": "calm"}, actor="api:alice"))
    assert (on.kind, on.severity) == (AlertKind.KILL_SWITCH_USED, Severity.CRITICAL)
    assert (off.kind, off.severity) == (AlertKind.KILL_SWITCH_USED, Severity.INFO)
    assert "api:alice" in on.message
    assert "news" in on.message
    assert on.dedupe_key != off.dedupe_key


def test_order_rejection_is_keyed_by_the_client_order_id() -> None:
    record = AuditRecord(
        event="order.rejected",
        entity="order",
        entity_id="sig-abc-entry",
        at=ist(10, 5),
        data={"reason": "insufficient funds"},
    )
    [alert] = alerts_for_audit(record)
    assert alert.kind is AlertKind.ORDER_REJECTED
    assert alert.key == "sig-abc-entry"
    assert "insufficient funds" in alert.message
    assert alert.data["client_order_id"] == "sig-abc-entry"


@pytest.mark.parametrize("event", ["order.filled", "position.closed", "day.started"])
def test_routine_records_raise_no_alert(event: str) -> None:
    assert alerts_for_audit(audit(event, {})) == []


# --- formatting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("paise", "text"),
    [
        (0, "₹0.00"),
        (5, "₹0.05"),
        (99_999, "₹999.99"),
        (100_000, "₹1,000.00"),
        (10_000_000, "₹1,00,000.00"),
        (12_345_678_901, "₹12,34,56,789.01"),
        (-215_050, "-₹2,150.50"),
    ],
)
def test_rupees_use_indian_digit_grouping(paise: int, text: str) -> None:
    assert format_rupees(paise) == text


def test_signed_rupees_mark_gains() -> None:
    assert format_rupees(150, signed=True) == "+₹1.50"
    assert format_rupees(-150, signed=True) == "-₹1.50"


def make_trade(net_paise: int, n: int = 1) -> Trade:
    return Trade(
        trade_id=f"t{n}",
        instrument_key="NSE_EQ|INE002A01018",
        direction=Direction.LONG,
        quantity=10,
        lots=10,
        entry_price_paise=100_000,
        exit_price_paise=100_000 + net_paise // 10,
        entry_at=ist(10, 0),
        exit_at=ist(11, n % 60),
        gross_pnl_paise=net_paise + 4000,
        charges_paise=4000,
        net_pnl_paise=net_paise,
        exit_reason=ExitReason.TAKE_PROFIT if net_paise > 0 else ExitReason.STOP_LOSS,
        entry_order_id=ClientOrderId(f"e{n}"),
        exit_order_id=ClientOrderId(f"x{n}"),
    )


def snapshot(**overrides: object) -> AccountSnapshot:
    values: dict[str, object] = {
        "trading_date": "2026-11-25",
        "capital_paise": 10_000_000,
        "realised_pnl_paise": 123_450,
        "unrealised_pnl_paise": 0,
        "charges_paise": 8_000,
        "open_positions": 0,
        "trades": 2,
        "orders": 4,
        "loss_limit_paise": 200_000,
        "loss_limit_hit": False,
        "kill_switch": False,
    }
    return AccountSnapshot(**(values | overrides))  # type: ignore[arg-type]


def test_end_of_day_summary_gives_pnl_trades_and_limit_headroom() -> None:
    alert = end_of_day_summary(snapshot(), [make_trade(150_000, 1), make_trade(-26_550, 2)])
    assert alert.kind is AlertKind.END_OF_DAY_SUMMARY
    assert alert.severity is Severity.INFO
    assert alert.title == "End of day 2026-11-25: P&L +₹1,234.50"
    assert "2 (1 won, 1 lost)" in alert.message
    assert "charges ₹80.00" in alert.message
    assert "not hit (headroom ₹2,000.00)" in alert.message
    assert "+₹1,500.00 (take_profit)" in alert.message
    assert "-₹265.50 (stop_loss)" in alert.message
    assert alert.at == ist(15, 30)
    assert alert.data["day_pnl_paise"] == 123_450


def test_end_of_day_summary_of_a_losing_day_flags_the_limit() -> None:
    day = snapshot(realised_pnl_paise=-180_000, unrealised_pnl_paise=-30_000, loss_limit_hit=True)
    alert = end_of_day_summary(day, [], at=ist(15, 31))
    assert alert.severity is Severity.WARNING
    assert "P&L -₹2,100.00" in alert.title
    assert "HIT" in alert.message
    assert alert.at == ist(15, 31)


def test_end_of_day_summary_caps_the_trade_list() -> None:
    trades = [make_trade(1000, n) for n in range(1, 26)]
    alert = end_of_day_summary(snapshot(trades=25), trades)
    assert alert.message.count("\n- NSE_EQ") == 20
    assert "and 5 more" in alert.message


# --- deliver: bounded retries ------------------------------------------------------------------


def test_transient_failures_are_retried_up_to_the_bound() -> None:
    channel = RecordingNotifier(errors=[AlertDeliveryError("503", retryable=True)] * 5)
    result = deliver(channel, make_alert(AlertKind.TEST, "x", at=ist(10, 0)), NO_WAIT)
    assert (result.ok, result.attempts, channel.calls) == (False, 3, 3)
    assert result.error == "503"


def test_a_transient_failure_then_success_is_ok() -> None:
    channel = RecordingNotifier(errors=[AlertDeliveryError("timeout", retryable=True)])
    result = deliver(channel, make_alert(AlertKind.TEST, "x", at=ist(10, 0)), NO_WAIT)
    assert (result.ok, result.attempts, len(channel.sent)) == (True, 2, 1)


def test_a_refusal_is_not_retried() -> None:
    channel = RecordingNotifier(errors=[AlertDeliveryError("400 bad chat", retryable=False)])
    result = deliver(channel, make_alert(AlertKind.TEST, "x", at=ist(10, 0)), NO_WAIT)
    assert (result.ok, result.attempts) == (False, 1)


def test_retry_delays_grow_and_honour_retry_after_within_the_cap() -> None:
    policy = RetryPolicy(max_attempts=5, base_delay_s=1.0, max_delay_s=10.0)
    assert [policy.delay_s(n) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 8.0, 10.0]
    assert policy.delay_s(1, retry_after_s=7) == 7.0
    assert policy.delay_s(1, retry_after_s=60) == 10.0


# --- the dispatcher ----------------------------------------------------------------------------


def test_same_kind_and_key_within_the_window_sends_once(clock: SimClock) -> None:
    channel = RecordingNotifier()
    with make_dispatcher(channel, clock=clock, dedupe_s=300) as alerts:
        alerts.notify(AlertKind.FEED_DEAD, "no ticks for 60 s", key="shard-0")
        clock.advance(299)
        alerts.notify(AlertKind.FEED_DEAD, "still no ticks", key="shard-0")
        alerts.notify(AlertKind.FEED_DEAD, "no ticks", key="shard-1")  # another key
        alerts.notify(AlertKind.WORKER_DOWN, "no ticks", key="shard-0")  # another kind
        assert alerts.wait_idle(5)
        clock.advance(1)  # the window (from the first send) is over
        alerts.notify(AlertKind.FEED_DEAD, "no ticks again", key="shard-0")
        assert alerts.wait_idle(5)
        stats = alerts.stats()
    assert [a.message for a in channel.sent] == [
        "no ticks for 60 s",
        "no ticks",
        "no ticks",
        "no ticks again",
    ]
    assert (stats.sent, stats.suppressed_dedupe) == (4, 1)
    assert channel.sent[0].account == "paper"
    assert channel.sent[0].at == ist(10, 0)


def test_dedupe_zero_sends_every_alert(clock: SimClock) -> None:
    channel = RecordingNotifier()
    with make_dispatcher(channel, clock=clock, dedupe_s=0) as alerts:
        for _ in range(3):
            alerts.notify(AlertKind.TEST, "x")
        assert alerts.wait_idle(5)
    assert len(channel.sent) == 3


def test_rate_limit_holds_back_the_excess_and_summarises_it_in_the_next(clock: SimClock) -> None:
    channel = RecordingNotifier()
    with make_dispatcher(channel, clock=clock, rate_per_minute=2, idle_s=60) as alerts:
        for n in range(5):
            alerts.notify(AlertKind.ORDER_REJECTED, f"order {n} rejected", key=str(n))
        assert alerts.wait_idle(5)
        held = alerts.stats()
        clock.advance(60)
        alerts.notify(AlertKind.FEED_DEAD, "feed dead")
        assert alerts.wait_idle(5)
        after = alerts.stats()
    assert [a.message.splitlines()[0] for a in channel.sent] == [
        "order 0 rejected",
        "order 1 rejected",
        "feed dead",
    ]
    assert (held.sent, held.suppressed_rate) == (2, 3)
    assert held.channels["rec"].suppressed_rate == 3
    assert "(+3 more alerts held back by the rate limit since 10:00:00 IST: order_rejected x3)" in (
        channel.sent[2].message
    )
    assert (after.sent, after.suppressed_rate) == (3, 3)


def test_an_idle_dispatcher_sends_the_summary_once_the_window_frees(clock: SimClock) -> None:
    channel = RecordingNotifier()
    with make_dispatcher(channel, clock=clock, rate_per_minute=1) as alerts:
        for n in range(3):
            alerts.notify(AlertKind.ORDER_REJECTED, f"order {n}", key=str(n))
        assert alerts.wait_idle(5)
        clock.advance(61)
        wait_until(lambda: len(channel.sent) >= 2, what="the held-back alerts' summary")
    assert [a.kind for a in channel.sent] == [AlertKind.ORDER_REJECTED, AlertKind.RATE_LIMITED]
    assert "+2 more alerts" in channel.sent[1].message
    assert channel.sent[1].data["held"] == 2


def test_each_channel_has_its_own_rate_window(clock: SimClock) -> None:
    busy, quiet = RecordingNotifier("busy"), RecordingNotifier("quiet")
    with make_dispatcher(busy, quiet, clock=clock, rate_per_minute=1, idle_s=60) as alerts:
        alerts.notify(AlertKind.TEST, "one", key="1")
        alerts.notify(AlertKind.TEST, "two", key="2")
        assert alerts.wait_idle(5)
        stats = alerts.stats()
    assert len(busy.sent) == len(quiet.sent) == 1
    assert stats.channels["busy"].suppressed_rate == stats.channels["quiet"].suppressed_rate == 1


def test_failures_are_counted_and_never_raised(clock: SimClock) -> None:
    flaky = RecordingNotifier(
        "flaky",
        errors=[
            AlertDeliveryError("HTTP 500", retryable=True),
            AlertDeliveryError("HTTP 500", retryable=True),
            AlertDeliveryError("HTTP 500", retryable=True),
            RuntimeError("bug in a channel"),
        ],
    )
    good = RecordingNotifier("good")
    with make_dispatcher(flaky, good, clock=clock) as alerts:
        alerts.notify(AlertKind.TEST, "first", key="1")
        alerts.notify(AlertKind.TEST, "second", key="2")
        alerts.notify(AlertKind.TEST, "third", key="3")
        assert alerts.wait_idle(5)
        stats = alerts.stats()
        assert alerts.running
    assert flaky.calls == 3 + 1 + 1
    assert [a.message for a in flaky.sent] == ["third"]
    assert [a.message for a in good.sent] == ["first", "second", "third"]
    assert stats.channels["flaky"].failed == 2
    assert stats.channels["flaky"].sent == 1
    assert (stats.sent, stats.failed) == (4, 2)


def test_notify_returns_at_once_while_a_channel_hangs(clock: SimClock) -> None:
    slow = BlockingNotifier()
    alerts = make_dispatcher(slow, clock=clock, queue_size=10, rate_per_minute=100)
    alerts.start()
    try:
        alerts.notify(AlertKind.TEST, "first", key="0")
        wait_until(slow.entered.is_set, what="the worker to be stuck inside the channel")
        for n in range(1, 15):  # each returns while the channel hangs: it only queues
            alerts.notify(AlertKind.TEST, f"alert {n}", key=str(n))
        stats = alerts.stats()
        assert stats.queued == 10
        assert stats.dropped == 4
    finally:
        slow.release.set()
        alerts.close(timeout_s=5)
    assert len(slow.sent) == 11


def test_close_sends_what_is_queued_then_refuses_more(clock: SimClock) -> None:
    channel = RecordingNotifier()
    alerts = make_dispatcher(channel, clock=clock)
    alerts.start()
    for n in range(5):
        alerts.notify(AlertKind.TEST, f"alert {n}", key=str(n))
    alerts.close(timeout_s=5)
    alerts.notify(AlertKind.TEST, "too late", key="late")
    assert len(channel.sent) == 5
    assert channel.closed
    assert not alerts.running
    assert alerts.stats().dropped == 1


def test_alerts_queued_before_start_go_out_on_start(clock: SimClock) -> None:
    channel = RecordingNotifier()
    alerts = make_dispatcher(channel, clock=clock)
    alerts.notify(AlertKind.TEST, "early")
    assert alerts.stats().queued == 1
    alerts.start()
    assert alerts.wait_idle(5)
    alerts.close()
    assert [a.message for a in channel.sent] == ["early"]


def test_audit_records_feed_the_dispatcher(clock: SimClock) -> None:
    channel = RecordingNotifier()
    with make_dispatcher(channel, clock=clock) as alerts:
        alerts.on_audit(audit("kill_switch.on", {"reason": "manual"}))
        alerts.on_audit(audit("kill_switch.on", {"reason": "manual"}))  # delivered twice
        alerts.on_audit(audit("order.filled", {}))
        assert alerts.wait_idle(5)
    assert [a.kind for a in channel.sent] == [AlertKind.KILL_SWITCH_USED]
    assert channel.sent[0].account == "paper"


def test_duplicate_channel_names_are_refused(clock: SimClock) -> None:
    with pytest.raises(ValueError, match="duplicate"):
        AlertDispatcher([RecordingNotifier("a"), RecordingNotifier("a")], clock=clock)


def test_alert_text_and_json_carry_the_fields() -> None:
    alert = make_alert(
        AlertKind.FEED_DEAD,
        "no ticks for 60 s",
        at=datetime(2026, 11, 25, 5, 0, tzinfo=UTC),
        key="shard-0",
        account="paper",
        data={"silent_s": 60},
    )
    assert alert.as_text() == (
        "[CRITICAL] Market data feed dead\n"
        "no ticks for 60 s\n"
        "account paper · 2026-11-25 10:30:00 IST"
    )
    body = alert.as_json()
    assert body == {
        "kind": "feed_dead",
        "severity": "critical",
        "title": "Market data feed dead",
        "message": "no ticks for 60 s",
        "at": "2026-11-25T05:00:00+00:00",
        "key": "shard-0",
        "dedupe_key": "feed_dead:shard-0",
        "account": "paper",
        "data": {"silent_s": 60},
    }


def test_an_alert_dropped_for_a_full_queue_is_not_remembered_as_sent(clock: SimClock) -> None:
    channel = RecordingNotifier()
    alerts = make_dispatcher(channel, clock=clock, queue_size=1)
    alerts.notify(AlertKind.FEED_DEAD, "first", key="a")
    alerts.notify(AlertKind.FEED_DEAD, "dropped", key="b")
    alerts.start()
    assert alerts.wait_idle(5)
    alerts.notify(AlertKind.FEED_DEAD, "raised again", key="b")
    assert alerts.wait_idle(5)
    stats = alerts.stats()
    alerts.close()
    assert [a.message for a in channel.sent] == ["first", "raised again"]
    assert (stats.dropped, stats.suppressed_dedupe) == (1, 0)

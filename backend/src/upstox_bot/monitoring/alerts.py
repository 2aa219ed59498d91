"""Alerts to the trader over Telegram, a webhook or email, sent without blocking trading.

`AlertDispatcher.notify()` returns at once: the alert goes into a bounded queue that a background
thread drains. The dispatcher de-duplicates (the same kind and key within a window sends once),
rate-limits each channel (at most N a minute; the excess is counted and summarised in the next
message), retries transient failures a bounded number of times, and counts every outcome for
the metrics. A failure is logged and counted, never raised into the caller.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time as walltime
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from upstox_bot.domain import IST, AccountSnapshot, AuditRecord, Trade
from upstox_bot.money import format_rupees

if TYPE_CHECKING:
    from upstox_bot.clock import Clock
    from upstox_bot.config import Settings

log = logging.getLogger(__name__)

RATE_WINDOW = timedelta(minutes=1)
DEFAULT_QUEUE_SIZE = 1000
MAX_TRADE_LINES = 20  # end-of-day summary: list at most this many trades
NSE_CLOSE = time(15, 30)  # IST


class AlertKind(StrEnum):
    """What the alert is about; docs/operations.md says what each one asks of the trader."""

    TOKEN_EXPIRED = "token_expired"  # noqa: S105 (an alert kind, not a secret)
    TOKEN_EXPIRING = "token_expiring"  # noqa: S105 (an alert kind, not a secret)
    FEED_DEAD = "feed_dead"
    ORDER_REJECTED = "order_rejected"
    DAILY_LOSS_LIMIT_HIT = "daily_loss_limit_hit"
    KILL_SWITCH_USED = "kill_switch_used"
    RECONCILIATION_MISMATCH = "reconciliation_mismatch"
    WORKER_DOWN = "worker_down"
    SETTING_SKIPPED = "setting_skipped"
    DATABASE_UNAVAILABLE = "database_unavailable"
    END_OF_DAY_SUMMARY = "end_of_day_summary"
    ORDERS_BLOCKED = "orders_blocked"  # Upstox refuses every order of the account
    EXIT_STUCK = "exit_stuck"  # an exit still not filled after every re-price
    ORDER_OUTCOME_UNKNOWN = "order_outcome_unknown"  # an order's answer was lost
    BAN_LIST_FAILED = "ban_list_failed"  # the F&O ban list could not be read
    LIVE_FORCED = "live_forced"  # live trading started before the paper period
    TEST = "test"
    RATE_LIMITED = "alerts_rate_limited"  # the dispatcher's own note: alerts were held back


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


_DEFAULTS: dict[AlertKind, tuple[Severity, str]] = {
    AlertKind.TOKEN_EXPIRED: (Severity.CRITICAL, "Upstox token expired"),
    AlertKind.TOKEN_EXPIRING: (Severity.WARNING, "Upstox token expiring soon"),
    AlertKind.FEED_DEAD: (Severity.CRITICAL, "Market data feed dead"),
    AlertKind.ORDER_REJECTED: (Severity.WARNING, "Order rejected"),
    AlertKind.DAILY_LOSS_LIMIT_HIT: (Severity.CRITICAL, "Daily loss limit hit"),
    AlertKind.KILL_SWITCH_USED: (Severity.CRITICAL, "Kill switch used"),
    AlertKind.RECONCILIATION_MISMATCH: (Severity.CRITICAL, "Reconciliation mismatch"),
    AlertKind.WORKER_DOWN: (Severity.CRITICAL, "Worker down"),
    AlertKind.SETTING_SKIPPED: (Severity.WARNING, "Stored setting skipped at start"),
    AlertKind.DATABASE_UNAVAILABLE: (Severity.CRITICAL, "Database unavailable"),
    AlertKind.END_OF_DAY_SUMMARY: (Severity.INFO, "End-of-day summary"),
    AlertKind.ORDERS_BLOCKED: (Severity.CRITICAL, "Upstox refuses the bot's orders"),
    AlertKind.EXIT_STUCK: (Severity.CRITICAL, "Exit not filled"),
    AlertKind.ORDER_OUTCOME_UNKNOWN: (Severity.WARNING, "Order outcome unknown"),
    AlertKind.BAN_LIST_FAILED: (Severity.WARNING, "F&O ban list not read"),
    AlertKind.LIVE_FORCED: (Severity.WARNING, "Live trading forced"),
    AlertKind.TEST: (Severity.INFO, "Test alert"),
    AlertKind.RATE_LIMITED: (Severity.WARNING, "Alerts held back by the rate limit"),
}


def default_severity(kind: AlertKind) -> Severity:
    """The severity an alert of this kind has unless the sender says otherwise."""
    return _DEFAULTS[kind][0]


def default_title(kind: AlertKind) -> str:
    """The one-line title an alert of this kind has unless the sender says otherwise."""
    return _DEFAULTS[kind][1]


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """One message for the trader. `key` tells alerts of the same kind apart for de-duplication."""

    kind: AlertKind
    title: str
    message: str
    severity: Severity
    at: datetime  # aware
    key: str = ""
    account: str = ""
    data: Mapping[str, object] = field(default_factory=dict)

    @property
    def dedupe_key(self) -> str:
        """Alerts with the same dedupe key inside the de-duplication window send once."""
        return f"{self.kind.value}:{self.key}"

    def as_text(self) -> str:
        """The alert as plain text: severity and title, the message, then account and IST time."""
        when = self.at.astimezone(IST).strftime("%Y-%m-%d %H:%M:%S IST")
        footer = f"account {self.account} · {when}" if self.account else when
        return f"[{self.severity.value.upper()}] {self.title}\n{self.message}\n{footer}"

    def as_json(self) -> dict[str, object]:
        """The webhook body: kind, severity, title, message, at (ISO 8601), keys, account, data."""
        return {
            "kind": self.kind.value,
            "severity": self.severity.value,
            "title": self.title,
            "message": self.message,
            "at": self.at.isoformat(),
            "key": self.key,
            "dedupe_key": self.dedupe_key,
            "account": self.account,
            "data": dict(self.data),
        }


def make_alert(
    kind: AlertKind,
    message: str,
    *,
    at: datetime,
    key: str | None = None,
    severity: Severity | None = None,
    title: str | None = None,
    account: str = "",
    data: Mapping[str, object] | None = None,
) -> Alert:
    """Build an alert, filling the kind's default severity and title."""
    return Alert(
        kind=kind,
        title=title or default_title(kind),
        message=message,
        severity=severity or default_severity(kind),
        at=at,
        key=key or "",
        account=account,
        data=dict(data or {}),
    )


# --- channels ----------------------------------------------------------------------------------


class AlertDeliveryError(Exception):
    """A channel could not deliver an alert. `retryable` is True for transient failures.

    The message never carries a secret (token, password, webhook URL).
    """

    def __init__(self, message: str, *, retryable: bool, retry_after_s: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class Notifier(Protocol):
    """One alert channel (Telegram, webhook, email)."""

    @property
    def name(self) -> str:
        """The channel's name as ALERT_CHANNELS spells it."""
        ...

    def send(self, alert: Alert) -> None:
        """Deliver one alert, blocking until done.

        Raises:
            AlertDeliveryError: delivery failed; `retryable` tells whether to try again.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Bounded retries of transient failures: attempts in all, exponential delays in seconds."""

    max_attempts: int = 3
    base_delay_s: float = 1.0
    max_delay_s: float = 10.0

    def delay_s(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        delay: float = self.base_delay_s * 2.0 ** (attempt - 1)
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)
        return min(delay, self.max_delay_s)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryResult:
    """The outcome of sending one alert on one channel."""

    channel: str
    ok: bool
    attempts: int
    error: str = ""


def deliver(
    notifier: Notifier,
    alert: Alert,
    retry: RetryPolicy,
    *,
    sleep: Callable[[float], bool] | None = None,
) -> DeliveryResult:
    """Send `alert` on one channel, retrying transient failures as `retry` allows; never raises.

    Args:
        sleep: waits the given seconds and returns True to go on, False to give up (shutdown);
            default time.sleep.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            notifier.send(alert)
        except AlertDeliveryError as exc:
            error, retryable, retry_after = str(exc), exc.retryable, exc.retry_after_s
        except Exception as exc:  # a channel bug must not kill the dispatcher
            error, retryable, retry_after = f"{type(exc).__name__}", False, None
            log.exception("alert.channel_error", extra={"channel": notifier.name})
        else:
            return DeliveryResult(channel=notifier.name, ok=True, attempts=attempt)
        if not retryable or attempt >= retry.max_attempts:
            return DeliveryResult(channel=notifier.name, ok=False, attempts=attempt, error=error)
        delay = retry.delay_s(attempt, retry_after)
        if sleep is None:
            walltime.sleep(delay)
        elif not sleep(delay):
            return DeliveryResult(channel=notifier.name, ok=False, attempts=attempt, error=error)


# --- the dispatcher ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelStats:
    """Counters of one channel since start."""

    sent: int = 0
    failed: int = 0
    suppressed_rate: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertStats:
    """Counters of the dispatcher since start, for the metrics.

    `sent`, `failed` and `suppressed_rate` count deliveries (one alert on two channels counts
    twice); `suppressed_dedupe` and `dropped` (queue full or shutting down) count alerts.
    """

    sent: int
    failed: int
    suppressed_dedupe: int
    suppressed_rate: int
    dropped: int
    queued: int
    channels: Mapping[str, ChannelStats]


@dataclass(slots=True)
class _Channel:
    notifier: Notifier
    sent_at: deque[datetime] = field(default_factory=deque)
    sent: int = 0
    failed: int = 0
    suppressed_rate: int = 0
    held: Counter[str] = field(default_factory=Counter)  # held back by the rate limit, by kind
    held_since: datetime | None = None

    def room(self, now: datetime, per_minute: int) -> bool:
        while self.sent_at and now - self.sent_at[0] >= RATE_WINDOW:
            self.sent_at.popleft()
        return len(self.sent_at) < per_minute


class _Stop:
    pass


_STOP = _Stop()


class AlertDispatcher:
    """Queues alerts and sends them from a background thread; see the module docstring.

    The clock (a wall clock in production) stamps alerts and measures the de-duplication and
    rate windows. Call `start()` once, `notify()` or `send()` from any thread, `close()` at exit.
    """

    def __init__(
        self,
        notifiers: Sequence[Notifier],
        *,
        clock: Clock,
        account: str = "",
        dedupe_s: float = 300.0,
        rate_per_minute: int = 10,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        retry: RetryPolicy | None = None,
        idle_s: float = 1.0,
    ) -> None:
        """Set up the dispatcher; nothing is sent before `start()`.

        Args:
            dedupe_s: the same kind and key within this many seconds sends once; 0 = never dedupe.
            rate_per_minute: at most this many alerts per channel in any 60 s.
            queue_size: alerts waiting beyond this are dropped (and counted).
            idle_s: how often an idle worker sends the summary of rate-limited alerts.
        """
        if rate_per_minute < 1:
            raise ValueError("rate_per_minute must be at least 1")
        names = [n.name for n in notifiers]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate alert channels: {names}")
        self.clock = clock
        self.account = account
        self.dedupe = timedelta(seconds=dedupe_s)
        self.rate_per_minute = rate_per_minute
        self.retry = retry or RetryPolicy()
        self._idle_s = idle_s
        self._channels = [_Channel(n) for n in notifiers]
        self._queue: queue.Queue[Alert | _Stop] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._last_accepted: dict[str, datetime] = {}
        self._suppressed_dedupe = 0
        self._dropped = 0
        self._closing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def channels(self) -> list[str]:
        """The channel names, in sending order."""
        return [c.notifier.name for c in self._channels]

    # --- producer side (any thread; never blocks) -------------------------------------------

    def notify(
        self,
        kind: AlertKind,
        message: str,
        *,
        key: str | None = None,
        severity: Severity | None = None,
        title: str | None = None,
        data: Mapping[str, object] | None = None,
    ) -> None:
        """Queue an alert and return at once; see `send` for what may keep it from going out."""
        self.send(
            make_alert(
                kind,
                message,
                at=self.clock.now(),
                key=key,
                severity=severity,
                title=title,
                account=self.account,
                data=data,
            )
        )

    def send(self, alert: Alert) -> None:
        """Queue a built alert and return at once.

        It is dropped (and counted) when the same kind and key was accepted within the
        de-duplication window, when the queue is full, or after `close()`.
        """
        if not alert.account and self.account:
            alert = replace(alert, account=self.account)
        with self._lock:
            if self._closing:
                self._dropped += 1
                log.warning("alert.dropped", extra={"kind": alert.kind.value, "why": "closed"})
                return
            now = self.clock.now()
            if self.dedupe and self._seen_recently(alert, now):
                self._suppressed_dedupe += 1
                log.info("alert.deduplicated", extra={"kind": alert.kind.value, "key": alert.key})
                return
            try:
                self._queue.put_nowait(alert)
            except queue.Full:
                # Not remembered for de-duplication: the same alert raised again may still go.
                self._dropped += 1
                log.warning("alert.dropped", extra={"kind": alert.kind.value, "why": "queue full"})
                return
            self._remember(alert, now)
        log.info(
            "alert.queued",
            extra={"kind": alert.kind.value, "key": alert.key, "severity": alert.severity.value},
        )

    def send_many(self, alerts: Iterable[Alert]) -> None:
        """Queue each alert as `send` does."""
        for alert in alerts:
            self.send(alert)

    def on_audit(self, record: AuditRecord) -> None:
        """Queue the alerts an engine audit record calls for (see `alerts_for_audit`)."""
        self.send_many(alerts_for_audit(record))

    def _seen_recently(self, alert: Alert, now: datetime) -> bool:
        last = self._last_accepted.get(alert.dedupe_key)
        return last is not None and now - last < self.dedupe

    def _remember(self, alert: Alert, now: datetime) -> None:
        self._last_accepted[alert.dedupe_key] = now
        if len(self._last_accepted) > 4 * DEFAULT_QUEUE_SIZE:
            self._last_accepted = {
                k: at for k, at in self._last_accepted.items() if now - at < self.dedupe
            }

    # --- state ------------------------------------------------------------------------------

    def stats(self) -> AlertStats:
        """A snapshot of the counters."""
        with self._lock:
            channels = {
                c.notifier.name: ChannelStats(
                    sent=c.sent, failed=c.failed, suppressed_rate=c.suppressed_rate
                )
                for c in self._channels
            }
            return AlertStats(
                sent=sum(c.sent for c in channels.values()),
                failed=sum(c.failed for c in channels.values()),
                suppressed_dedupe=self._suppressed_dedupe,
                suppressed_rate=sum(c.suppressed_rate for c in channels.values()),
                dropped=self._dropped,
                queued=self._queue.qsize(),
                channels=channels,
            )

    @property
    def running(self) -> bool:
        """Is the background thread alive?"""
        return self._thread is not None and self._thread.is_alive()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every queued alert has been handled; False if `timeout_s` passed first."""
        deadline = walltime.monotonic() + timeout_s
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - walltime.monotonic()
                if remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background thread (once)."""
        if self._thread is not None:
            raise RuntimeError("AlertDispatcher already started")
        self._thread = threading.Thread(target=self._run, name="alert-dispatcher", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop accepting alerts, send what is queued for up to `timeout_s`, then stop the thread.

        Alerts still queued after that are dropped and counted. Closes the channels.
        """
        with self._lock:
            self._closing = True
        if self.running:
            self.wait_idle(timeout_s)
        self._stop.set()
        if self._thread is not None:
            # A full queue is fine: the worker sees _stop after its current alert.
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(_STOP)
            self._thread.join(timeout_s)
        with self._lock:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, Alert):
                    self._dropped += 1
        for channel in self._channels:
            try:
                channel.notifier.close()
            except Exception:  # closing must not fail the caller's shutdown
                log.exception("alert.close_failed", extra={"channel": channel.notifier.name})

    def __enter__(self) -> AlertDispatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the worker thread ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=self._idle_s)
            except queue.Empty:
                self._send_held_summaries()
                continue
            try:
                if isinstance(item, _Stop):
                    return
                self._deliver(item)
                self._send_held_summaries()
            except Exception:  # the worker outlives any one alert
                log.exception("alert.worker_error")
            finally:
                self._queue.task_done()

    def _deliver(self, alert: Alert) -> None:
        for channel in self._channels:
            now = self.clock.now()
            if not channel.room(now, self.rate_per_minute):
                with self._lock:
                    channel.suppressed_rate += 1
                channel.held[alert.kind.value] += 1
                if channel.held_since is None:
                    channel.held_since = now
                log.warning(
                    "alert.rate_limited",
                    extra={"channel": channel.notifier.name, "kind": alert.kind.value},
                )
                continue
            outgoing = alert
            if channel.held:
                outgoing = replace(alert, message=f"{alert.message}\n\n{_held_note(channel)}")
                channel.held.clear()
                channel.held_since = None
            self._send_on(channel, outgoing, now)

    def _send_held_summaries(self) -> None:
        for channel in self._channels:
            if not channel.held:
                continue
            now = self.clock.now()
            if not channel.room(now, self.rate_per_minute):
                continue
            total = sum(channel.held.values())
            summary = make_alert(
                AlertKind.RATE_LIMITED,
                _held_note(channel),
                at=now,
                account=self.account,
                data={"held": total, "by_kind": dict(channel.held)},
            )
            channel.held.clear()
            channel.held_since = None
            self._send_on(channel, summary, now)

    def _send_on(self, channel: _Channel, alert: Alert, now: datetime) -> None:
        channel.sent_at.append(now)
        result = deliver(channel.notifier, alert, self.retry, sleep=self._sleep)
        with self._lock:
            if result.ok:
                channel.sent += 1
            else:
                channel.failed += 1
        if result.ok:
            log.info(
                "alert.sent",
                extra={
                    "channel": result.channel,
                    "kind": alert.kind.value,
                    "attempts": result.attempts,
                },
            )
        else:
            log.warning(
                "alert.failed",
                extra={
                    "channel": result.channel,
                    "kind": alert.kind.value,
                    "attempts": result.attempts,
                    "error": result.error,
                },
            )

    def _sleep(self, seconds: float) -> bool:
        return not self._stop.wait(seconds)


def _held_note(channel: _Channel) -> str:
    total = sum(channel.held.values())
    kinds = ", ".join(f"{kind} x{n}" for kind, n in sorted(channel.held.items()))
    since = ""
    if channel.held_since is not None:
        since = " since " + channel.held_since.astimezone(IST).strftime("%H:%M:%S IST")
    noun = "alert" if total == 1 else "alerts"
    return f"(+{total} more {noun} held back by the rate limit{since}: {kinds})"


# --- engine audit records and the end-of-day summary --------------------------------------------


def _paise(data: Mapping[str, object], name: str) -> int | None:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        return None
    return int(value)


def alerts_for_audit(record: AuditRecord) -> list[Alert]:
    """The alerts one engine audit record calls for; [] for records that need no human.

    Maps "risk.daily_loss_limit_hit", "kill_switch.on", "kill_switch.off" (informational),
    "order.rejected", "broker.orders_blocked", "order.exit_stuck", "order.outcome_unknown",
    "universe.ban_list_failed", "live.forced" and "setting.override_skipped". The alerts carry no
    account: the dispatcher fills in its own.
    """
    data = record.data
    if record.event == "risk.daily_loss_limit_hit":
        day = record.at.astimezone(IST).date().isoformat()
        pnl, limit = _paise(data, "day_pnl_paise"), _paise(data, "limit_paise")
        shown = ""
        if pnl is not None and limit is not None:
            shown = (
                f"Day P&L {format_rupees(pnl, signed=True)} reached the daily loss limit of "
                f"{format_rupees(limit)}. "
            )
        return [
            make_alert(
                AlertKind.DAILY_LOSS_LIMIT_HIT,
                f"{shown}No new entries for the rest of {day}; open positions keep their exits.",
                at=record.at,
                key=day,
                data=dict(data),
            )
        ]
    if record.event in ("kill_switch.on", "kill_switch.off"):
        on = record.event == "kill_switch.on"
        reason = str(data.get("reason") or "no reason given")
        what = (
            "ON: no new entries (open positions are closed when KILL_SWITCH_SQUARE_OFF is set)"
            if on
            else "OFF: entries allowed again"
        )
        return [
            make_alert(
                AlertKind.KILL_SWITCH_USED,
                f"Kill switch turned {what}. By {record.actor}: {reason}.",
                at=record.at,
                # Each toggle is its own event; a record delivered twice still sends once.
                key=f"{'on' if on else 'off'}:{record.at.isoformat()}",
                severity=Severity.CRITICAL if on else Severity.INFO,
                title="Kill switch ON" if on else "Kill switch OFF",
                data={**data, "active": on, "by": record.actor},
            )
        ]
    if record.event == "broker.orders_blocked":
        cause = str(data.get("cause") or "unknown")
        return [
            make_alert(
                AlertKind.ORDERS_BLOCKED,
                f"Upstox refuses every order of the account ({cause}): "
                f"{data.get('what_to_do') or data.get('reason') or ''}. New entries are paused; "
                "exits wait and are sent when Upstox accepts orders again.",
                at=record.at,
                key=cause,  # once per cause (the dispatcher's dedupe window)
                data=dict(data),
            )
        ]
    if record.event == "order.exit_stuck":
        key = str(data.get("instrument_key") or record.entity_id)
        return [
            make_alert(
                AlertKind.EXIT_STUCK,
                f"The exit {record.entity_id} of {key} is still not filled after "
                f"{data.get('attempts')} re-prices (last price "
                f"{_paise_text(data, 'last_price_paise')}). The bot keeps re-pricing it; check "
                "the position in the Upstox app and close it by hand if the market is gone.",
                at=record.at,
                key=record.entity_id,
                data=dict(data),
            )
        ]
    if record.event == "order.outcome_unknown":
        return [
            make_alert(
                AlertKind.ORDER_OUTCOME_UNKNOWN,
                f"The answer to order {record.entity_id} was lost "
                f"({data.get('reason') or 'no reason'}). The bot looks it up by its tag and "
                "sends nothing again until it knows.",
                at=record.at,
                key=record.entity_id,
                data=dict(data),
            )
        ]
    if record.event == "universe.ban_list_failed":
        return [
            make_alert(
                AlertKind.BAN_LIST_FAILED,
                f"The F&O ban list could not be read ({data.get('error')}); the last known "
                f"list ({data.get('kept')} stock(s)) stays in force.",
                at=record.at,
                key=str(record.at.astimezone(IST).date()),
                data=dict(data),
            )
        ]
    if record.event == "live.forced":
        return [
            make_alert(
                AlertKind.LIVE_FORCED,
                f"Live trading started with {data.get('paper_days')} of "
                f"{data.get('required_days')} paper days, forced by {record.actor}: "
                f"{data.get('reason')}.",
                at=record.at,
                key=record.at.isoformat(),
                data=dict(data),
            )
        ]
    if record.event == "setting.override_skipped":
        reason = str(data.get("reason") or "it no longer validates")
        return [
            make_alert(
                AlertKind.SETTING_SKIPPED,
                f"The bot started without the stored {record.entity_id} override "
                f"({data.get('value')!r:.80}): {reason}. Set it again through the API "
                "(PATCH /api/v1/settings or the strategy's parameters) or fix what it needs.",
                at=record.at,
                key=record.entity_id,
                data={**data, "setting": record.entity_id},
            )
        ]
    if record.event == "order.rejected":
        reason = str(data.get("reason") or "no reason given")
        return [
            make_alert(
                AlertKind.ORDER_REJECTED,
                f"Order {record.entity_id} was rejected: {reason}.",
                at=record.at,
                key=record.entity_id,
                data={**data, "client_order_id": record.entity_id},
            )
        ]
    return []


def _paise_text(data: Mapping[str, object], key: str) -> str:
    paise = _paise(data, key)
    return format_rupees(paise) if paise is not None else "unknown"


def end_of_day_summary(
    snapshot: AccountSnapshot, trades: Sequence[Trade], *, at: datetime | None = None
) -> Alert:
    """The end-of-day alert: the day's P&L, charges, trades won and lost, and the limits' state.

    Args:
        snapshot: the account at the close (its P&L figures are the totals shown).
        trades: the day's closed trades, listed (at most MAX_TRADE_LINES of them).
        at: when the summary is made; default the NSE close (15:30 IST) of the trading date.
    """
    wins = sum(1 for t in trades if t.net_pnl_paise > 0)
    losses = sum(1 for t in trades if t.net_pnl_paise < 0)
    day_pnl = snapshot.day_pnl_paise
    headroom = snapshot.loss_limit_paise + min(day_pnl, 0)
    lines = [
        f"Day P&L {format_rupees(day_pnl, signed=True)} "
        f"(realised {format_rupees(snapshot.realised_pnl_paise, signed=True)}, "
        f"unrealised {format_rupees(snapshot.unrealised_pnl_paise, signed=True)}), "
        f"charges {format_rupees(snapshot.charges_paise)}.",
        f"Trades {len(trades)} ({wins} won, {losses} lost); orders {snapshot.orders}; "
        f"open positions {snapshot.open_positions}.",
        f"Capital at the open {format_rupees(snapshot.capital_paise)}.",
        "Daily loss limit "
        + (
            f"HIT ({format_rupees(snapshot.loss_limit_paise)})."
            if snapshot.loss_limit_hit
            else f"not hit (headroom {format_rupees(max(headroom, 0))})."
        ),
        f"Kill switch {'ON' if snapshot.kill_switch else 'off'}.",
    ]
    for trade in list(trades)[:MAX_TRADE_LINES]:
        lines.append(
            f"- {trade.instrument_key} {trade.direction.value} {trade.quantity} "
            f"@ {format_rupees(trade.entry_price_paise)} -> "
            f"{format_rupees(trade.exit_price_paise)}: "
            f"{format_rupees(trade.net_pnl_paise, signed=True)} ({trade.exit_reason.value})"
        )
    if len(trades) > MAX_TRADE_LINES:
        lines.append(f"- and {len(trades) - MAX_TRADE_LINES} more")
    if at is None:
        at = datetime.combine(date.fromisoformat(snapshot.trading_date), NSE_CLOSE, tzinfo=IST)
    return make_alert(
        AlertKind.END_OF_DAY_SUMMARY,
        "\n".join(lines),
        at=at,
        key=snapshot.trading_date,
        severity=Severity.WARNING if snapshot.loss_limit_hit else Severity.INFO,
        title=f"End of day {snapshot.trading_date}: P&L {format_rupees(day_pnl, signed=True)}",
        data={
            "trading_date": snapshot.trading_date,
            "day_pnl_paise": day_pnl,
            "realised_pnl_paise": snapshot.realised_pnl_paise,
            "unrealised_pnl_paise": snapshot.unrealised_pnl_paise,
            "charges_paise": snapshot.charges_paise,
            "trades": len(trades),
            "wins": wins,
            "losses": losses,
            "loss_limit_hit": snapshot.loss_limit_hit,
        },
    )


# --- from settings --------------------------------------------------------------------------------


def dispatcher_from_settings(
    settings: Settings, *, clock: Clock | None = None, retry: RetryPolicy | None = None
) -> AlertDispatcher:
    """An AlertDispatcher for the channels in ALERT_CHANNELS (not started).

    Args:
        clock: stamps alerts and measures the windows; default the wall clock.
        retry: retries of transient failures; default 3 attempts, 1 s then 2 s apart.

    Raises:
        ConfigError: a chosen channel lacks its settings.
    """
    from upstox_bot.clock import LiveClock
    from upstox_bot.monitoring.notifiers import build_notifiers

    return AlertDispatcher(
        build_notifiers(settings, settings.ALERT_CHANNELS),
        clock=clock or LiveClock(),
        account=settings.ACCOUNT_NAME,
        dedupe_s=settings.ALERT_DEDUPE_SECONDS,
        rate_per_minute=settings.ALERT_RATE_PER_MINUTE,
        retry=retry,
    )


def send_test_alert(
    settings: Settings,
    channels: Sequence[str] | None = None,
    *,
    clock: Clock | None = None,
    retry: RetryPolicy | None = None,
) -> list[DeliveryResult]:
    """Send a test alert now on `channels` (default ALERT_CHANNELS) and report each outcome.

    Bypasses the queue, de-duplication and rate limits: it is the trader checking the set-up.

    Raises:
        ConfigError: a channel is unknown or lacks its settings.
    """
    from upstox_bot.clock import LiveClock
    from upstox_bot.monitoring.notifiers import build_notifiers

    chosen = list(settings.ALERT_CHANNELS) if channels is None else list(channels)
    notifiers = build_notifiers(settings, chosen)
    at = (clock or LiveClock()).now()
    alert = make_alert(
        AlertKind.TEST,
        "This is a test alert from upstox-bot: this channel works.",
        at=at,
        key=at.isoformat(),
        account=settings.ACCOUNT_NAME,
    )
    results: list[DeliveryResult] = []
    try:
        for notifier in notifiers:
            results.append(deliver(notifier, alert, retry or RetryPolicy(max_attempts=2)))
    finally:
        for notifier in notifiers:
            notifier.close()
    return results

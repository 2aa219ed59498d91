"""Alerts to the trader sent without blocking trading.

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from upstox_bot.domain import IST, AuditRecord
from upstox_bot.monitoring.alerts.delivery import Notifier, RetryPolicy, deliver
from upstox_bot.monitoring.alerts.model import Alert, AlertKind, Severity, make_alert
from upstox_bot.monitoring.alerts.rules import alerts_for_audit

if TYPE_CHECKING:
    from upstox_bot.clock import Clock

log = logging.getLogger(__name__)

RATE_WINDOW = timedelta(minutes=1)
DEFAULT_QUEUE_SIZE = 1000


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

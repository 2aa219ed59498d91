"""What an alert is: its kind, severity, title and message, and how it reads as text or JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from upstox_bot.domain import IST


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

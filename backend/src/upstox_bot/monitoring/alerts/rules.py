"""The alerts that engine audit records call for, and the end-of-day summary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal

from upstox_bot.clock import NseCalendar
from upstox_bot.domain import IST, AccountSnapshot, AuditRecord, Trade
from upstox_bot.money import format_rupees
from upstox_bot.monitoring.alerts.model import Alert, AlertKind, Severity, make_alert

MAX_TRADE_LINES = 20  # end-of-day summary: list at most this many trades


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
        at = datetime.combine(
            date.fromisoformat(snapshot.trading_date), NseCalendar.SESSION_CLOSE, tzinfo=IST
        )
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

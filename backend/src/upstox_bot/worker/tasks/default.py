"""Queue "default": beat's housekeeping around the session."""

from __future__ import annotations

import asyncio
import logging
from datetime import date

from upstox_bot import live_events
from upstox_bot.config import MarketSource
from upstox_bot.db.repositories.accounts import AccountRepository
from upstox_bot.db.repositories.audit import AuditRepository
from upstox_bot.db.repositories.trades import TradeRepository
from upstox_bot.db.session import session_scope
from upstox_bot.domain import AuditRecord
from upstox_bot.errors import ConfigError
from upstox_bot.runtime.distributed.resources import calendar_of
from upstox_bot.runtime.distributed.sessions import (
    now_ist,
    sim_session_specs,
    start_session,
    supervise_feeds,
    upstox_session_specs,
)
from upstox_bot.runtime.store import with_db_retry
from upstox_bot.worker import events
from upstox_bot.worker.app import enqueue, resources, task
from upstox_bot.worker.state import Keys, RedisPaperBook

log = logging.getLogger(__name__)


@task("default.supervise_feeds", acks_late=True, ignore_result=True)
def supervise() -> list[str]:
    """Restart the feed of every registered, unfinished shard whose lease has lapsed."""
    return supervise_feeds(resources().redis, enqueue)


@task("default.start_session", acks_late=True)
def start_todays_session() -> list[str]:
    """Start today's market feed (a trading day only); returns the shards started."""
    res = resources()
    settings = res.settings
    today = now_ist().date()
    if not calendar_of(settings, res.sessions).is_trading_day(today):
        log.info("session.holiday", extra={"date": today.isoformat()})
        return []
    if settings.MARKET is MarketSource.UPSTOX:
        try:
            specs = upstox_session_specs(res, today)
        except ConfigError:
            log.exception("session.not_started", extra={"market": settings.MARKET.value})
            return []
    elif settings.MARKET is MarketSource.SIM:
        # The simulated market at the wall clock's pace, from 09:15 (beat starts it at 09:10).
        specs = sim_session_specs(settings, today, speed=1.0)
    else:
        log.error("session.market_source_unavailable", extra={"market": settings.MARKET.value})
        return []
    start_session(res.redis, enqueue, specs)
    return [s.shard for s in specs]


@task("default.refresh_universe", acks_late=True)
def refresh_universe() -> str:
    """Refresh the F&O universe before the open, as `upstox-bot universe refresh` does: the
    instrument master downloaded, the ban list read, the year's NSE calendar stored."""
    from upstox_bot.upstox.universe import refresh_universe as refresh

    res = resources()
    with session_scope(res.sessions) as session:
        report = asyncio.run(refresh(session, res.settings))
    log.info(
        "universe.refreshed",
        extra={"stocks": report.stocks, "source": report.source, "ban_error": report.ban_error},
    )
    return f"{report.stocks} stocks"


@task("default.watch_token", acks_late=True)
def watch_token() -> str:
    """Warn when live trading or the Upstox feed is configured without an access token."""
    settings = resources().settings
    needs_token = settings.MARKET is MarketSource.UPSTOX or not settings.PAPER_TRADING
    if not needs_token:
        return "not_needed"
    if settings.UPSTOX_ACCESS_TOKEN is None:
        log.error("token.missing")
        events.publish(
            resources().redis, [(live_events.ACCOUNT, {"alert": "upstox token missing"})]
        )
        return "missing"
    return "present"


@task("default.daily_reset", acks_late=True)
def daily_reset() -> int:
    """Clear yesterday's coordination state in Redis (paper book, rate windows, snapshot)."""
    res = resources()
    account = res.settings.ACCOUNT_NAME
    client = res.redis
    RedisPaperBook(client, account).clear()
    removed = int(client.delete(Keys.sent(account), Keys.positions(account)))
    log.info("day.reset", extra={"account": account})
    return removed


@task("default.end_of_day", acks_late=True)
def end_of_day(account: str) -> dict[str, object]:
    """Record and publish the day's summary: trades, realised P&L, charges."""
    res = resources()
    today: date = now_ist().date()

    def summarise() -> dict[str, object]:
        with session_scope(res.sessions) as session:
            trades = TradeRepository(session, account).find(
                start_date=today, end_date=today, limit=100_000
            )
            snapshot = AccountRepository(session).latest_snapshot(account, on_or_before=today)
            summary: dict[str, object] = {
                "trading_date": today.isoformat(),
                "trades": len(trades),
                "net_pnl_paise": sum(t.net_pnl_paise for t in trades),
                "charges_paise": sum(t.charges_paise for t in trades),
                "winners": sum(1 for t in trades if t.net_pnl_paise > 0),
                "loss_limit_hit": bool(snapshot and snapshot.loss_limit_hit),
            }
            AuditRepository(session).add(
                AuditRecord(
                    event="day.summary",
                    entity="account",
                    entity_id=account,
                    at=now_ist(),
                    data=summary,
                    actor="beat",
                )
            )
            return summary

    summary = with_db_retry(summarise)
    events.publish(res.redis, [(live_events.ACCOUNT, {"summary": summary})])
    log.info("day.summary", extra=summary)
    return summary

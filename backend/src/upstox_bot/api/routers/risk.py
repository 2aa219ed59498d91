"""Risk: every limit against its current use, and the kill switch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session, sessionmaker

from upstox_bot.api.auth import TradeActor
from upstox_bot.api.commands import send
from upstox_bot.api.deps import AccountDep, ControlDep, SessionDep, SettingsDep, ViewDep
from upstox_bot.api.errors import BotNotRunning
from upstox_bot.api.routing import GuardedRoute
from upstox_bot.api.schemas.common import ERRORS, ErrorBody
from upstox_bot.api.schemas.control import KillSwitchRead, KillSwitchUpdate, RiskStatusRead
from upstox_bot.config import Settings
from upstox_bot.db.models import AccountMode
from upstox_bot.db.repositories.accounts import AccountRepository
from upstox_bot.db.repositories.audit import AuditRepository
from upstox_bot.db.repositories.rate_limits import RateLimitLogRepository
from upstox_bot.db.session import session_scope
from upstox_bot.domain import AuditRecord, datetime_to_ms, paise_to_rupees, rupees_to_paise
from upstox_bot.risk.limits import RiskLimits
from upstox_bot.risk.rate_limit import WINDOW_MS, OrderRateLimiter
from upstox_bot.runtime import components
from upstox_bot.runtime.control import Command, CommandKind, ControlPort

router = APIRouter(tags=["risk"], responses=ERRORS, route_class=GuardedRoute)


def _window(limits: RiskLimits) -> str:
    return f"{limits.entry_start:%H:%M}-{limits.entry_end:%H:%M}"


@router.get("/risk", response_model=RiskStatusRead, responses={404: {"model": ErrorBody}})
async def risk_status(
    view: ViewDep, session: SessionDep, account: AccountDep, settings: SettingsDep
) -> RiskStatusRead:
    """Every hard limit now: positions, the day's P&L against the loss limit, order pacing,
    the kill switch. From the running kernel when one runs, else from the database."""
    if view is not None:
        limits = view.limits
        snap = view.account
        loss_limit = int(limits["daily_loss_limit_paise"])
        return RiskStatusRead(
            source="engine",
            at=view.at,
            kill_switch=view.kill_switch.active,
            kill_switch_reason=view.kill_switch.reason or None,
            open_positions=view.open_positions,
            max_open_positions=int(limits["max_open_positions"]),
            day_pnl=paise_to_rupees(snap.day_pnl_paise),
            daily_loss_limit=paise_to_rupees(loss_limit),
            loss_limit_headroom=paise_to_rupees(max(0, loss_limit + snap.day_pnl_paise)),
            loss_limit_hit=snap.loss_limit_hit,
            orders_last_minute=view.orders_last_minute,
            max_orders_per_minute=int(limits["max_orders_per_minute"]),
            min_order_interval_seconds=int(limits["min_order_interval_s"]),
            seconds_until_next_order=view.seconds_until_next_order,
            entry_window=f"{str(limits['entry_start'])[:5]}-{str(limits['entry_end'])[:5]}",
            allow_short=bool(limits["allow_short"]),
            entries_paused=view.entries_paused,
        )
    return await run_in_threadpool(_stored_status, session, account, settings)


def _stored_status(session: Session, account: str, settings: Settings) -> RiskStatusRead:
    now = datetime.now(UTC)
    accounts = AccountRepository(session)
    record = accounts.get(account)
    snap = accounts.latest_snapshot(account)
    capital = snap.capital_paise if snap else rupees_to_paise(settings.ACCOUNT_SIZE)
    limits = components.risk_limits(settings, capital_paise=capital)
    limiter = OrderRateLimiter(limits.max_orders_per_minute, limits.min_order_interval_s)
    now_ms = datetime_to_ms(now)
    sent = RateLimitLogRepository(session, account).sent_ms_since(
        now - timedelta(milliseconds=WINDOW_MS)
    )
    limiter.restore(ms for ms in sent if ms <= now_ms)  # a simulated future is not "now"
    check = limiter.check(now_ms)
    day_pnl = snap.day_pnl_paise if snap else 0
    return RiskStatusRead(
        source="database",
        at=now,
        kill_switch=record.kill_switch,
        kill_switch_reason=record.kill_switch_reason,
        open_positions=snap.open_positions if snap else 0,
        max_open_positions=limits.max_open_positions,
        day_pnl=paise_to_rupees(day_pnl),
        daily_loss_limit=paise_to_rupees(limits.daily_loss_limit_paise),
        loss_limit_headroom=paise_to_rupees(max(0, limits.daily_loss_limit_paise + day_pnl)),
        loss_limit_hit=snap.loss_limit_hit if snap else False,
        orders_last_minute=limiter.sent_in_window(now_ms),
        max_orders_per_minute=limits.max_orders_per_minute,
        min_order_interval_seconds=limits.min_order_interval_s,
        seconds_until_next_order=check.wait_ms / 1000,
        entry_window=_window(limits),
        allow_short=limits.allow_short,
    )


def _store_kill_switch(
    session: Session,
    body: KillSwitchUpdate,
    *,
    bot_running: bool,
    account: str,
    settings: Settings,
    actor: str,
    at: datetime,
) -> None:
    accounts = AccountRepository(session)
    accounts.get_or_create(
        account,
        mode=AccountMode.PAPER,
        starting_capital_paise=rupees_to_paise(settings.ACCOUNT_SIZE),
        at=at,
    )
    accounts.set_kill_switch(account, on=body.active, reason=body.reason, at=at)
    if not bot_running:  # a running engine audits the change itself
        AuditRepository(session).add(
            AuditRecord(
                event="kill_switch." + ("on" if body.active else "off"),
                entity="account",
                entity_id=account,
                at=at,
                data={"reason": body.reason, "applied_to_running_bot": False},
                actor=actor,
            )
        )


async def apply_kill_switch(
    sessions: sessionmaker[Session],
    control: ControlPort | None,
    body: KillSwitchUpdate,
    *,
    account: str,
    settings: Settings,
    actor: str,
) -> KillSwitchRead:
    """Turn the kill switch on or off through the control port: the running kernel applies
    it, stores it on the account and audits it (once); with no kernel running it is stored
    and audited here, and a kernel started later reads it. Every caller (the route below,
    Telegram's /kill) goes through here."""
    at = datetime.now(UTC)
    command = Command(
        kind=CommandKind.KILL_SWITCH, by=actor, reason=body.reason, args={"active": body.active}
    )
    try:
        # The running kernel applies it, stores it on the account and audits it (once).
        result = await send(control, command, "the kill switch")
    except BotNotRunning:
        result = None
    if result is not None:
        data = result.data
        return KillSwitchRead(
            active=bool(data["active"]),
            reason=str(data["reason"]) or None,
            changed_at=datetime.fromisoformat(str(data["changed_at"])),
            changed_by=str(data["changed_by"]) or None,
            applied_to_running_bot=True,
            positions_closing=int(data["positions_closing"]),
        )

    def store() -> None:
        # A fresh unit of work (see settings.change_settings): never upgrade the request's
        # read snapshot to a write while the trading loop commits.
        with session_scope(sessions) as own:
            _store_kill_switch(
                own,
                body,
                bot_running=False,
                account=account,
                settings=settings,
                actor=actor,
                at=at,
            )

    await run_in_threadpool(store)
    return KillSwitchRead(
        active=body.active,
        reason=body.reason if body.active else None,
        changed_at=at,
        changed_by=actor,
        applied_to_running_bot=False,
        positions_closing=0,
    )


@router.post(
    "/risk/kill-switch",
    response_model=KillSwitchRead,
    responses={404: {"model": ErrorBody}},
)
async def set_kill_switch(
    body: KillSwitchUpdate,
    request: Request,
    control: ControlDep,
    account: AccountDep,
    settings: SettingsDep,
    actor: TradeActor,
) -> KillSwitchRead:
    """Turn the kill switch on (no new entries; by default open positions are closed) or off.
    It is stored on the account, so it holds across restarts and for a bot started later."""
    return await apply_kill_switch(
        request.app.state.sessions, control, body, account=account, settings=settings, actor=actor
    )

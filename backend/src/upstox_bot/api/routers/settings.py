"""Settings: read them, change them at runtime (validated, persisted, audited, applied live)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from upstox_bot.api.auth import TradeActor
from upstox_bot.api.commands import send
from upstox_bot.api.deps import ControlDep, SessionDep, SettingsDep
from upstox_bot.api.errors import BotNotRunning
from upstox_bot.api.routing import GuardedRoute
from upstox_bot.api.schemas.common import ERRORS, ErrorBody
from upstox_bot.api.schemas.control import (
    OverrideRead,
    SettingChangeRead,
    SettingsPatch,
    SettingsPatchRead,
    SettingsRead,
)
from upstox_bot.api.settings_changes import (
    changed_keys,
    check_live_trading,
    persist,
    public_values,
    validate_changes,
    wants_live_trading,
)
from upstox_bot.config import Settings
from upstox_bot.db.base import jsonable
from upstox_bot.db.repositories.audit import AuditRepository
from upstox_bot.db.repositories.settings_overrides import (
    CHANGEABLE,
    LIVE,
    SettingsOverrideRepository,
    setting_changed,
)
from upstox_bot.db.session import session_scope
from upstox_bot.runtime.control import Command, CommandKind, ControlPort

router = APIRouter(tags=["settings"], responses=ERRORS, route_class=GuardedRoute)


@router.get("/settings", response_model=SettingsRead)
def read_settings(settings: SettingsDep, session: SessionDep) -> SettingsRead:
    """The effective settings (environment plus runtime overrides); secrets are hidden."""
    overrides = SettingsOverrideRepository(session).find()
    return SettingsRead(
        values=public_values(settings),
        overrides=[
            OverrideRead(key=o.key, value=o.value, updated_at=o.updated_at, updated_by=o.updated_by)
            for o in overrides
        ],
        changeable=sorted(CHANGEABLE),
        live=sorted(LIVE),
    )


async def change_settings(
    request: Request,
    control: ControlPort | None,
    session: Session,
    actor: str,
    patch: SettingsPatch,
) -> SettingsPatchRead:
    """Validate, persist, audit and apply a settings change: its writes run in a thread, the
    live part goes to the running kernel through the control port."""
    current: Settings = request.app.state.settings
    new = validate_changes(current, patch.changes)
    keys = changed_keys(current, new, patch.changes)
    if not keys:
        return SettingsPatchRead(changes=[], forced=False)
    forced: dict[str, Any] | None = None
    if wants_live_trading(current, new):
        days = await run_in_threadpool(
            lambda: check_live_trading(session, new, force=patch.force, reason=patch.reason)
        )
        if days < new.PAPER_TRADING_DAYS_REQUIRED:
            forced = {
                "reason": patch.reason,
                "paper_days": days,
                "required_days": new.PAPER_TRADING_DAYS_REQUIRED,
                "changes": sorted(keys),
            }
    running = control is not None and control.view() is not None
    applied = {
        key: ("stored" if not running else "live" if key in LIVE else "restart") for key in keys
    }
    at = datetime.now(UTC)
    sessions = request.app.state.sessions

    def write(audit_changes: bool) -> None:
        # A fresh unit of work: the request's session holds a read snapshot that SQLite may
        # refuse to upgrade to a write once the trading loop has committed since.
        with session_scope(sessions) as own:
            persist(
                own,
                old=current,
                new=new,
                keys=keys,
                applied=applied,
                actor=actor,
                at=at,
                forced=forced,
                audit_changes=audit_changes,
            )

    # A running kernel audits the changes when it applies them (at its market time, once).
    await run_in_threadpool(write, not running)
    if running:
        command = Command(
            kind=CommandKind.SETTINGS,
            by=actor,
            args={
                "changes": {k: jsonable(getattr(new, k)) for k in keys},
                "applied": applied,
            },
        )
        try:
            await send(control, command, "a settings change")
        except BotNotRunning:
            # Gone meanwhile: stored, and a kernel started later reads the overrides.
            applied = dict.fromkeys(keys, "stored")

            def audit() -> None:
                with session_scope(sessions) as own:
                    audits = AuditRepository(own)
                    for key in keys:
                        audits.add(setting_changed(key, current, new, "stored", actor=actor, at=at))

            await run_in_threadpool(audit)
    request.app.state.settings = new
    return SettingsPatchRead(
        changes=[
            SettingChangeRead(
                key=k,
                old=jsonable(getattr(current, k)),
                new=jsonable(getattr(new, k)),
                applied=applied[k],
            )
            for k in keys
        ],
        forced=forced is not None,
    )


@router.patch(
    "/settings",
    response_model=SettingsPatchRead,
    responses={409: {"model": ErrorBody}},
)
async def patch_settings(
    body: SettingsPatch,
    request: Request,
    control: ControlDep,
    session: SessionDep,
    actor: TradeActor,
) -> SettingsPatchRead:
    """Change settings: validated as a whole (422 names the setting), stored as overrides,
    audited with old and new value and who, applied to the running bot where possible. Live
    trading is refused (409) before PAPER_TRADING_DAYS_REQUIRED days of paper trading unless
    `force` is set with a `reason`."""
    return await change_settings(request, control, session, actor, body)

"""Settings: read them, change them at runtime (validated, persisted, audited, applied live)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from upstox_bot.api.auth import TradeActor
from upstox_bot.api.deps import BotDep, SessionDep, SettingsDep
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
    CHANGEABLE,
    LIVE,
    apply_live,
    changed_keys,
    check_live_trading,
    persist,
    public_values,
    validate_changes,
    wants_live_trading,
)
from upstox_bot.config import Settings
from upstox_bot.db.base import jsonable
from upstox_bot.db.repositories.settings_overrides import SettingsOverrideRepository
from upstox_bot.db.session import session_scope

if TYPE_CHECKING:
    from upstox_bot.runtime.embedded import EmbeddedBot

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
    bot: EmbeddedBot | None,
    session: Session,
    actor: str,
    patch: SettingsPatch,
) -> SettingsPatchRead:
    """Validate, persist, audit and apply a settings change (runs its writes in a thread and
    the live part on the event loop, where the engine runs)."""
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
    applied = {
        key: ("stored" if bot is None else "live" if key in LIVE else "restart") for key in keys
    }
    at = datetime.now(UTC)

    def write() -> None:
        # A fresh unit of work: the request's session holds a read snapshot that SQLite may
        # refuse to upgrade to a write once the trading loop has committed since.
        with session_scope(request.app.state.sessions) as own:
            persist(
                own,
                old=current,
                new=new,
                keys=keys,
                applied=applied,
                actor=actor,
                at=at,
                forced=forced,
            )

    await run_in_threadpool(write)
    if bot is not None:
        apply_live(bot, new, [k for k in keys if applied[k] == "live"])
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
    body: SettingsPatch, request: Request, bot: BotDep, session: SessionDep, actor: TradeActor
) -> SettingsPatchRead:
    """Change settings: validated as a whole (422 names the setting), stored as overrides,
    audited with old and new value and who, applied to the running bot where possible. Live
    trading is refused (409) before PAPER_TRADING_DAYS_REQUIRED days of paper trading unless
    `force` is set with a `reason`."""
    return await change_settings(request, bot, session, actor, body)

"""Authentication state: the Upstox connection and the calling API key."""

from __future__ import annotations

from fastapi import APIRouter

from upstox_bot.api.auth import ReadKey
from upstox_bot.api.deps import SettingsDep
from upstox_bot.api.routing import GuardedRoute
from upstox_bot.api.schemas.common import ERRORS
from upstox_bot.api.schemas.control import ApiKeyRead, AuthStatusRead, UpstoxAuthRead

router = APIRouter(tags=["auth"], responses=ERRORS, route_class=GuardedRoute)


@router.get("/auth/status", response_model=AuthStatusRead)
def auth_status(settings: SettingsDep, key: ReadKey) -> AuthStatusRead:
    """Whether the bot can reach Upstox (key configured, access token present) and which API
    key is calling. The token itself is never shown."""
    return AuthStatusRead(
        upstox=UpstoxAuthRead(
            market=settings.MARKET.value,
            api_key_configured=bool(settings.UPSTOX_API_KEY),
            access_token_present=settings.UPSTOX_ACCESS_TOKEN is not None,
            paper_trading=settings.PAPER_TRADING,
        ),
        api_key=ApiKeyRead(
            id=key.id,
            name=key.name,
            prefix=key.prefix,
            scope=key.scope.value,
            created_at=key.created_at,
            last_used_at=key.last_used_at,
        ),
    )

"""Dependencies of the routes: settings, a database session per request, the running bot."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from upstox_bot.config import Settings

if TYPE_CHECKING:
    from upstox_bot.runtime.embedded import EmbeddedBot


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """A session for one request: committed after the route, rolled back if it raised."""
    factory: sessionmaker[Session] = request.app.state.sessions
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def get_bot(request: Request) -> EmbeddedBot | None:
    bot: EmbeddedBot | None = request.app.state.bot
    return bot


def get_account(request: Request) -> str:
    settings: Settings = request.app.state.settings
    return settings.ACCOUNT_NAME


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session)]
BotDep = Annotated["EmbeddedBot | None", Depends(get_bot)]
AccountDep = Annotated[str, Depends(get_account)]

"""Dependencies of the routes: settings, a database session per request, the control port."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from upstox_bot.config import Settings

if TYPE_CHECKING:
    from upstox_bot.runtime.control import ControlPort, KernelView


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


def get_control(request: Request) -> ControlPort | None:
    """Where controls go (None: this API runs without any trading kernel to reach)."""
    control: ControlPort | None = request.app.state.control
    return control


def get_view(request: Request) -> KernelView | None:
    """The running kernel's last committed state, or None when none runs."""
    control: ControlPort | None = request.app.state.control
    return control.view() if control is not None else None


def get_account(request: Request) -> str:
    settings: Settings = request.app.state.settings
    return settings.ACCOUNT_NAME


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session)]
ControlDep = Annotated["ControlPort | None", Depends(get_control)]
ViewDep = Annotated["KernelView | None", Depends(get_view)]
AccountDep = Annotated[str, Depends(get_account)]

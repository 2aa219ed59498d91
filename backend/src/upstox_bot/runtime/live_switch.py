"""The paper-trading period, enforced when the bot starts, whatever set the live switches.

Live trading needs PAPER_TRADING=false and LIVE_TRADING_ENABLED=true. The API refuses to set
them before PAPER_TRADING_DAYS_REQUIRED days of paper history unless forced with a reason; the
same rule holds here, at start-up, for switches set in the environment or in ``.env`` (which
never pass through the API): the bot refuses to start live without the paper history, unless a
reason is given (``upstox-bot run --force-live "..."`` or LIVE_TRADING_FORCE_REASON), and a
forced start is written to the audit log (``live.forced``, which also raises an alert).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from upstox_bot.config import Settings
from upstox_bot.db.repositories.accounts import AccountRepository
from upstox_bot.db.session import session_scope
from upstox_bot.errors import ConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveStart:
    """How live trading was allowed to start."""

    paper_days: int
    required_days: int
    forced_reason: str | None  # set when the paper period was not complete

    def audit_data(self) -> dict[str, object]:
        return {
            "paper_days": self.paper_days,
            "required_days": self.required_days,
            "reason": self.forced_reason,
        }


def check_live_start(
    settings: Settings, sessions: sessionmaker[Session], *, force_reason: str | None = None
) -> LiveStart | None:
    """Whether the bot may start with the live switches it has (None: it trades paper).

    Args:
        force_reason: why to start live before the paper period is over (the command line's);
            LIVE_TRADING_FORCE_REASON is used when it is not given.

    Raises:
        ConfigError: live switches set, too little paper history, and no reason given.
    """
    if not settings.live_trading:
        return None
    reason = (force_reason or settings.LIVE_TRADING_FORCE_REASON or "").strip() or None
    with session_scope(sessions) as session:
        days = AccountRepository(session).paper_days(settings.ACCOUNT_NAME)
    required = settings.PAPER_TRADING_DAYS_REQUIRED
    if days >= required:
        return LiveStart(paper_days=days, required_days=required, forced_reason=None)
    if reason is None:
        raise ConfigError(
            f"live trading (PAPER_TRADING=false, LIVE_TRADING_ENABLED=true) needs "
            f"{required} days of paper trading; account {settings.ACCOUNT_NAME!r} has {days}. "
            "Keep paper trading, or start with --force-live REASON (or set "
            "LIVE_TRADING_FORCE_REASON): the reason is written to the audit log"
        )
    return LiveStart(paper_days=days, required_days=required, forced_reason=reason)

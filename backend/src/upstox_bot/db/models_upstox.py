"""Tables of the Upstox adapter: the daily login's encrypted tokens and its pending states, and
the NSE calendar days fetched from Upstox's market-holidays API."""

from __future__ import annotations

from datetime import date, datetime, time

from sqlalchemy import Boolean, Date, Index, String, Text, Time
from sqlalchemy.orm import Mapped, mapped_column

from upstox_bot.db.base import Base, BigId, UtcDateTime

KEY = 64


class UpstoxTokenRow(Base):
    """One Upstox access token from a login, encrypted (Fernet, TOKEN_ENCRYPTION_KEY).

    Rows are kept as a login history; the newest row that is neither expired nor revoked is the
    token in use. The plain token is never stored.
    """

    __tablename__ = "upstox_tokens"
    __table_args__ = (Index(None, "issued_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(KEY))
    ciphertext: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_reason: Mapped[str | None] = mapped_column(Text)


class UpstoxLoginStateRow(Base):
    """One pending OAuth ``state`` of the daily login, shared by every API process.

    Only the SHA-256 of the state is kept: the state itself travels in the browser's URL and is
    the callback's only proof that this bot started the login. A row is deleted when the
    callback spends it, and expired rows are purged when a new login starts.
    """

    __tablename__ = "upstox_login_states"
    __table_args__ = (Index(None, "expires_at"),)

    state_sha256: Mapped[str] = mapped_column(String(KEY), primary_key=True)
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class MarketCalendarDayRow(Base):
    """One NSE holiday or special session fetched from Upstox (``GET /v2/market/holidays``).

    A fetch replaces every row of the years it lists, so a withdrawn holiday disappears; these
    rows win over the shipped holiday file for those years.
    """

    __tablename__ = "market_calendar_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # holiday or special
    name: Mapped[str] = mapped_column(Text)
    session_open: Mapped[time | None] = mapped_column(Time)  # IST; special sessions only
    session_close: Mapped[time | None] = mapped_column(Time)
    provisional: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(Text)
    fetched_at: Mapped[datetime] = mapped_column(UtcDateTime)

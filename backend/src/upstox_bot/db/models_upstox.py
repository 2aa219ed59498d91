"""Tables of the Upstox adapter: the daily login's encrypted tokens and its pending states."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String, Text
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

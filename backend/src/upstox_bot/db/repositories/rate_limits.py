"""The order-rate log: one row per order sent, read back to rebuild rate windows on restart."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from upstox_bot.db.models import RateLimitLogRow
from upstox_bot.db.repositories._writes import table_of
from upstox_bot.domain import datetime_to_ms

ORDER_KIND = "order"


class RateLimitLogRepository:
    """Appends to and reads the rate-limit log of one account."""

    def __init__(self, session: Session, account: str) -> None:
        self._session = session
        self._account = account

    def add(
        self,
        at: datetime,
        *,
        client_order_id: str | None = None,
        kind: str = ORDER_KIND,
        allowed: bool = True,
        reason: str = "",
    ) -> None:
        """Log one request of `kind` at `at` (allowed, or refused with a reason)."""
        self._session.execute(
            insert(table_of(RateLimitLogRow)),
            {
                "account": self._account,
                "at": at,
                "client_order_id": client_order_id,
                "kind": kind,
                "allowed": allowed,
                "reason": reason,
            },
        )

    def sent_ms_since(self, since: datetime, *, kind: str = ORDER_KIND) -> list[int]:
        """Epoch ms (UTC) of the allowed requests at or after `since`, oldest first.

        Feed it to `OrderRateLimiter.restore` after a restart.
        """
        rows = self._session.scalars(
            select(RateLimitLogRow.at)
            .where(
                RateLimitLogRow.account == self._account,
                RateLimitLogRow.kind == kind,
                RateLimitLogRow.allowed.is_(True),
                RateLimitLogRow.at >= since,
            )
            .order_by(RateLimitLogRow.at, RateLimitLogRow.id)
        )
        return [datetime_to_ms(at) for at in rows]

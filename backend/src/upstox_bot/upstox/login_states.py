"""Pending OAuth ``state`` values of the daily login, kept in the database.

The login route and its callback may run in different API processes (several workers behind one
port, or several containers): a state issued by one must be accepted by any other, once. The
table ``upstox_login_states`` holds the SHA-256 of each pending state with its expiry:

- :meth:`LoginStateStore.issue` makes a fresh unguessable state, stores its digest, and purges
  expired rows (and the oldest ones beyond :data:`MAX_PENDING_STATES`, so a flood of login starts
  cannot grow the table without bound);
- :meth:`LoginStateStore.consume` deletes the row of the state that came back and reports whether
  it was there and unexpired. The delete is one statement, so of two callbacks racing with the
  same state only one sees the row: a state is spent once across every process.

The database looks rows up by the digest, not by the state, and the digest found is compared with
``hmac.compare_digest``: the time a lookup takes says nothing about any pending state.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from upstox_bot.db.models_upstox import UpstoxLoginStateRow
from upstox_bot.upstox.auth import new_state

STATE_TTL = timedelta(minutes=10)
MAX_PENDING_STATES = 64

Row = UpstoxLoginStateRow


def state_digest(state: str) -> str:
    """The hex SHA-256 of a state, as stored."""
    return hashlib.sha256(state.encode("utf-8")).hexdigest()


class LoginStateStore:
    """Issue and spend login states in the caller's unit of work (flushes, never commits).

    Commit right after each call: the login route before it redirects (so the callback, in any
    process, can find the state), the callback before it exchanges the code (so a failed
    exchange does not put the state back).
    """

    def __init__(
        self, session: Session, *, ttl: timedelta = STATE_TTL, max_pending: int = MAX_PENDING_STATES
    ) -> None:
        self._session = session
        self._ttl = ttl
        self._max_pending = max_pending

    def issue(self, now: datetime) -> str:
        """A new state, valid until ``now + ttl`` (aware UTC time)."""
        session = self._session
        session.execute(delete(Row).where(Row.expires_at <= now))
        pending = session.scalar(select(func.count()).select_from(Row)) or 0
        if pending >= self._max_pending:
            oldest = (
                select(Row.state_sha256)
                .order_by(Row.issued_at, Row.state_sha256)
                .limit(pending - self._max_pending + 1)
            )
            session.execute(delete(Row).where(Row.state_sha256.in_(oldest.scalar_subquery())))
        state = new_state()
        session.add(
            Row(state_sha256=state_digest(state), issued_at=now, expires_at=now + self._ttl)
        )
        session.flush()
        return state

    def consume(self, state: str | None, now: datetime) -> bool:
        """Spend ``state``: True once for a pending state that has not expired.

        The row goes whether or not it had expired: an expired state is refused for good.
        """
        if not state:
            return False
        digest = state_digest(state)
        spent = self._session.execute(
            delete(Row)
            .where(Row.state_sha256 == digest)
            .returning(Row.state_sha256, Row.expires_at)
        ).first()
        if spent is None:
            return False
        found, expires_at = spent
        return hmac.compare_digest(found, digest) and expires_at > now

    def pending(self) -> int:
        """How many states are stored (expired ones included until the next issue)."""
        return self._session.scalar(select(func.count()).select_from(Row)) or 0

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

A login is bound to the browser that started it, and only someone who may start one can:

- a one-time *login link* (``upstox-bot login``, or ``POST /api/v1/auth/upstox/login-link`` with
  a trade key) carries a ticket, kept here as a pending row of purpose ``ticket``;
- opening the link spends the ticket and gives the browser a random nonce in an HttpOnly cookie;
  the OAuth state sent to Upstox is :func:`bound_state` of that nonce;
- the callback is accepted only from the browser holding the nonce whose bound state came back.
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
STATE = "state"
TICKET = "ticket"

Row = UpstoxLoginStateRow


def state_digest(state: str, purpose: str = STATE) -> str:
    """The hex SHA-256 of a state (or of a ticket, kept apart by its purpose), as stored."""
    text = state if purpose == STATE else f"{purpose}:{state}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def bound_state(nonce: str) -> str:
    """The OAuth state of a login whose browser holds `nonce` (one-way: the state, seen by
    Upstox and in the browser's history, does not give the nonce away)."""
    return hashlib.sha256(f"upstox-bot login state:{nonce}".encode()).hexdigest()


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

    def issue(self, now: datetime, *, state: str | None = None, purpose: str = STATE) -> str:
        """Store a pending state (a fresh one unless `state` is given) or, with
        ``purpose=TICKET``, a login link's ticket; valid until ``now + ttl`` (aware UTC)."""
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
        state = state or new_state()
        session.add(
            Row(
                state_sha256=state_digest(state, purpose),
                issued_at=now,
                expires_at=now + self._ttl,
            )
        )
        session.flush()
        return state

    def consume(self, state: str | None, now: datetime, *, purpose: str = STATE) -> bool:
        """Spend ``state`` (or a ticket): True once for one pending that has not expired.

        The row goes whether or not it had expired: an expired state is refused for good.
        """
        if not state:
            return False
        digest = state_digest(state, purpose)
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

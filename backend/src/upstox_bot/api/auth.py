"""API-key authentication: the X-API-Key header (the WebSocket's first message) and scopes.

A read key may call every GET and the live stream; a trade key may also change state (kill
switch, settings, strategies, closing positions, manual trades). Keys are stored hashed
(db/repositories/api_keys.py); a revoked key stops working on its next request, and its open
live streams are closed within two seconds (api/ws.py).

`AuthenticationMiddleware` (api/middleware.py) authenticates every protected request before it
is routed, so no body is read for a caller without a valid key; `FailedAuthLimiter` answers 429
to a client after too many failed attempts. The routes read the key it found.
"""

from __future__ import annotations

import logging
import math
import threading
import time as walltime
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from upstox_bot.api.deps import SessionDep
from upstox_bot.api.errors import Forbidden, TooManyFailures, Unauthenticated
from upstox_bot.config import Settings
from upstox_bot.db import migrate
from upstox_bot.db.models import ApiKeyScope
from upstox_bot.db.repositories.api_keys import ApiKeyRecord, ApiKeyRepository, hash_key
from upstox_bot.db.session import make_engine, make_session_factory, session_scope

HEADER = "X-API-Key"
STATE_KEY = "api_key"  # where the middleware leaves the caller's key record (request.state)
log = logging.getLogger(__name__)

LAST_USED_EVERY_S = 60.0  # write last_used_at at most this often per key
LOCAL_KEY_NAME = "local"

api_key_header = APIKeyHeader(
    name=HEADER, auto_error=False, description="An API key from `upstox-bot apikey create`."
)


class _LastUsed:
    """When each key's last use was written, so that a busy key is not written per request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._written: dict[tuple[str, int], float] = {}

    def due(self, key: tuple[str, int]) -> bool:
        """Whether the last use of `key` (its database and id) is to be written now."""
        now = walltime.monotonic()
        with self._lock:
            last = self._written.get(key)
            if last is not None and now - last < LAST_USED_EVERY_S:
                return False
            self._written[key] = now
            return True


_last_used = _LastUsed()


def check_key(
    session: Session, key: str | None, sessions: sessionmaker[Session] | None = None
) -> ApiKeyRecord:
    """The active key record for `key`; its last use is recorded at most once a minute.

    The last use is written in its own short unit of work (from `sessions`, else in
    `session`): a request must never hold SQLite's write lock while its route runs, or the
    trading loop, which writes on the same event loop, would wait for it.

    Raises:
        Unauthenticated: no key, an unknown key or a revoked key.
    """
    if not key:
        raise Unauthenticated(f"send an API key in the {HEADER} header")
    repo = ApiKeyRepository(session)
    record = repo.find_by_hash(hash_key(key))
    if record is None:
        raise Unauthenticated("unknown API key")
    if not record.active:
        raise Unauthenticated("this API key was revoked")
    # Per database too: two databases (an API over each, or tests) have keys with the same ids.
    if _last_used.due((str(session.get_bind().engine.url), record.id)):
        if sessions is None:
            repo.authenticate(key, datetime.now(UTC))
            return record
        try:
            with session_scope(sessions) as own:
                ApiKeyRepository(own).authenticate(key, datetime.now(UTC))
        except OperationalError:
            # The last use is bookkeeping: a database busy with the trading loop's writes
            # must not refuse a request whose key was checked (it is written a minute on).
            log.warning("apikey.last_used.skipped", extra={"key_id": record.id})
    return record


def authenticated_key(request: Request) -> ApiKeyRecord | None:
    """The key the authentication middleware found for this request (None if it did not run)."""
    record: ApiKeyRecord | None = getattr(request.state, STATE_KEY, None)
    return record


def current_key(
    request: Request, session: SessionDep, key: Annotated[str | None, Depends(api_key_header)]
) -> ApiKeyRecord:
    """The calling key (read scope is enough)."""
    found = authenticated_key(request)
    if found is not None:
        return found
    return check_key(session, key, request.app.state.sessions)


def require_trade(key: Annotated[ApiKeyRecord, Depends(current_key)]) -> ApiKeyRecord:
    """The calling key, which must have the trade scope.

    Raises:
        Forbidden: a read-scope key.
    """
    if key.scope is not ApiKeyScope.TRADE:
        raise Forbidden(f"key {key.prefix}... has the read scope; this needs a trade-scope key")
    return key


def actor_of(key: ApiKeyRecord) -> str:
    """How a key is named in the audit log: `apikey:<name>#<id>`."""
    return f"apikey:{key.name}#{key.id}"


def _trade_actor(key: Annotated[ApiKeyRecord, Depends(require_trade)]) -> str:
    return actor_of(key)


ReadKey = Annotated[ApiKeyRecord, Depends(current_key)]
TradeActor = Annotated[str, Depends(_trade_actor)]


def key_in_own_session(sessions: sessionmaker[Session], key: str | None) -> ApiKeyRecord:
    """Authenticate a key in its own short unit of work (a handshake, the middleware).

    Raises:
        Unauthenticated: no key, an unknown key or a revoked key.
    """
    with session_scope(sessions) as session:
        return check_key(session, key, sessions)


def active_key_ids(sessions: sessionmaker[Session], ids: set[int]) -> set[int]:
    """Those of `ids` whose key is still active (not revoked, not deleted)."""
    with session_scope(sessions) as session:
        return ApiKeyRepository(session).active_ids(ids)


class FailedAuthLimiter:
    """Counts failed authentications (unknown or revoked keys) per client in a sliding window.

    A client with `limit` failures inside the last `window_s` seconds is refused (429) without
    its key being looked up, until its oldest failure leaves the window. Successful requests
    are never counted. At most `max_clients` clients are remembered (the least recent go first).
    """

    def __init__(
        self,
        limit: int,
        window_s: float,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = walltime.monotonic,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_clients = max_clients
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self.refused = 0

    def _recent(self, client: str, now: float) -> deque[float] | None:
        failures = self._failures.get(client)
        if failures is None:
            return None
        while failures and now - failures[0] >= self.window_s:
            failures.popleft()
        if not failures:
            del self._failures[client]
            return None
        return failures

    def check(self, client: str) -> None:
        """Refuse a client that is over its limit.

        Raises:
            TooManyFailures: with the seconds until it may try again.
        """
        now = self._clock()
        with self._lock:
            failures = self._recent(client, now)
            if failures is None or len(failures) < self.limit:
                return
            wait = failures[len(failures) - self.limit] + self.window_s - now
            self.refused += 1
        raise TooManyFailures(max(1, math.ceil(wait)))

    def failed(self, client: str) -> None:
        """Count one failed authentication of `client`."""
        now = self._clock()
        with self._lock:
            failures = self._recent(client, now) or deque()
            failures.append(now)
            while len(failures) > self.limit:
                failures.popleft()
            self._failures[client] = failures
            self._failures.move_to_end(client)
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)


def ensure_local_key(settings: Settings) -> str | None:
    """On the very first start (no API key ever created), create a trade-scope key "local".

    The database is migrated first. Only the key's hash is stored; the key itself is returned
    so the caller can show it once.

    Returns:
        The new key, or None when keys already exist (none is created then).
    """
    settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            repo = ApiKeyRepository(session)
            if repo.find():
                return None
            _record, key = repo.create(LOCAL_KEY_NAME, ApiKeyScope.TRADE, datetime.now(UTC))
            return key
    finally:
        engine.dispose()

"""Where the bot's Upstox access token lives, whether it is usable, and what happens when not.

Two sources, in this order:

1. the daily login through ``/api/v1/auth/upstox/login`` (or ``upstox-bot login``): the token is
   stored encrypted in the ``upstox_tokens`` table with its expiry (03:30 IST after issue, or the
   JWT's ``exp``); the newest stored token that is neither expired nor revoked wins;
2. ``UPSTOX_ACCESS_TOKEN`` from the environment, used when no stored login is usable. Its expiry
   is its JWT ``exp`` when readable, else 03:30 IST after the process read it.

A login through the bot therefore takes effect at once, without editing ``.env`` or restarting;
and when Upstox refuses the stored token (HTTP 401, e.g. because a newer token was generated on
the Upstox site and put in ``.env``), :meth:`TokenStore.mark_rejected` revokes it and the
environment token takes over.

:class:`TokenGuard` is what the trading loop asks: ``entries_allowed(now)`` is False while the
token is expired, revoked or missing (exits are not blocked by it; they fail and are retried by
the engine until a new login). The first time the token becomes unusable (or starts expiring) it
logs and raises an alert (``token_expired`` / ``token_expiring``) through the alert dispatcher of
``upstox_bot.monitoring.alerts`` when one is given. It never raises.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol

from pydantic import SecretStr
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from upstox_bot.config import Settings
from upstox_bot.db.models_upstox import UpstoxTokenRow
from upstox_bot.db.session import session_scope
from upstox_bot.errors import ConfigError
from upstox_bot.monitoring.alerts.model import AlertKind
from upstox_bot.upstox.auth import TokenGrant, jwt_expiry, token_expiry
from upstox_bot.upstox.tokens import StoredToken, TokenCipher, TokenDecryptError

log = logging.getLogger(__name__)

DEFAULT_EXPIRING_WITHIN = timedelta(hours=1)


class TokenState(StrEnum):
    """Whether the bot can trade with its Upstox token now."""

    VALID = "valid"
    EXPIRING = "expiring"  # usable, dies within the warning window (log in again soon)
    EXPIRED = "expired"  # past its expiry, or refused by Upstox (revoked): log in again
    MISSING = "missing"  # no token at all (or it cannot be decrypted)

    @property
    def usable(self) -> bool:
        return self in (TokenState.VALID, TokenState.EXPIRING)


class TokenSource(StrEnum):
    LOGIN = "login"  # stored by the login callback
    ENVIRONMENT = "environment"  # UPSTOX_ACCESS_TOKEN


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenStatus:
    """The token in use (or why there is none). Holds no secret."""

    state: TokenState
    source: TokenSource | None = None
    expires_at: datetime | None = None
    user_id: str = ""
    reason: str = ""

    @property
    def entries_allowed(self) -> bool:
        """New entries may be placed only with a usable token."""
        return self.state.usable


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRecord:
    """One stored login (without its ciphertext)."""

    id: int
    user_id: str
    issued_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_reason: str | None


def _record(row: UpstoxTokenRow) -> TokenRecord:
    return TokenRecord(
        id=row.id,
        user_id=row.user_id,
        issued_at=row.issued_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        revoked_reason=row.revoked_reason,
    )


class UpstoxTokenRepository:
    """The ``upstox_tokens`` table. Flushes, never commits."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, token: StoredToken, *, issued_at: datetime) -> TokenRecord:
        """Store an encrypted token; returns its record."""
        row = UpstoxTokenRow(
            user_id=token.user_id,
            ciphertext=token.ciphertext,
            issued_at=issued_at,
            expires_at=token.expires_at,
            revoked_at=None,
            revoked_reason=None,
        )
        self._session.add(row)
        self._session.flush()
        return _record(row)

    def latest(self) -> TokenRecord | None:
        """The newest stored login, usable or not."""
        row = self._latest_row(None)
        return _record(row) if row is not None else None

    def current(self, now: datetime) -> tuple[TokenRecord, StoredToken] | None:
        """The newest login that is neither expired nor revoked at ``now``, with its ciphertext."""
        row = self._latest_row(now)
        if row is None:
            return None
        stored = StoredToken(
            ciphertext=row.ciphertext, expires_at=row.expires_at, user_id=row.user_id
        )
        return _record(row), stored

    def revoke(self, token_id: int, *, at: datetime, reason: str) -> None:
        """Mark one stored login revoked (Upstox refused it)."""
        self._session.execute(
            update(UpstoxTokenRow)
            .where(UpstoxTokenRow.id == token_id, UpstoxTokenRow.revoked_at.is_(None))
            .values(revoked_at=at, revoked_reason=reason)
            .execution_options(synchronize_session=False)
        )

    def _latest_row(self, now: datetime | None) -> UpstoxTokenRow | None:
        stmt = select(UpstoxTokenRow)
        if now is not None:
            stmt = stmt.where(UpstoxTokenRow.revoked_at.is_(None), UpstoxTokenRow.expires_at > now)
        stmt = stmt.order_by(UpstoxTokenRow.issued_at.desc(), UpstoxTokenRow.id.desc()).limit(1)
        return self._session.scalar(stmt.execution_options(populate_existing=True))


def require_cipher(key: SecretStr | None) -> TokenCipher:
    """The cipher for ``TOKEN_ENCRYPTION_KEY``.

    Raises:
        ConfigError: the key is not set (the bot refuses to store a token in clear) or too weak.
    """
    if key is None or not key.get_secret_value().strip():
        raise ConfigError(
            "TOKEN_ENCRYPTION_KEY is not set: the bot stores Upstox tokens only encrypted. "
            "Generate one with: python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())' and put it in .env"
        )
    return TokenCipher(key)


def store_grant(session: Session, cipher: TokenCipher, grant: TokenGrant) -> TokenRecord:
    """Encrypt and store the token of a successful login (in the caller's transaction)."""
    stored = StoredToken.seal(
        cipher, grant.access_token, expires_at=grant.expires_at, user_id=grant.user_id
    )
    return UpstoxTokenRepository(session).add(stored, issued_at=grant.issued_at)


class TokenStore:
    """The access token to use, from the stored logins or the environment (module doc).

    Args:
        sessions: session factory of the bot's database.
        encryption_key: ``TOKEN_ENCRYPTION_KEY``; without it stored logins cannot be read.
        env_token: ``UPSTOX_ACCESS_TOKEN``.
        loaded_at: when the environment was read (expiry of a non-JWT environment token).
        expiring_within: a usable token this close to its expiry is reported ``expiring``.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        encryption_key: SecretStr | None,
        env_token: SecretStr | None,
        loaded_at: datetime,
        expiring_within: timedelta = DEFAULT_EXPIRING_WITHIN,
    ) -> None:
        self._sessions = sessions
        self._cipher: TokenCipher | None = None
        self._cipher_error: str | None = None
        try:
            self._cipher = require_cipher(encryption_key)
        except ConfigError as exc:
            self._cipher_error = str(exc)
        plain = env_token.get_secret_value().strip() if env_token is not None else ""
        self._env_token = SecretStr(plain) if plain else None
        self._env_expires_at = (jwt_expiry(plain) or token_expiry(loaded_at)) if plain else None
        self._env_rejected: str | None = None
        self._expiring_within = expiring_within
        self._in_use: tuple[TokenSource, int | None] | None = None

    def __repr__(self) -> str:
        return f"TokenStore(env_token={'set' if self._env_token else 'unset'})"

    @property
    def cipher(self) -> TokenCipher:
        """The cipher for new logins.

        Raises:
            ConfigError: TOKEN_ENCRYPTION_KEY is not set.
        """
        if self._cipher is None:
            raise ConfigError(self._cipher_error or "TOKEN_ENCRYPTION_KEY is not set")
        return self._cipher

    def save_grant(self, grant: TokenGrant) -> TokenRecord:
        """Store a login's token in its own unit of work.

        Raises:
            ConfigError: TOKEN_ENCRYPTION_KEY is not set.
        """
        cipher = self.cipher
        with session_scope(self._sessions) as session:
            record = store_grant(session, cipher, grant)
        self._in_use = None
        return record

    def resolve(self, now: datetime) -> tuple[TokenStatus, SecretStr | None]:
        """The status and the token to use at ``now`` (None when not usable)."""
        stored_problem = ""
        with session_scope(self._sessions) as session:
            current = UpstoxTokenRepository(session).current(now)
            latest = UpstoxTokenRepository(session).latest() if current is None else None
        if current is not None:
            record, stored = current
            if self._cipher is None:
                stored_problem = self._cipher_error or "TOKEN_ENCRYPTION_KEY is not set"
            else:
                try:
                    token = stored.reveal(self._cipher, now=now)
                except TokenDecryptError:
                    stored_problem = (
                        "the stored Upstox token cannot be decrypted (TOKEN_ENCRYPTION_KEY "
                        "changed?): log in again"
                    )
                else:
                    self._in_use = (TokenSource.LOGIN, record.id)
                    status = self._usable(now, TokenSource.LOGIN, record.expires_at, record.user_id)
                    return status, token
        env_token, env_expires_at = self._env_token, self._env_expires_at
        if (
            env_token is not None
            and env_expires_at is not None
            and self._env_rejected is None
            and now < env_expires_at
        ):
            self._in_use = (TokenSource.ENVIRONMENT, None)
            status = self._usable(now, TokenSource.ENVIRONMENT, env_expires_at, "")
            return status, env_token
        self._in_use = None
        return self._unusable(now, latest, stored_problem), None

    def status(self, now: datetime) -> TokenStatus:
        """The status of the token the bot would use at ``now``."""
        return self.resolve(now)[0]

    def token_state(self, now: datetime) -> TokenState:
        """``valid``, ``expiring``, ``expired`` or ``missing`` at ``now``."""
        return self.status(now).state

    def access_token(self, now: datetime) -> SecretStr | None:
        """The token to send, or None when there is no usable one."""
        return self.resolve(now)[1]

    def mark_rejected(self, now: datetime, reason: str, *, token: str | None = None) -> None:
        """Upstox refused the token last handed out (401): stop using it.

        A stored login is marked revoked; the environment token is dropped for this process.
        With ``token`` (the one refused), nothing is revoked when it is no longer the token in
        use: a login made meanwhile is never thrown away for its predecessor's refusal.
        """
        if self._in_use is None or token is not None:
            current = self.resolve(now)[1]
            if token is not None and (current is None or current.get_secret_value() != token):
                log.info("upstox.token.refusal_of_old_token")
                return
        in_use = self._in_use
        if in_use is None:
            return
        source, token_id = in_use
        if source is TokenSource.ENVIRONMENT:
            self._env_rejected = reason
        elif token_id is not None:
            with session_scope(self._sessions) as session:
                UpstoxTokenRepository(session).revoke(token_id, at=now, reason=reason)
        self._in_use = None
        log.error("upstox.token.rejected", extra={"source": source.value, "reason": reason})

    def _usable(
        self, now: datetime, source: TokenSource, expires_at: datetime, user_id: str
    ) -> TokenStatus:
        expiring = expires_at - now <= self._expiring_within
        return TokenStatus(
            state=TokenState.EXPIRING if expiring else TokenState.VALID,
            source=source,
            expires_at=expires_at,
            user_id=user_id,
            reason="expires soon: log in again" if expiring else "",
        )

    def _unusable(
        self, now: datetime, latest: TokenRecord | None, stored_problem: str
    ) -> TokenStatus:
        if stored_problem:
            return TokenStatus(
                state=TokenState.MISSING, source=TokenSource.LOGIN, reason=stored_problem
            )
        if self._env_token is not None and self._env_rejected is not None:
            return TokenStatus(
                state=TokenState.EXPIRED,
                source=TokenSource.ENVIRONMENT,
                expires_at=self._env_expires_at,
                reason=f"Upstox refused UPSTOX_ACCESS_TOKEN ({self._env_rejected}): log in again",
            )
        if latest is not None and latest.revoked_at is not None and latest.expires_at > now:
            return TokenStatus(
                state=TokenState.EXPIRED,
                source=TokenSource.LOGIN,
                expires_at=latest.expires_at,
                user_id=latest.user_id,
                reason=f"Upstox refused the token ({latest.revoked_reason}): log in again",
            )
        candidates = [latest.expires_at] if latest is not None else []
        if self._env_expires_at is not None:
            candidates.append(self._env_expires_at)
        if candidates:
            expired_at = max(candidates)
            return TokenStatus(
                state=TokenState.EXPIRED,
                source=TokenSource.LOGIN if latest is not None else TokenSource.ENVIRONMENT,
                expires_at=expired_at,
                user_id=latest.user_id if latest is not None else "",
                reason=f"the Upstox token expired at {expired_at.isoformat()}: log in again",
            )
        return TokenStatus(
            state=TokenState.MISSING,
            reason="no Upstox token: log in at /api/v1/auth/upstox/login or set "
            "UPSTOX_ACCESS_TOKEN",
        )


class AlertSink(Protocol):
    """What the guard needs of ``monitoring.alerts.AlertDispatcher``: a non-blocking notify."""

    def notify(self, kind: AlertKind, message: str, *, key: str | None = None) -> None: ...


class TokenGuard:
    """Answers "may the bot open new positions?" from the token's state, and raises alerts.

    Safe to call on every tick: the store is read at most every ``check_every``. Never raises:
    if the database cannot be read the last known status stands (or ``missing`` at first).

    Args:
        store: the token store.
        alerts: the alert dispatcher (``monitoring.alerts``); None only logs.
        check_every: how long a status is reused.
    """

    def __init__(
        self,
        store: TokenStore,
        *,
        alerts: AlertSink | None = None,
        check_every: timedelta = timedelta(seconds=5),
    ) -> None:
        self._store = store
        self._alerts = alerts
        self._check_every = check_every
        self._status: TokenStatus | None = None
        self._checked_at: datetime | None = None
        self._alerted: tuple[TokenState, datetime | None] | None = None

    def check(self, now: datetime) -> TokenStatus:
        """The current status (refreshed when stale); alerts on a change to unusable."""
        fresh = (
            self._status is not None
            and self._checked_at is not None
            and timedelta(0) <= now - self._checked_at < self._check_every
        )
        if fresh and self._status is not None:
            return self._status
        try:
            status = self._store.status(now)
        except Exception:  # the guard reports; it must not crash the caller
            log.exception("upstox.token.status_failed")
            status = self._status or TokenStatus(
                state=TokenState.MISSING, reason="the token store could not be read"
            )
        self._status, self._checked_at = status, now
        self._on_status(status)
        return status

    def token_state(self, now: datetime) -> TokenState:
        """``valid``, ``expiring``, ``expired`` or ``missing`` (for health and readiness)."""
        return self.check(now).state

    def entries_allowed(self, now: datetime) -> bool:
        """False while the token is expired, revoked or missing: pause new entries."""
        return self.check(now).entries_allowed

    def report_rejected(self, now: datetime, reason: str, *, token: str | None = None) -> None:
        """Upstox answered 401 to the token: revoke it, re-check now and alert. ``token``: the
        refused one (a refusal of a token already replaced by a login is ignored)."""
        try:
            self._store.mark_rejected(now, reason, token=token)
        except Exception:
            log.exception("upstox.token.revoke_failed")
        self._checked_at = None
        self.check(now)

    def _on_status(self, status: TokenStatus) -> None:
        signature = (status.state, status.expires_at)
        if status.state is TokenState.VALID:
            if self._alerted is not None:
                log.info("upstox.token.restored", extra={"state": status.state.value})
            self._alerted = None
            return
        if self._alerted == signature:
            return
        self._alerted = signature
        if status.state is TokenState.EXPIRING:
            kind = AlertKind.TOKEN_EXPIRING
            message = f"Upstox token expires at {status.expires_at}: {status.reason}."
            log.warning("upstox.token.expiring", extra={"expires_at": str(status.expires_at)})
        else:
            kind = AlertKind.TOKEN_EXPIRED
            message = f"Upstox token {status.state.value}: {status.reason}. New entries are paused."
            log.error("upstox.token.unusable", extra={"state": status.state.value})
        if self._alerts is None:
            return
        try:
            self._alerts.notify(kind, message, key=f"{status.state.value}:{status.expires_at}")
        except Exception:  # an alert must never take the trading loop down
            log.exception("alert.failed", extra={"kind": kind.value})


def access_token_in(session: Session, settings: Settings, now: datetime) -> SecretStr | None:
    """The usable token at ``now`` read inside the caller's unit of work (login, else env)."""
    current = UpstoxTokenRepository(session).current(now)
    if current is not None and settings.TOKEN_ENCRYPTION_KEY is not None:
        try:
            return current[1].reveal(require_cipher(settings.TOKEN_ENCRYPTION_KEY), now=now)
        except (ConfigError, TokenDecryptError):
            log.warning("upstox.token.unreadable")
    env = settings.UPSTOX_ACCESS_TOKEN
    if env is None or not env.get_secret_value().strip():
        return None
    expires_at = jwt_expiry(env.get_secret_value().strip())
    return env if expires_at is None or now < expires_at else None


def token_store_from_settings(
    settings: Settings, sessions: sessionmaker[Session], *, now: datetime | None = None
) -> TokenStore:
    """The token store for these settings (TOKEN_ENCRYPTION_KEY, UPSTOX_ACCESS_TOKEN)."""
    return TokenStore(
        sessions,
        encryption_key=settings.TOKEN_ENCRYPTION_KEY,
        env_token=settings.UPSTOX_ACCESS_TOKEN,
        loaded_at=now or datetime.now(UTC),
    )

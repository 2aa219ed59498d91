"""API keys: only a SHA-256 hash of each key is stored; the key itself is shown once."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from upstox_bot.db.models import ApiKeyRow, ApiKeyScope
from upstox_bot.db.repositories._writes import execute_count
from upstox_bot.errors import NotFound

KEY_PREFIX = "ubk_"
SHOWN_PREFIX_CHARS = 12  # "ubk_" and 8 characters: enough to tell keys apart in a list


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKeyRecord:
    """A stored API key (without the key)."""

    id: int
    name: str
    prefix: str
    scope: ApiKeyScope
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def active(self) -> bool:
        """Whether the key still works (not revoked)."""
        return self.revoked_at is None


def hash_key(key: str) -> str:
    """The hex SHA-256 of an API key, as stored."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _record(row: ApiKeyRow) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        scope=ApiKeyScope(row.scope),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


class ApiKeyRepository:
    """Creates, lists, looks up and revokes API keys."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def create(self, name: str, scope: ApiKeyScope, at: datetime) -> tuple[ApiKeyRecord, str]:
        """Create a key; returns its record and the key itself (store it: it is not kept)."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKeyRow(
            name=name,
            prefix=key[:SHOWN_PREFIX_CHARS],
            hashed_key=hash_key(key),
            scope=scope.value,
            created_at=at,
            revoked_at=None,
            last_used_at=None,
        )
        self._session.add(row)
        self._session.flush()
        return _record(row), key

    def find(self, *, include_revoked: bool = True) -> list[ApiKeyRecord]:
        """Keys oldest first."""
        stmt = select(ApiKeyRow).order_by(ApiKeyRow.id)
        if not include_revoked:
            stmt = stmt.where(ApiKeyRow.revoked_at.is_(None))
        rows = self._session.scalars(stmt.execution_options(populate_existing=True))
        return [_record(row) for row in rows]

    def get(self, key_id: int) -> ApiKeyRecord:
        """The key with this id.

        Raises:
            NotFound: no such key.
        """
        row = self._session.scalar(
            select(ApiKeyRow)
            .where(ApiKeyRow.id == key_id)
            .execution_options(populate_existing=True)
        )
        if row is None:
            raise NotFound(f"API key {key_id} not found")
        return _record(row)

    def find_by_hash(self, hashed_key: str) -> ApiKeyRecord | None:
        """The key (revoked or not) with this hash, or None."""
        row = self._session.scalar(
            select(ApiKeyRow)
            .where(ApiKeyRow.hashed_key == hashed_key)
            .execution_options(populate_existing=True)
        )
        return _record(row) if row is not None else None

    def active_ids(self, ids: set[int]) -> set[int]:
        """Those of `ids` that name an existing key not revoked."""
        if not ids:
            return set()
        found = self._session.scalars(
            select(ApiKeyRow.id).where(ApiKeyRow.id.in_(ids), ApiKeyRow.revoked_at.is_(None))
        )
        return set(found)

    def authenticate(self, key: str, at: datetime) -> ApiKeyRecord | None:
        """The active key matching `key`, with its last use set to `at`; None if unknown or
        revoked.

        The write comes first in the unit of work: on SQLite in WAL mode a transaction that
        read before another connection committed cannot take the write lock (it fails at once,
        whatever the busy timeout), while one that starts with its write waits for the lock.
        """
        hashed = hash_key(key)
        self._session.execute(
            update(ApiKeyRow)
            .where(ApiKeyRow.hashed_key == hashed, ApiKeyRow.revoked_at.is_(None))
            .values(last_used_at=at)
            .execution_options(synchronize_session=False)
        )
        record = self.find_by_hash(hashed)
        return record if record is not None and record.active else None

    def revoke(self, key_id: int, at: datetime) -> ApiKeyRecord:
        """Revoke a key (revoking twice keeps the first time).

        Raises:
            NotFound: no such key.
        """
        execute_count(
            self._session,
            update(ApiKeyRow)
            .where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
            .values(revoked_at=at)
            .execution_options(synchronize_session=False),
        )
        return self.get(key_id)

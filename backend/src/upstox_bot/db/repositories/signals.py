"""Signals: row mapping and the read side (recent signals with their status)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from upstox_bot.db.base import jsonable
from upstox_bot.db.models import SignalRow
from upstox_bot.domain import (
    Signal,
    SignalId,
    SignalStatus,
    SignalType,
    datetime_to_ms,
    ms_to_datetime,
)
from upstox_bot.errors import NotFound


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalRecord:
    """A stored signal and what became of it."""

    signal: Signal
    status: SignalStatus


def signal_values(signal: Signal, status: SignalStatus, account: str) -> dict[str, Any]:
    """Column values of a signals row; non-finite indicator values are stored as null."""
    return {
        "signal_id": signal.signal_id,
        "account": account,
        "instrument_key": signal.instrument_key,
        "strategy": signal.strategy,
        "type": signal.type.value,
        "strength": signal.strength,
        "status": status.value,
        "reason": signal.reason,
        "price_paise": signal.price_paise,
        "candle_start_at": ms_to_datetime(signal.candle_start_ms),
        "indicators": jsonable(signal.indicators),
        "created_at": signal.created_at,
    }


def _indicators(stored: Mapping[str, Any]) -> dict[str, float]:
    return {key: math.nan if value is None else float(value) for key, value in stored.items()}


def signal_from_row(row: SignalRow) -> SignalRecord:
    """The domain signal stored in `row`, with its status (null indicators come back as NaN)."""
    signal = Signal(
        signal_id=SignalId(row.signal_id),
        instrument_key=row.instrument_key,
        strategy=row.strategy,
        type=SignalType(row.type),
        strength=row.strength,
        reason=row.reason,
        price_paise=row.price_paise,
        candle_start_ms=datetime_to_ms(row.candle_start_at),
        created_at=row.created_at,
        indicators=_indicators(row.indicators),
    )
    return SignalRecord(signal=signal, status=SignalStatus(row.status))


class SignalRepository:
    """Reads the signals of one account."""

    def __init__(self, session: Session, account: str) -> None:
        self._session = session
        self._account = account

    def get(self, signal_id: str) -> SignalRecord:
        """The signal with this id.

        Raises:
            NotFound: no signal of this account has that id.
        """
        row = self._session.scalar(
            select(SignalRow)
            .where(SignalRow.account == self._account, SignalRow.signal_id == signal_id)
            .execution_options(populate_existing=True)
        )
        if row is None:
            raise NotFound(f"signal {signal_id!r} not found")
        return signal_from_row(row)

    def recent(
        self,
        *,
        instrument_key: str | None = None,
        strategy: str | None = None,
        status: SignalStatus | None = None,
        signal_type: SignalType | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[SignalRecord]:
        """Signals newest first, filtered.

        Args:
            since: created at or after (aware). until: created before (aware).
            limit: at most this many; offset: skip this many (pagination).
        """
        stmt = select(SignalRow).where(SignalRow.account == self._account)
        if instrument_key is not None:
            stmt = stmt.where(SignalRow.instrument_key == instrument_key)
        if strategy is not None:
            stmt = stmt.where(SignalRow.strategy == strategy)
        if status is not None:
            stmt = stmt.where(SignalRow.status == status.value)
        if signal_type is not None:
            stmt = stmt.where(SignalRow.type == signal_type.value)
        if since is not None:
            stmt = stmt.where(SignalRow.created_at >= since)
        if until is not None:
            stmt = stmt.where(SignalRow.created_at < until)
        stmt = stmt.order_by(SignalRow.created_at.desc(), SignalRow.id.desc())
        rows = self._session.scalars(
            stmt.limit(limit).offset(offset).execution_options(populate_existing=True)
        )
        return [signal_from_row(row) for row in rows]

"""Strategy signals and what came of each: the risk refusal or the order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fastapi import APIRouter, Response
from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from upstox_bot.api.deps import AccountDep, SessionDep
from upstox_bot.api.queries import (
    TOTAL_DOC,
    TOTAL_HEADER,
    Filter,
    Limit,
    Offset,
    PathId,
    Since,
    Until,
    page,
    symbols_for,
)
from upstox_bot.api.routing import GuardedRoute
from upstox_bot.api.schemas.common import ERRORS, ErrorBody
from upstox_bot.api.schemas.trading import SignalRead
from upstox_bot.db.models import OrderRow, RiskDecisionRow, SignalRow
from upstox_bot.db.repositories.signals import SignalRecord, SignalRepository, signal_from_row
from upstox_bot.domain import (
    OrderStatus,
    RiskRule,
    SignalStatus,
    SignalType,
    ms_to_datetime,
    paise_to_rupees,
)

router = APIRouter(tags=["trading"], responses=ERRORS, route_class=GuardedRoute)


@dataclass(frozen=True, slots=True)
class SignalOutcome:
    """What came of a signal: the risk refusal, or the order it caused."""

    refusal_rule: RiskRule | None = None
    refusal_reason: str | None = None
    order_id: str | None = None
    order_status: OrderStatus | None = None


def signal_outcomes(
    session: Session, account: str, signal_ids: list[str]
) -> dict[str, SignalOutcome]:
    """The refusal (from the stored risk decision) or the entry order of each signal."""
    if not signal_ids:
        return {}
    refusals = {
        signal_id: (rule, reason)
        for signal_id, rule, reason in session.execute(
            select(RiskDecisionRow.signal_id, RiskDecisionRow.rule, RiskDecisionRow.reason)
            .where(
                RiskDecisionRow.account == account,
                RiskDecisionRow.signal_id.in_(signal_ids),
                RiskDecisionRow.approved.is_(False),
            )
            .order_by(RiskDecisionRow.id)
        )
    }
    orders = {
        signal_id: (order_id, status)
        for signal_id, order_id, status in session.execute(
            select(OrderRow.signal_id, OrderRow.client_order_id, OrderRow.status)
            .where(OrderRow.account == account, OrderRow.signal_id.in_(signal_ids))
            .order_by(OrderRow.id)
        )
    }
    out: dict[str, SignalOutcome] = {}
    for signal_id in signal_ids:
        refusal = refusals.get(signal_id)
        order = orders.get(signal_id)
        out[signal_id] = SignalOutcome(
            refusal_rule=RiskRule(refusal[0]) if refusal and refusal[0] else None,
            refusal_reason=refusal[1] if refusal else None,
            order_id=order[0] if order else None,
            order_status=OrderStatus(order[1]) if order else None,
        )
    return out


def _outcome_text(record: SignalRecord, outcome: SignalOutcome) -> str:
    status = record.status
    if outcome.order_id is not None and outcome.order_status is not None:
        return f"entry order {outcome.order_status.value}"
    if status is SignalStatus.REJECTED:
        rule = outcome.refusal_rule.value if outcome.refusal_rule else "risk"
        return f"refused by {rule}: {outcome.refusal_reason or 'see the audit log'}"
    if status is SignalStatus.IGNORED:
        if record.signal.type.is_entry:
            return "ignored: within SIGNAL_COOLDOWN_MINUTES of the symbol's last entry signal"
        return "ignored: no position in that direction to exit"
    if status is SignalStatus.ACCEPTED:
        return "accepted" if record.signal.type.is_entry else "exit requested"
    return "pending"


def signal_read(
    record: SignalRecord, symbol: str, outcome: SignalOutcome | None = None
) -> SignalRead:
    """The API view of a stored signal (NaN indicators become null) and what came of it."""
    s = record.signal
    outcome = outcome or SignalOutcome()
    return SignalRead(
        signal_id=s.signal_id,
        instrument_key=s.instrument_key,
        trading_symbol=symbol,
        strategy=s.strategy,
        type=s.type,
        strength=s.strength,
        status=record.status,
        reason=s.reason,
        price=paise_to_rupees(s.price_paise),
        candle_start_at=ms_to_datetime(s.candle_start_ms),
        created_at=s.created_at,
        indicators={k: (None if v != v else v) for k, v in s.indicators.items()},
        outcome=_outcome_text(record, outcome),
        refusal_rule=outcome.refusal_rule,
        refusal_reason=outcome.refusal_reason,
        order_id=outcome.order_id,
        order_status=outcome.order_status,
    )


SIGNAL_SORT = {
    "created_at": SignalRow.created_at,
    "strength": SignalRow.strength,
    "instrument_key": SignalRow.instrument_key,
}
SignalSort = Literal["created_at", "-created_at", "strength", "-strength", "instrument_key"]


@router.get("/signals", response_model=list[SignalRead], responses={200: TOTAL_DOC})
def list_signals(
    response: Response,
    session: SessionDep,
    account: AccountDep,
    instrument_key: Filter = None,
    strategy: Filter = None,
    status: SignalStatus | None = None,
    type: SignalType | None = None,
    since: Since = None,
    until: Until = None,
    sort: SignalSort = "-created_at",
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[SignalRead]:
    """Recent signals (newest first by default) with their status and indicator snapshot.
    The X-Total-Count header holds how many match."""
    where: list[ColumnElement[bool]] = [SignalRow.account == account]
    if instrument_key is not None:
        where.append(SignalRow.instrument_key == instrument_key)
    if strategy is not None:
        where.append(SignalRow.strategy == strategy)
    if status is not None:
        where.append(SignalRow.status == status.value)
    if type is not None:
        where.append(SignalRow.type == type.value)
    if since is not None:
        where.append(SignalRow.created_at >= since)
    if until is not None:
        where.append(SignalRow.created_at < until)
    rows, total = page(
        session, SignalRow, where=where, sort=sort, columns=SIGNAL_SORT, limit=limit, offset=offset
    )
    response.headers[TOTAL_HEADER] = str(total)
    records = [signal_from_row(row) for row in rows]
    names = symbols_for(session, (r.signal.instrument_key for r in records))
    outcomes = signal_outcomes(session, account, [r.signal.signal_id for r in records])
    return [
        signal_read(r, names[r.signal.instrument_key], outcomes[r.signal.signal_id])
        for r in records
    ]


@router.get(
    "/signals/{signal_id}", response_model=SignalRead, responses={404: {"model": ErrorBody}}
)
def read_signal(signal_id: PathId, session: SessionDep, account: AccountDep) -> SignalRead:
    """One signal."""
    record = SignalRepository(session, account).get(signal_id)
    key = record.signal.instrument_key
    outcome = signal_outcomes(session, account, [signal_id])[signal_id]
    return signal_read(record, symbols_for(session, [key])[key], outcome)

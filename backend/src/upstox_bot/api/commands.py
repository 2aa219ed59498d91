"""Commands the API sends to a running bot. Call them on the bot's event loop thread.

Each one goes through the engine (risk checks, order pacing, audit) and commits the journal
before it returns, so that what the API answers is on disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi.exceptions import RequestValidationError
from sqlalchemy import select

from upstox_bot.api.errors import BotNotRunning, RiskRefused
from upstox_bot.db.models import AuditLogRow
from upstox_bot.db.session import session_scope
from upstox_bot.domain import (
    AuditRecord,
    Direction,
    OrderIntent,
    OrderPurpose,
    RiskRule,
    Signal,
    SignalId,
    SignalStatus,
    SignalType,
)
from upstox_bot.errors import Conflict, NotFound
from upstox_bot.trading.engine import derive_id
from upstox_bot.trading.ports import CancelOutcome, OrderChange

if TYPE_CHECKING:
    from upstox_bot.runtime.embedded import EmbeddedBot

MANUAL_STRATEGY = "manual"


def require_bot(bot: EmbeddedBot | None, what: str) -> EmbeddedBot:
    """The running bot, or BotNotRunning naming the command."""
    if bot is None:
        raise BotNotRunning(
            f"{what} needs the running bot: start it with `upstox-bot run` and call the API it "
            "serves (this API runs without a trading engine)"
        )
    return bot


@dataclass(frozen=True, slots=True, kw_only=True)
class ManualEntry:
    intent: OrderIntent
    direction: Direction
    price_paise: int
    stop_paise: int
    target_paise: int


def _refusal(bot: EmbeddedBot, signal_id: str) -> tuple[RiskRule | None, str]:
    with session_scope(bot.sessions) as session:
        row = session.scalar(
            select(AuditLogRow)
            .where(AuditLogRow.entity_id == signal_id, AuditLogRow.event == "risk.refused")
            .order_by(AuditLogRow.id.desc())
            .limit(1)
        )
    if row is None:
        return None, "refused by the risk checks"
    rule = row.data.get("rule")
    return (RiskRule(rule) if rule else None), str(row.data.get("reason", ""))


def manual_entry(
    bot: EmbeddedBot, instrument_key: str, direction: Direction, *, reason: str, by: str
) -> ManualEntry:
    """Enter a position by hand through the engine's risk checks, sizing and order pacing.

    Raises:
        NotFound: the bot does not trade that instrument.
        RiskRefused: a risk rule refused the entry (the detail names it).
    """
    engine = bot.engine
    if instrument_key not in engine.instruments:
        raise NotFound(f"the bot does not trade {instrument_key!r}")
    now = engine.clock.now()
    now_ms = engine.clock.now_ms()
    price = engine.last_price.get(instrument_key, 0)
    signal_type = SignalType.ENTRY_LONG if direction is Direction.LONG else SignalType.ENTRY_SHORT
    signal = Signal(
        signal_id=SignalId(
            derive_id("sg", engine.config.account, "manual", instrument_key, now_ms)
        ),
        instrument_key=instrument_key,
        strategy=MANUAL_STRATEGY,
        type=signal_type,
        strength=1.0,
        reason=f"{reason} ({by})",
        price_paise=price,
        candle_start_ms=now_ms,
        created_at=now,
    )
    engine.journal.signal(signal, SignalStatus.NEW)
    engine.journal.audit(
        AuditRecord(
            event="order.manual_requested",
            entity="signal",
            entity_id=signal.signal_id,
            at=now,
            data={"instrument_key": instrument_key, "direction": direction.value, "reason": reason},
            actor=by,
        )
    )
    intent = engine.request_entry(signal)
    if intent is None:
        bot.flush()
        rule, why = _refusal(bot, signal.signal_id)
        raise RiskRefused(f"{rule.value if rule else 'risk'}: {why}")
    stop, target = engine.exits.rules.levels(direction, price)
    bot.executor.execute([intent])
    bot.flush()
    return ManualEntry(
        intent=intent, direction=direction, price_paise=price, stop_paise=stop, target_paise=target
    )


def close_position(bot: EmbeddedBot, instrument_key: str, *, by: str) -> None:
    """Queue the manual exit of an open position.

    Raises:
        NotFound: no open position in that instrument.
    """
    bot.close_position(instrument_key, by=by)


def modify_order(
    bot: EmbeddedBot, client_order_id: str, change: OrderChange, *, by: str, reason: str
) -> bool:
    """Change a working order through the order desk (validated there, audited).

    Returns:
        True when done now (paper), False when sent to the broker (Upstox confirms later).

    Raises:
        NotFound: no working order with that id.
        Conflict: the order cannot take this change (see ``OrderDesk.modify``).
        RequestValidationError: a price off the instrument's tick (names the field).
    """
    try:
        done = bot.desk.modify(client_order_id, change, by=by, reason=reason)
    except ValueError as exc:
        field = "price" if change.price_paise is not None else "trigger_price"
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", field), "msg": str(exc), "input": None}]
        ) from None
    finally:
        bot.flush()
    return done


def cancel_order(bot: EmbeddedBot, client_order_id: str, *, by: str) -> CancelOutcome:
    """Cancel a working entry order through the bot's broker.

    The paper broker cancels at once and the engine follows (CANCELLED). The live broker sends
    the cancel to Upstox (REQUESTED) and the engine changes only when Upstox confirms it, in the
    order update: a part filled before keeps that part as the position; an order that filled
    first simply fills.

    Raises:
        NotFound: the engine has no working order with that id.
        Conflict: an exit order, a broker that cannot cancel, or an order no longer working.
        BrokerUnavailable: Upstox could not be asked.
    """
    order = bot.engine.orders.get(client_order_id)
    if order is None:
        raise NotFound(f"no working order {client_order_id!r}")
    if order.purpose is OrderPurpose.EXIT:
        raise Conflict("an exit order is not cancelled: a stop must never be lost")
    request_cancel = getattr(bot.broker, "request_cancel", None)
    if request_cancel is not None:
        outcome: CancelOutcome = request_cancel(client_order_id, by=by)
        if outcome is CancelOutcome.NOT_WORKING:
            raise Conflict(f"order {client_order_id!r} is no longer working (filled or closed)")
        return outcome
    cancel = getattr(bot.broker, "cancel", None)
    if cancel is None:
        raise Conflict(f"the {type(bot.broker).__name__} cannot cancel orders")
    if not cancel(client_order_id):
        raise Conflict(f"order {client_order_id!r} is no longer working (filled or closed)")
    bot.engine.on_order_cancelled(client_order_id, by=by)
    bot.flush()
    return CancelOutcome.CANCELLED

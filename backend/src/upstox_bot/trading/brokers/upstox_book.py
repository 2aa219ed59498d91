"""The broker's book as the bot sees it, and reconciling the bot's book against it.

The broker reports each of its orders as a :class:`BrokerOrderReport` (cumulative, one per Upstox
order: an order sliced at the freeze quantity becomes several, all carrying the same tag) and
its net positions as :class:`PositionReport`. :func:`aggregate_reports` folds the reports of one
tag into one domain Order. ``reconcile_books`` compares the bot's orders and positions with the
broker's (see :class:`ReconciliationReport`); ``upstox_bot.upstox.live.reconcile`` runs it over
the database.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from upstox_bot.domain import (
    ClientOrderId,
    Direction,
    Order,
    OrderPurpose,
    OrderStatus,
    OrderType,
    Position,
    Side,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerOrderReport:
    """The broker's latest view of one of its orders (cumulative, not incremental)."""

    tag: str | None  # the bot's client order id
    broker_order_id: str
    instrument_key: str
    side: Side
    quantity: int
    filled_quantity: int
    average_price_paise: int | None  # of the filled quantity; None/0 until something fills
    status: OrderStatus
    message: str | None = None
    at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PositionReport:
    """The broker's net position in one instrument: positive long, negative short."""

    instrument_key: str
    quantity: int


def aggregate_reports(
    reports: Sequence[BrokerOrderReport], template: Order | None, at: datetime
) -> Order | None:
    """One domain Order from the broker's child orders of one tag (None when there are none).

    Status: FILLED when every child completed; PARTIALLY_FILLED while some quantity is filled
    and the rest still works; once every child ended: REJECTED when nothing filled and a child
    was rejected, CANCELLED when nothing (or only part) filled, FILLED when all filled; OPEN
    otherwise. Quantities and the average price are summed over the children.
    """
    if not reports:
        return None
    first = reports[0]
    quantity = sum(r.quantity for r in reports)
    filled = sum(r.filled_quantity for r in reports)
    value = sum(r.filled_quantity * (r.average_price_paise or 0) for r in reports)
    average = (value + filled // 2) // filled if filled else None
    statuses = {r.status for r in reports}
    if statuses == {OrderStatus.FILLED}:
        status = OrderStatus.FILLED
    elif all(s.is_terminal for s in statuses):
        if filled:
            status = OrderStatus.CANCELLED if filled < quantity else OrderStatus.FILLED
        elif OrderStatus.REJECTED in statuses:
            status = OrderStatus.REJECTED
        else:
            status = OrderStatus.CANCELLED
    elif filled:
        status = OrderStatus.PARTIALLY_FILLED
    else:
        status = OrderStatus.OPEN
    reason = next((r.message for r in reports if r.message and r.status.is_terminal), None)
    if template is not None:
        order = template.copy()
    else:
        order = Order(
            client_order_id=ClientOrderId(first.tag or ""),
            instrument_key=first.instrument_key,
            side=first.side,
            quantity=quantity,
            lots=0,
            purpose=OrderPurpose.ENTRY,
            order_type=OrderType.MARKET,
            status=status,
            created_at=first.at or at,
            updated_at=at,
            reason="found at the broker",
        )
    order.status = status
    order.updated_at = at
    order.broker_order_id = first.broker_order_id
    if filled != order.filled_quantity or average != order.average_price_paise:
        # Upstox reports the average in rupees: its value is exact only to that average.
        order.filled_value_paise = (average or 0) * filled
    order.filled_quantity = filled
    order.average_price_paise = average
    order.rejection_reason = reason if status is OrderStatus.REJECTED else order.rejection_reason
    return order


# --- reconciliation -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderMismatch:
    """An order whose state differs between the bot and the broker.

    ``kind``: ``resolved`` (the bot sent it and never heard back, the broker has it: feed
    ``broker_view`` to the executor), ``missing`` (the bot sent it, the broker never got it: safe
    to place again), ``state`` (both know it, the states differ), ``unknown`` (the broker has an
    order with a tag of this account the bot does not know).
    """

    kind: str
    client_order_id: str
    bot_status: OrderStatus | None
    broker_view: Order | None
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PositionMismatch:
    """Net quantities (positive long, negative short) that differ for one instrument."""

    instrument_key: str
    bot_quantity: int
    broker_quantity: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconciliationReport:
    """What :func:`reconcile_books` found; empty lists mean the books agree."""

    at: datetime
    orders: list[OrderMismatch]
    positions: list[PositionMismatch]
    orders_checked: int
    positions_checked: int

    @property
    def clean(self) -> bool:
        return not self.orders and not self.positions

    @property
    def resolved(self) -> list[OrderMismatch]:
        return [m for m in self.orders if m.kind == "resolved"]


def _net(position: Position) -> int:
    return position.quantity if position.direction is Direction.LONG else -position.quantity


def reconcile_books(
    *,
    bot_orders: Iterable[Order],
    bot_positions: Iterable[Position],
    broker_orders: Iterable[BrokerOrderReport],
    broker_positions: Iterable[PositionReport],
    at: datetime,
    tag_prefix: str | None = "ub-",
    ignore_tags: Collection[str] = (),
) -> ReconciliationReport:
    """Compare the bot's unfinished orders and open positions with the broker's.

    Args:
        bot_orders: the bot's orders not yet terminal (PENDING, SUBMITTING, OPEN, PARTIALLY_FILLED).
        bot_positions: the bot's open positions.
        broker_orders: today's order book.
        broker_positions: the broker's net positions.
        at: the time of the check.
        tag_prefix: broker orders whose tag starts with this and that the bot does not know are
            reported as ``unknown`` (None: do not report them).
        ignore_tags: orders not to compare yet on either side (on their way: the broker's book
            may not show them, or show them before the bot heard back).
    """
    by_tag: dict[str, list[BrokerOrderReport]] = {}
    for report in broker_orders:
        if report.tag:
            by_tag.setdefault(report.tag, []).append(report)
    mismatches: list[OrderMismatch] = []
    checked = 0
    known_tags: set[str] = set(ignore_tags)
    for order in bot_orders:
        if order.client_order_id in known_tags:
            continue
        checked += 1
        tag = str(order.client_order_id)
        known_tags.add(tag)
        view = aggregate_reports(by_tag.get(tag, []), order, at)
        in_flight = order.status in (OrderStatus.PENDING, OrderStatus.SUBMITTING)
        if view is None:
            if order.status is OrderStatus.SUBMITTING:
                mismatches.append(
                    OrderMismatch(
                        kind="missing",
                        client_order_id=tag,
                        bot_status=order.status,
                        broker_view=None,
                        detail="sent but not at the broker: safe to place again",
                    )
                )
            elif not in_flight:
                mismatches.append(
                    OrderMismatch(
                        kind="state",
                        client_order_id=tag,
                        bot_status=order.status,
                        broker_view=None,
                        detail="working for the bot but unknown to the broker",
                    )
                )
            continue
        if in_flight:
            mismatches.append(
                OrderMismatch(
                    kind="resolved",
                    client_order_id=tag,
                    bot_status=order.status,
                    broker_view=view,
                    detail=f"the broker has it: {view.status.value}, "
                    f"{view.filled_quantity}/{view.quantity} filled",
                )
            )
        elif view.status is not order.status or view.filled_quantity != order.filled_quantity:
            mismatches.append(
                OrderMismatch(
                    kind="state",
                    client_order_id=tag,
                    bot_status=order.status,
                    broker_view=view,
                    detail=f"bot {order.status.value} {order.filled_quantity} filled, broker "
                    f"{view.status.value} {view.filled_quantity} filled",
                )
            )
    if tag_prefix is not None:
        for tag, reports in by_tag.items():
            if tag.startswith(tag_prefix) and tag not in known_tags:
                view = aggregate_reports(reports, None, at)
                if view is not None and not view.status.is_terminal:
                    mismatches.append(
                        OrderMismatch(
                            kind="unknown",
                            client_order_id=tag,
                            bot_status=None,
                            broker_view=view,
                            detail="working at the broker, unknown to the bot",
                        )
                    )
    bot_net: dict[str, int] = {}
    for position in bot_positions:
        bot_net[position.instrument_key] = bot_net.get(position.instrument_key, 0) + _net(position)
    broker_net: dict[str, int] = {}
    for held in broker_positions:
        broker_net[held.instrument_key] = broker_net.get(held.instrument_key, 0) + held.quantity
    position_mismatches = [
        PositionMismatch(
            instrument_key=key,
            bot_quantity=bot_net.get(key, 0),
            broker_quantity=broker_net.get(key, 0),
        )
        for key in sorted(set(bot_net) | set(broker_net))
        if bot_net.get(key, 0) != broker_net.get(key, 0)
    ]
    return ReconciliationReport(
        at=at,
        orders=mismatches,
        positions=position_mismatches,
        orders_checked=checked,
        positions_checked=len(set(bot_net) | set(broker_net)),
    )

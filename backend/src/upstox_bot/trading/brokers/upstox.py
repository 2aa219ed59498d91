"""The live broker: the synchronous Broker protocol over an asynchronous order gateway.

The engine and the executor are synchronous; the Upstox client and its streams are asyncio.
:class:`UpstoxBroker` owns a private event loop in a daemon thread and runs every gateway call
there (``asyncio.run_coroutine_threadsafe``), so ``place`` and ``find_by_tag`` block the caller
for one HTTP exchange and nothing else. The gateway (``upstox_bot.upstox.live.UpstoxOrderGateway``)
is the only Upstox-specific part; this module is plain Python and depends on it through the
:class:`OrderGateway` protocol.

Order updates arrive on the broker's loop (portfolio stream, plus a poll of the order book on
every stream (re)connect and every ``poll_interval_s`` while orders are working) as
:class:`BrokerOrderReport` records, one per Upstox order (an order sliced at the freeze quantity
becomes several, all carrying the same tag). The broker turns the cumulative filled quantity
and average price of each report into incremental :class:`~upstox_bot.domain.Fill` objects with
deterministic ids (so the stream and the poll never count a fill twice), and reports the end
of an order that was rejected or cancelled. The harness takes them with :meth:`drain` and feeds
them to the executor and the engine on its own thread.

``reconcile_books`` compares the bot's orders and positions with the broker's (see
:class:`ReconciliationReport`); ``upstox_bot.upstox.live.reconcile`` runs it over the database.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from upstox_bot.domain import (
    ClientOrderId,
    Direction,
    Fill,
    Order,
    OrderPurpose,
    OrderStatus,
    OrderType,
    Position,
    Side,
)
from upstox_bot.errors import BrokerUnavailable, Conflict, OrderRejected
from upstox_bot.trading.engine import derive_id
from upstox_bot.trading.ports import CancelOutcome

log = logging.getLogger(__name__)

T = TypeVar("T")


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


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderClosed:
    """An order ended without filling in full (rejected or cancelled at the broker)."""

    client_order_id: ClientOrderId
    status: OrderStatus  # REJECTED or CANCELLED
    reason: str
    filled_quantity: int  # filled before it ended (fills were reported separately)
    requested_by: str | None = None  # who asked for the cancel here (None: the broker's doing)


BrokerEvent = Fill | OrderClosed
ReportHandler = Callable[[BrokerOrderReport], None]
ConnectHandler = Callable[[], Awaitable[None]]
CanPlace = Callable[[Order], str | None]
"""Returns why the order may not be placed now (e.g. no valid token), or None."""


class OrderGateway(Protocol):
    """What the live broker needs of a broker API, asynchronously.

    ``place`` raises OrderRejected when the order was certainly not placed and BrokerUnavailable
    when its fate is unknown; the others raise BrokerUnavailable on transient failures.
    """

    async def place(self, order: Order) -> Sequence[str]:
        """Place the order (its client id as tag); return the broker's order ids."""
        ...

    async def cancel(self, broker_order_id: str) -> None:
        """Ask the broker to cancel one of its orders (the answer is not the confirmation).

        Raises:
            OrderRejected: the broker refused: the order is unknown or already finished.
            BrokerUnavailable: no conclusive answer.
        """
        ...

    async def reports_for_tag(self, tag: str) -> Sequence[BrokerOrderReport]:
        """Today's orders carrying this tag."""
        ...

    async def order_book(self) -> Sequence[BrokerOrderReport]:
        """Today's orders."""
        ...

    async def positions(self) -> Sequence[PositionReport]:
        """Open positions."""
        ...

    async def start(self, on_report: ReportHandler, on_connect: ConnectHandler) -> None:
        """Start streaming order updates to ``on_report``; ``on_connect`` after each connect."""
        ...

    async def close(self) -> None:
        """Stop streaming and release connections."""
        ...


class _LoopThread:
    """An asyncio event loop running in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a blocking broker call from the broker's own loop would deadlock")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout=timeout_s)
        except TimeoutError as exc:
            future.cancel()
            raise BrokerUnavailable(f"broker call timed out after {timeout_s:g} s") from exc

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


@dataclass(slots=True)
class _Tracked:
    order: Order  # a copy of the bot's order, for the fields reports do not carry
    skip_quantity: int = 0  # filled before tracking began (already known to the bot)
    children: dict[str, BrokerOrderReport] = field(default_factory=dict)
    filled: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (qty, avg paise)
    reported_quantity: int = 0  # total handed out as fills (after the skip)
    closed: bool = False
    cancel_by: str | None = None  # a cancel was requested here, by whom


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


class UpstoxBroker:
    """The live broker behind the Broker protocol (see the module doc).

    Args:
        gateway: the asynchronous broker API (``upstox.live.UpstoxOrderGateway``).
        clock: ``now()`` for fill times when a report carries none.
        can_place: returns why an order may not be placed now (e.g. the token guard says the
            token is expired); the order is then refused as OrderRejected without a call.
        call_timeout_s: the longest a blocking call waits for the gateway (then
            BrokerUnavailable: the order's fate is unknown, look it up by tag).
        poll_interval_s: poll the order book this often while orders are working (fallback for
            a silent stream); 0 disables the timed poll (connect-time polls still run).
    """

    def __init__(
        self,
        gateway: OrderGateway,
        *,
        clock: Callable[[], datetime],
        can_place: CanPlace | None = None,
        call_timeout_s: float = 60.0,
        poll_interval_s: float = 5.0,
    ) -> None:
        self._gateway = gateway
        self._clock = clock
        self._can_place = can_place
        self._call_timeout_s = call_timeout_s
        self._poll_interval_s = poll_interval_s
        self._lock = threading.Lock()
        self._tracked: dict[str, _Tracked] = {}
        self._events: list[BrokerEvent] = []
        self._loop: _LoopThread | None = None
        self._poller: asyncio.Task[None] | None = None
        # counters
        self.placed = 0
        self.refused = 0
        self.reports = 0
        self.untracked_reports = 0
        self.polls = 0
        self.poll_failures = 0
        self.cancels_requested = 0

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the broker's loop thread, the order stream and the poll fallback."""
        if self._loop is not None:
            return
        self._loop = _LoopThread("upstox-broker")
        self._loop.run(self._start(), self._call_timeout_s)

    async def _start(self) -> None:
        await self._gateway.start(self._on_report, self._poll_now)
        if self._poll_interval_s > 0:
            self._poller = asyncio.create_task(self._poll_loop(), name="upstox-broker-poll")

    def stop(self) -> None:
        """Stop streaming and the loop thread (idempotent)."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            loop.run(self._stop(), self._call_timeout_s)
        finally:
            loop.stop()

    async def _stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None
        await self._gateway.close()

    def __enter__(self) -> UpstoxBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("UpstoxBroker is not started: call start()")
        return self._loop.run(coro, self._call_timeout_s)

    # --- the Broker protocol ----------------------------------------------------------------

    def place(self, order: Order) -> Sequence[Fill]:
        """Send the order to the broker; fills come later through :meth:`drain`.

        Raises:
            OrderRejected: refused (by ``can_place`` or the broker); nothing was placed.
            BrokerUnavailable: the outcome is unknown; look it up with :meth:`find_by_tag`.
        """
        reason = self._can_place(order) if self._can_place is not None else None
        if reason:
            self.refused += 1
            raise OrderRejected(reason)
        tag = str(order.client_order_id)
        with self._lock:
            # tracked before the call: a stream update may arrive before the answer does
            self._tracked.setdefault(tag, _Tracked(order=order.copy()))
        try:
            ids = self._run(self._gateway.place(order))
        except OrderRejected:
            with self._lock:
                self._tracked.pop(tag, None)
            raise
        self.placed += 1
        if ids:
            order.broker_order_id = ids[0]
        return ()

    def find_by_tag(self, client_order_id: str) -> Order | None:
        """The broker's view of the order with this tag (all its slices), or None.

        A working order found here is tracked from then on, so its later fills are reported.

        Raises:
            BrokerUnavailable: the broker could not be asked.
        """
        reports = self._run(self._gateway.reports_for_tag(client_order_id))
        with self._lock:
            tracked = self._tracked.get(client_order_id)
            template = tracked.order if tracked is not None else None
        found = aggregate_reports(list(reports), template, self._clock())
        if found is not None and tracked is not None:
            for report in reports:
                self._apply(report)
        return found

    def request_cancel(self, client_order_id: str, *, by: str) -> CancelOutcome:
        """Ask Upstox to cancel every working slice of the order; nothing changes here yet.

        The confirmation comes as an order update (stream or poll) and is drained as an
        :class:`OrderClosed` carrying ``requested_by=by``, after the fills that came first; a
        slice that filled before the cancel reached Upstox drains as its fill.

        Returns:
            REQUESTED when at least one slice was asked to cancel, NOT_WORKING when the order
            is not followed, has ended, or every slice had finished at Upstox.

        Raises:
            Conflict: the order is not acknowledged by Upstox yet (no order id): try again.
            BrokerUnavailable: Upstox could not be asked; the order may still work.
        """
        with self._lock:
            tracked = self._tracked.get(client_order_id)
            if tracked is None or tracked.closed:
                return CancelOutcome.NOT_WORKING
            working = [i for i, r in tracked.children.items() if not r.status.is_terminal]
            known = tracked.order.broker_order_id
            if known and known not in tracked.children:
                working.append(known)
        if not working:
            if not tracked.children:
                raise Conflict(f"order {client_order_id} is not acknowledged by Upstox yet")
            return CancelOutcome.NOT_WORKING
        asked = 0
        for broker_order_id in working:
            try:
                self._run(self._gateway.cancel(broker_order_id))
            except OrderRejected as exc:  # that slice finished first (filled or ended)
                log.info(
                    "broker.cancel.refused",
                    extra={"client_order_id": client_order_id, "reason": str(exc)},
                )
                continue
            asked += 1
            with self._lock:
                tracked.cancel_by = by
        self.cancels_requested += asked
        return CancelOutcome.REQUESTED if asked else CancelOutcome.NOT_WORKING

    # --- reports in, events out -----------------------------------------------------------

    def track(self, order: Order) -> None:
        """Follow an order placed earlier (e.g. restored after a restart): its fills beyond
        ``order.filled_quantity`` will be reported."""
        with self._lock:
            self._tracked.setdefault(
                str(order.client_order_id),
                _Tracked(order=order.copy(), skip_quantity=order.filled_quantity),
            )

    @property
    def working_count(self) -> int:
        """Orders followed and not yet ended."""
        with self._lock:
            return sum(1 for t in self._tracked.values() if not t.closed)

    def drain(self) -> list[BrokerEvent]:
        """The fills and order ends reported since the last call, oldest first."""
        with self._lock:
            events, self._events = self._events, []
        return events

    def apply_reports(self, reports: Iterable[BrokerOrderReport]) -> None:
        """Apply reports from any source (stream, poll, tests); thread-safe."""
        for report in reports:
            self._apply(report)

    def _on_report(self, report: BrokerOrderReport) -> None:
        self._apply(report)

    def _apply(self, report: BrokerOrderReport) -> None:
        self.reports += 1
        with self._lock:
            tracked = self._tracked.get(report.tag or "")
            if tracked is None:
                self.untracked_reports += 1
                return
            tracked.children[report.broker_order_id] = report
            self._fills(tracked, report)
            self._maybe_close(tracked)

    def _fills(self, tracked: _Tracked, report: BrokerOrderReport) -> None:
        prev_qty, prev_avg = tracked.filled.get(report.broker_order_id, (0, 0))
        qty, avg = report.filled_quantity, report.average_price_paise or 0
        if qty <= prev_qty:
            return
        if avg <= 0:
            return  # no price yet: a later report (or the poll) will carry it
        tracked.filled[report.broker_order_id] = (qty, avg)
        increment = qty - prev_qty
        value = avg * qty - prev_avg * prev_qty
        price = max(1, (value + increment // 2) // increment)
        # quantity the bot already knew of (restart) is not reported again
        skip = min(tracked.skip_quantity, increment)
        tracked.skip_quantity -= skip
        increment -= skip
        room = tracked.order.quantity - tracked.order.filled_quantity - tracked.reported_quantity
        increment = min(increment, max(room, 0))
        if increment <= 0:
            return
        tracked.reported_quantity += increment
        order = tracked.order
        self._events.append(
            Fill(
                fill_id=derive_id("fill", report.broker_order_id, qty),
                client_order_id=order.client_order_id,
                broker_order_id=report.broker_order_id,
                instrument_key=order.instrument_key,
                side=order.side,
                quantity=increment,
                price_paise=price,
                filled_at=report.at or self._clock(),
            )
        )

    def _maybe_close(self, tracked: _Tracked) -> None:
        children = list(tracked.children.values())
        if tracked.closed or not children or not all(c.status.is_terminal for c in children):
            return
        known_ids = set(tracked.children)
        if tracked.order.broker_order_id and tracked.order.broker_order_id not in known_ids:
            return  # the placed slice we know of has not reported yet
        filled = sum(c.filled_quantity for c in children)
        priced = sum(tracked.filled.get(i, (0, 0))[0] for i in known_ids)
        if filled > priced:
            return  # a fill without its price yet: close after it, never before
        total = sum(c.quantity for c in children)
        tracked.closed = True
        if filled >= total and filled > 0:
            return  # complete: the fills say it all
        rejected = any(c.status is OrderStatus.REJECTED for c in children) and not filled
        reason = next((c.message for c in children if c.message), "") or (
            "rejected by the broker" if rejected else "cancelled at the broker"
        )
        self._events.append(
            OrderClosed(
                client_order_id=tracked.order.client_order_id,
                status=OrderStatus.REJECTED if rejected else OrderStatus.CANCELLED,
                reason=reason,
                filled_quantity=filled,
                requested_by=tracked.cancel_by,
            )
        )

    # --- poll fallback ----------------------------------------------------------------------

    def poll(self) -> None:
        """Read the order book now and apply what it says about followed orders.

        Raises:
            BrokerUnavailable: the order book could not be read.
        """
        self._run(self._poll_now())

    async def _poll_now(self) -> None:
        with self._lock:
            if not any(not t.closed for t in self._tracked.values()):
                return
        self.polls += 1
        try:
            book = await self._gateway.order_book()
        except BrokerUnavailable:
            self.poll_failures += 1
            log.warning("broker.poll.failed")
            return
        for report in book:
            if report.tag:
                self._apply(report)

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval_s)
            try:
                await self._poll_now()
            except Exception:  # the fallback must keep running
                self.poll_failures += 1
                log.exception("broker.poll.error")

    # --- reads for reconciliation -----------------------------------------------------------

    def order_reports(self) -> list[BrokerOrderReport]:
        """Today's orders at the broker.

        Raises:
            BrokerUnavailable: the broker could not be asked.
        """
        return list(self._run(self._gateway.order_book()))

    def position_reports(self) -> list[PositionReport]:
        """Open positions at the broker.

        Raises:
            BrokerUnavailable: the broker could not be asked.
        """
        return list(self._run(self._gateway.positions()))


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
    """
    by_tag: dict[str, list[BrokerOrderReport]] = {}
    for report in broker_orders:
        if report.tag:
            by_tag.setdefault(report.tag, []).append(report)
    mismatches: list[OrderMismatch] = []
    checked = 0
    known_tags: set[str] = set()
    for order in bot_orders:
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

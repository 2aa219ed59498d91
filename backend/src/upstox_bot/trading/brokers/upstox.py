"""The live broker: the synchronous Broker protocol over an asynchronous order gateway.

The engine, the executor and the order desk are synchronous and run on the harness's thread
(in the embedded harness: the event loop that also serves the API and the daily login). The
Upstox client and its streams are asyncio. :class:`UpstoxBroker` owns a private event loop in a
daemon thread and does every network exchange there; the calls the engine side makes never
wait on the network:

- ``place`` checks the guard, starts the placement on the broker's loop and returns at once;
- ``request_cancel`` and ``request_modify`` likewise;
- what came of each arrives later through :meth:`drain` as events (``trading.ports``):
  :class:`~upstox_bot.trading.ports.OrderAccepted`, a rejection as
  :class:`~upstox_bot.trading.ports.OrderClosed`, an account-level refusal as
  :class:`~upstox_bot.trading.ports.OrderBlocked`, a lost answer as
  :class:`~upstox_bot.trading.ports.OrderUnknown` (the broker then looks the tag up in the order
  book and the order history until it finds the order, or until the look-up window has passed
  with nothing: :class:`~upstox_bot.trading.ports.OrderNotPlaced`), fills as
  :class:`~upstox_bot.domain.Fill`, modifies as :class:`~upstox_bot.trading.ports.OrderModified`.

So a login is never held up by an order call in flight, and a token revoked mid-call leaves
an order whose outcome is resolved by its tag once a token is back, never a second order.

Order updates arrive on the broker's loop (portfolio stream, plus a poll of the order book on
every stream (re)connect and every ``poll_interval_s`` while orders are working) as
:class:`BrokerOrderReport` records, one per Upstox order (an order sliced at the freeze quantity
becomes several, all carrying the same tag). The broker turns the cumulative filled quantity
and average price of each report into incremental :class:`~upstox_bot.domain.Fill` objects with
deterministic ids (so the stream and the poll never count a fill twice), and reports the end
of an order that was rejected or cancelled.

The reports, and the reconciliation of the bot's book against the broker's, are in
``trading.brokers.upstox_book``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from upstox_bot.domain import Fill, Order, OrderStatus, OrderType
from upstox_bot.errors import BrokerUnavailable, Conflict, NotFound, OrderRejected, OrdersBlocked
from upstox_bot.trading.brokers.upstox_book import (
    BrokerOrderReport,
    PositionReport,
    aggregate_reports,
)
from upstox_bot.trading.engine import derive_id
from upstox_bot.trading.ports import (
    BrokerEvent,
    CancelOutcome,
    OrderAccepted,
    OrderBlocked,
    OrderChange,
    OrderClosed,
    OrderModified,
    OrderNotPlaced,
    OrderUnknown,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_LOOKUP_WINDOW_S = 10.0  # see upstox.client.DEFAULT_LOOKUP_WINDOW_S (the same assumption)


ReportHandler = Callable[[BrokerOrderReport], None]
ConnectHandler = Callable[[], Awaitable[None]]
CanPlace = Callable[[Order], str | None]
"""Returns why the order may not be placed now (e.g. no valid token), or None."""

__all__ = ["ModifyTarget", "OrderGateway", "UpstoxBroker", "modify_target"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ModifyTarget:
    """The whole state a broker's modify call sets (Upstox's modify takes every field)."""

    order_type: OrderType
    price_paise: int
    trigger_price_paise: int
    quantity: int | None  # None: unchanged


class OrderGateway(Protocol):
    """What the live broker needs of a broker API, asynchronously.

    ``place`` raises OrderRejected when the order was certainly not placed, OrdersBlocked when
    the broker refuses every order of the account (token, static IP, algo: nothing placed), and
    BrokerUnavailable when its fate is unknown; the others raise BrokerUnavailable on transient
    failures and OrdersBlocked like ``place``.
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

    async def modify(self, broker_order_id: str, target: ModifyTarget) -> None:
        """Change one of the broker's working orders.

        Raises:
            OrderRejected: refused (unknown or finished order, invalid change).
            BrokerUnavailable: no conclusive answer.
        """
        ...

    async def reports_for_tag(self, tag: str) -> Sequence[BrokerOrderReport]:
        """Today's orders carrying this tag (order book and order history)."""
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
        """Run ``coro`` on the loop and wait for it (blocking the caller)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a blocking broker call from the broker's own loop would deadlock")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout=timeout_s)
        except TimeoutError as exc:
            future.cancel()
            raise BrokerUnavailable(f"broker call timed out after {timeout_s:g} s") from exc

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Start ``coro`` on the loop; return at once (errors are the coroutine's to handle)."""
        asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and await it from another event loop without blocking it."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

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
    placed_ids: tuple[str, ...] = ()  # the ids the placement answered
    in_flight: bool = False  # the placement call has not answered yet
    unknown_since: float | None = None  # wall time (epoch s) the outcome became unknown


class UpstoxBroker:
    """The live broker behind the Broker protocol (see the module doc).

    Args:
        gateway: the asynchronous broker API (``upstox.live.UpstoxOrderGateway``).
        clock: ``now()`` for fill times when a report carries none.
        can_place: returns why an order may not be placed now (e.g. the token guard says the
            token is expired); the order is then refused as OrderRejected without a call.
        call_timeout_s: the longest a blocking call (``find_by_tag``, reads) waits.
        poll_interval_s: poll the order book this often while orders are working (fallback for
            a silent stream), and look up the tags of orders whose outcome is unknown; 0
            disables the timed poll (connect-time polls still run).
        lookup_window_s: an order whose outcome is unknown is declared never placed only when
            the order book and the history have shown nothing for its tag for this long since
            it was sent (UPSTOX_TAG_LOOKUP_SECONDS; Upstox's book lag is not documented).
    """

    def __init__(
        self,
        gateway: OrderGateway,
        *,
        clock: Callable[[], datetime],
        can_place: CanPlace | None = None,
        call_timeout_s: float = 60.0,
        poll_interval_s: float = 5.0,
        lookup_window_s: float = DEFAULT_LOOKUP_WINDOW_S,
    ) -> None:
        self._gateway = gateway
        self._clock = clock
        self._can_place = can_place
        self._call_timeout_s = call_timeout_s
        self._poll_interval_s = poll_interval_s
        self._lookup_window_s = lookup_window_s
        self._lock = threading.Lock()
        self._tracked: dict[str, _Tracked] = {}
        self._events: list[BrokerEvent] = []
        self._loop: _LoopThread | None = None
        self._poller: asyncio.Task[None] | None = None
        # counters
        self.placed = 0
        self.refused = 0
        self.blocked = 0
        self.unknown = 0
        self.reports = 0
        self.untracked_reports = 0
        self.polls = 0
        self.poll_failures = 0
        self.lookups = 0
        self.cancels_requested = 0
        self.modifies_requested = 0

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

    def _thread(self) -> _LoopThread:
        if self._loop is None:
            raise RuntimeError("UpstoxBroker is not started: call start()")
        return self._loop

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("UpstoxBroker is not started: call start()")
        return self._loop.run(coro, self._call_timeout_s)

    def _emit(self, event: BrokerEvent) -> None:
        with self._lock:
            self._events.append(event)

    # --- the Broker protocol ----------------------------------------------------------------

    def place(self, order: Order) -> Sequence[Fill]:
        """Start sending the order; return at once (what came of it: :meth:`drain`).

        Raises:
            OrderRejected: refused by ``can_place``; nothing was sent.
        """
        reason = self._can_place(order) if self._can_place is not None else None
        if reason:
            self.refused += 1
            raise OrderRejected(reason)
        tag = str(order.client_order_id)
        loop = self._thread()
        with self._lock:
            # tracked before the call: a stream update may arrive before the answer does
            tracked = self._tracked.get(tag)
            if tracked is None or tracked.closed:
                tracked = _Tracked(order=order.copy())
                self._tracked[tag] = tracked
            tracked.in_flight = True
            tracked.unknown_since = None
        loop.spawn(self._place(tracked))
        return ()

    async def _place(self, tracked: _Tracked) -> None:
        order = tracked.order
        tag = str(order.client_order_id)
        try:
            ids = tuple(await self._gateway.place(order))
        except OrdersBlocked as exc:
            self.blocked += 1
            self._untrack(tag)
            self._emit(
                OrderBlocked(
                    client_order_id=order.client_order_id, cause=exc.cause, reason=str(exc)
                )
            )
        except OrderRejected as exc:
            self._untrack(tag)
            self._emit(
                OrderClosed(
                    client_order_id=order.client_order_id,
                    status=OrderStatus.REJECTED,
                    reason=str(exc),
                    filled_quantity=0,
                )
            )
        except Exception as exc:  # BrokerUnavailable, or anything unexpected: fate unknown
            if not isinstance(exc, BrokerUnavailable):
                log.exception("broker.place.error", extra={"client_order_id": tag})
            self.unknown += 1
            with self._lock:
                tracked.in_flight = False
                tracked.unknown_since = self._clock().timestamp()
            self._emit(OrderUnknown(client_order_id=order.client_order_id, reason=str(exc)))
        else:
            self.placed += 1
            with self._lock:
                tracked.in_flight = False
                tracked.placed_ids = ids
                if ids and not tracked.order.broker_order_id:
                    tracked.order.broker_order_id = ids[0]
            self._emit(OrderAccepted(client_order_id=order.client_order_id, broker_order_ids=ids))
            self._maybe_close_locked(tracked)

    def _untrack(self, tag: str) -> None:
        with self._lock:
            tracked = self._tracked.get(tag)
            if tracked is not None and not tracked.children:
                del self._tracked[tag]

    def find_by_tag(self, client_order_id: str) -> Order | None:
        """The broker's view of the order with this tag (all its slices), or None. Blocking.

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

        The cancel is sent from the broker's loop; the confirmation comes as an order update
        (stream or poll) and is drained as an :class:`OrderClosed` carrying ``requested_by=by``,
        after the fills that came first; a slice that filled before the cancel reached Upstox
        drains as its fill.

        Returns:
            REQUESTED when at least one slice is being cancelled, NOT_WORKING when the order
            is not followed, has ended, or every slice had finished at Upstox.

        Raises:
            Conflict: the order is not acknowledged by Upstox yet (no order id): try again.
        """
        with self._lock:
            tracked = self._tracked.get(client_order_id)
            if tracked is None or tracked.closed:
                return CancelOutcome.NOT_WORKING
            working = self._working_ids(tracked)
            if not working:
                if not tracked.children and not tracked.placed_ids:
                    raise Conflict(f"order {client_order_id} is not acknowledged by Upstox yet")
                return CancelOutcome.NOT_WORKING
            tracked.cancel_by = by
        self.cancels_requested += 1
        self._thread().spawn(self._cancel(tracked, working))
        return CancelOutcome.REQUESTED

    @staticmethod
    def _working_ids(tracked: _Tracked) -> list[str]:
        working = [i for i, r in tracked.children.items() if not r.status.is_terminal]
        for known in (*tracked.placed_ids, tracked.order.broker_order_id):
            if known and known not in tracked.children and known not in working:
                working.append(known)
        return working

    async def _cancel(self, tracked: _Tracked, working: Sequence[str]) -> None:
        tag = tracked.order.client_order_id
        for broker_order_id in working:
            try:
                await self._gateway.cancel(broker_order_id)
            except OrdersBlocked as exc:
                self._emit(
                    OrderBlocked(
                        client_order_id=tag, cause=exc.cause, reason=str(exc), operation="cancel"
                    )
                )
                return
            except OrderRejected as exc:  # that slice finished first (filled or ended)
                log.info(
                    "broker.cancel.refused", extra={"client_order_id": tag, "reason": str(exc)}
                )
            except Exception as exc:  # unknown: the order may still work; the caller retries
                log.warning(
                    "broker.cancel.failed", extra={"client_order_id": tag, "error": str(exc)}
                )

    def request_modify(self, client_order_id: str, change: OrderChange, *, by: str) -> bool:
        """Ask Upstox to change every working slice of the order; nothing changes here yet
        (returns False: the outcome is drained as an :class:`OrderModified`).

        Raises:
            NotFound: the order is not followed (never sent here, or ended).
            Conflict: not acknowledged by Upstox yet, no slice working, or a quantity change
                of an order Upstox sliced.
        """
        with self._lock:
            tracked = self._tracked.get(client_order_id)
            if tracked is None or tracked.closed:
                raise NotFound(f"no working order {client_order_id} at Upstox")
            working = self._working_ids(tracked)
            if not working:
                if not tracked.children and not tracked.placed_ids:
                    raise Conflict(f"order {client_order_id} is not acknowledged by Upstox yet")
                raise Conflict(f"order {client_order_id} is no longer working at Upstox")
            if change.quantity is not None and len(tracked.children | dict.fromkeys(working)) > 1:
                raise Conflict(
                    f"order {client_order_id} was sliced by Upstox: change its price only"
                )
            target = modify_target(tracked.order, change)
        self.modifies_requested += 1
        self._thread().spawn(self._modify(tracked, working, change, target, by))
        return False

    async def _modify(
        self,
        tracked: _Tracked,
        working: Sequence[str],
        change: OrderChange,
        target: ModifyTarget,
        by: str,
    ) -> None:
        tag = tracked.order.client_order_id
        reasons: list[str] = []
        done = 0
        for broker_order_id in working:
            try:
                await self._gateway.modify(broker_order_id, target)
            except OrdersBlocked as exc:
                self._emit(
                    OrderBlocked(
                        client_order_id=tag, cause=exc.cause, reason=str(exc), operation="modify"
                    )
                )
                reasons.append(str(exc))
                break
            except Exception as exc:  # refused, or no conclusive answer
                reasons.append(str(exc))
            else:
                done += 1
        if done:
            with self._lock:
                order = tracked.order
                order.order_type = target.order_type
                order.limit_price_paise = target.price_paise or order.limit_price_paise
                if target.quantity is not None:
                    order.quantity = target.quantity
        self._emit(
            OrderModified(
                client_order_id=tag,
                change=change,
                ok=done > 0,
                reason="; ".join(reasons),
                requested_by=by,
            )
        )

    # --- reports in, events out -----------------------------------------------------------

    def track(self, order: Order, *, unknown_since: datetime | None = None) -> None:
        """Follow an order placed earlier (e.g. restored after a restart): its fills beyond
        ``order.filled_quantity`` will be reported. ``unknown_since``: it was being sent when
        the bot stopped (SUBMITTING); its tag is looked up until it is found, or until the
        look-up window since then has passed (then OrderNotPlaced)."""
        with self._lock:
            tracked = self._tracked.setdefault(
                str(order.client_order_id),
                _Tracked(order=order.copy(), skip_quantity=order.filled_quantity),
            )
            if unknown_since is not None and not tracked.children:
                tracked.unknown_since = unknown_since.timestamp()

    @property
    def working_count(self) -> int:
        """Orders followed and not yet ended."""
        with self._lock:
            return sum(1 for t in self._tracked.values() if not t.closed)

    def drain(self) -> list[BrokerEvent]:
        """The events since the last call, oldest first."""
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
            recovered = tracked.unknown_since is not None
            tracked.unknown_since = None
            tracked.children[report.broker_order_id] = report
            if not tracked.order.broker_order_id:
                tracked.order.broker_order_id = report.broker_order_id
            if recovered:
                self._events.append(
                    OrderAccepted(
                        client_order_id=tracked.order.client_order_id,
                        broker_order_ids=tuple(tracked.children),
                        recovered=True,
                    )
                )
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

    def _maybe_close_locked(self, tracked: _Tracked) -> None:
        with self._lock:
            self._maybe_close(tracked)

    def _maybe_close(self, tracked: _Tracked) -> None:
        children = list(tracked.children.values())
        if tracked.closed or tracked.in_flight or not children:
            return  # in flight: the placement's answer may name slices not reported yet
        if not all(c.status.is_terminal for c in children):
            return
        known_ids = set(tracked.children)
        if not set(tracked.placed_ids) <= known_ids:
            return  # a placed slice has not reported yet
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
        else:
            for report in book:
                if report.tag:
                    self._apply(report)
        await self._resolve_unknown()

    async def _resolve_unknown(self) -> None:
        """Look up the tags of orders whose outcome is unknown: found, they are followed
        (OrderAccepted); absent from the book and the history for the whole window since they
        were sent, they never arrived (OrderNotPlaced). A failed look-up concludes nothing."""
        with self._lock:
            pending = [
                t for t in self._tracked.values() if t.unknown_since is not None and not t.in_flight
            ]
        for tracked in pending:
            tag = str(tracked.order.client_order_id)
            since = tracked.unknown_since
            try:
                reports = await self._gateway.reports_for_tag(tag)
            except Exception as exc:
                log.warning(
                    "broker.lookup.failed", extra={"client_order_id": tag, "error": str(exc)}
                )
                continue
            self.lookups += 1
            if reports:
                for report in reports:
                    self._apply(report)
                continue
            if since is None or self._clock().timestamp() - since < self._lookup_window_s:
                continue
            with self._lock:
                if tracked.unknown_since is None or tracked.children or tracked.in_flight:
                    continue
                self._tracked.pop(tag, None)
            self._emit(
                OrderNotPlaced(
                    client_order_id=tracked.order.client_order_id,
                    reason=f"no order with tag {tag} in the order book or history "
                    f"{self._lookup_window_s:g} s after it was sent",
                )
            )

    async def _poll_loop(self) -> None:
        while True:
            with self._lock:
                unknown = any(t.unknown_since is not None for t in self._tracked.values())
            # orders of unknown outcome are looked up every second, the rest polled slower
            await asyncio.sleep(
                min(1.0, self._poll_interval_s) if unknown else self._poll_interval_s
            )
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

    async def books(self) -> tuple[list[BrokerOrderReport], list[PositionReport]]:
        """Today's orders and the open positions, awaited from another event loop without
        blocking it (reconciliation from the harness's loop).

        Raises:
            BrokerUnavailable: the broker could not be asked.
        """
        loop = self._thread()
        orders = await loop.call(self._gateway.order_book())
        positions = await loop.call(self._gateway.positions())
        return list(orders), list(positions)


def modify_target(order: Order, change: OrderChange) -> ModifyTarget:
    """The full state a modify sets, from the order as it is and the change asked for.

    A price on a MARKET (or SL-M) order makes it a LIMIT (SL); a trigger needs a stop order.

    Raises:
        Conflict: a trigger for an order without one, or no price for a LIMIT.
    """
    kind = change.order_type or order.order_type
    if change.order_type is None and change.price_paise is not None:
        if kind is OrderType.MARKET:
            kind = OrderType.LIMIT
        elif kind is OrderType.STOP_MARKET:
            kind = OrderType.STOP_LIMIT
    if change.trigger_price_paise is not None and kind not in (
        OrderType.STOP_LIMIT,
        OrderType.STOP_MARKET,
    ):
        raise Conflict(f"a {kind.value} order has no trigger price to change")
    stop = kind in (OrderType.STOP_LIMIT, OrderType.STOP_MARKET)
    if stop and change.trigger_price_paise is None:
        # Upstox's modify sets every field, and the bot keeps no trigger of its own
        raise Conflict(f"give the trigger price to change a {kind.value} order")
    priced = kind in (OrderType.LIMIT, OrderType.STOP_LIMIT)
    price = change.price_paise if change.price_paise is not None else order.limit_price_paise
    if priced and not price:
        raise Conflict(f"a {kind.value} order needs a price")
    return ModifyTarget(
        order_type=kind,
        price_paise=(price or 0) if priced else 0,
        trigger_price_paise=change.trigger_price_paise or 0,
        quantity=change.quantity,
    )

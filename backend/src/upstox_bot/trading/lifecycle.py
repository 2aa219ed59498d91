"""Every working order ends: a deadline and an owner for each, and what to do when it passes.

Upstox turns a MARKET order into a limit at the last price plus or minus its protection band
(API.md 5.2, 9.2); in a gap that limit is never reached and the order rests. An order that rests
is the worst thing a stop can do, so:

- an **exit** not filled by its deadline (``exit_timeout_ms`` after it went out, or after its
  last re-price) is re-priced through a modify to a LIMIT ``exit_reprice_bps`` through the last
  traded price (wider each time), or, when the broker refuses the modify, cancelled so that the
  engine queues the exit again and a new order goes at a new protected price. After
  ``exit_reprice_attempts`` re-prices it is escalated: an alert (``order.exit_stuck``), and the
  re-pricing goes on every ``escalated_every_ms``: an exit is never dropped;
- an **entry** not filled by its deadline (``entry_timeout_ms``) is cancelled; when the broker
  confirms, the engine releases its slot and cash (the part filled, if any, stays the position);
- partial fills count as not filled: the rest of an exit is re-priced, the rest of an entry
  cancelled.

A deadline runs from when the order was made, or from when it last became workable: orders
the broker has not acknowledged yet (in flight, outcome unknown, held while the broker refuses
orders) are not acted on, and their clock starts again once they are.

Plain Python, no I/O: :class:`OrderLifecycle` decides, the order desk (``trading.desk``) acts
through the broker and tells it what came of it. Times are the engine's epoch milliseconds, so
it runs on the engine's clock in every harness (market time in simulations).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field

from upstox_bot.domain import Order, OrderPurpose, OrderStatus, Side

WORKABLE = frozenset({OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED})
MAX_REPRICE_BPS = 2500  # never further through the market than Upstox's widest band (25%)


@dataclass(frozen=True, slots=True, kw_only=True)
class LifecycleConfig:
    """The deadlines (ms) and the re-pricing rule of working orders (see the module doc)."""

    entry_timeout_ms: int = 60_000
    exit_timeout_ms: int = 10_000
    exit_reprice_bps: int = 100  # 1% through the last price, then 2%, 3%, ...
    exit_reprice_attempts: int = 5
    escalated_every_ms: int = 60_000

    def __post_init__(self) -> None:
        if min(self.entry_timeout_ms, self.exit_timeout_ms, self.escalated_every_ms) <= 0:
            raise ValueError("order deadlines must be positive")
        if not 0 < self.exit_reprice_bps <= MAX_REPRICE_BPS:
            raise ValueError("exit_reprice_bps must be 1..2500")
        if self.exit_reprice_attempts < 1:
            raise ValueError("exit_reprice_attempts must be at least 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class Reprice:
    """Modify the exit to a LIMIT at ``price_paise`` (re-price number ``attempt``)."""

    order: Order
    price_paise: int
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Replace:
    """Cancel the exit: the engine queues it again and it goes at a new protected price."""

    order: Order
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelEntry:
    """Cancel the entry's unfilled part: its deadline passed."""

    order: Order
    overdue_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Escalate:
    """The exit is still not filled after every re-price: tell the trader (once)."""

    order: Order
    attempts: int
    owner: str


LifecycleAction = Reprice | Replace | CancelEntry | Escalate


def owner_of(order: Order) -> str:
    """Who answers for the order: the signal that opened it, or the exit and its reason."""
    if order.purpose is OrderPurpose.ENTRY:
        return f"entry of signal {order.signal_id}" if order.signal_id else "manual entry"
    reason = order.exit_reason.value if order.exit_reason is not None else "exit"
    return f"{reason} exit of {order.instrument_key}"


@dataclass(slots=True)
class Watched:
    """One working order's deadline and history here."""

    client_order_id: str
    purpose: OrderPurpose
    owner: str
    deadline_ms: int
    attempts: int = 0  # re-prices (exits) or cancels (entries) asked for
    escalated: bool = False
    modify_refused: bool = False  # the broker refused the last modify: replace next time


@dataclass(slots=True)
class OrderLifecycle:
    """Deadlines and owners of the working orders (see the module doc)."""

    config: LifecycleConfig = field(default_factory=LifecycleConfig)
    watched: dict[str, Watched] = field(default_factory=dict)
    next_due_ms: int = 0  # nothing to do before this (0: look at the next call)
    busy_at_ms: dict[str, int] = field(default_factory=dict)  # last seen not workable

    def watch(self, order: Order, now_ms: int) -> Watched:
        """Start the order's deadline (idempotent: a watched order keeps its own): from when
        it was made, or from when it was last seen not workable, whichever is later."""
        known = self.watched.get(order.client_order_id)
        if known is not None:
            return known
        timeout = (
            self.config.entry_timeout_ms
            if order.purpose is OrderPurpose.ENTRY
            else self.config.exit_timeout_ms
        )
        made_ms = int(order.created_at.timestamp() * 1000)
        start_ms = max(made_ms, self.busy_at_ms.pop(order.client_order_id, made_ms))
        watched = Watched(
            client_order_id=order.client_order_id,
            purpose=order.purpose,
            owner=owner_of(order),
            deadline_ms=min(start_ms, now_ms) + timeout,
        )
        self.watched[order.client_order_id] = watched
        self.next_due_ms = min(self.next_due_ms or watched.deadline_ms, watched.deadline_ms)
        return watched

    def restart(self, client_order_id: str, now_ms: int) -> None:
        """The order goes (again) to the broker now: its deadline runs from now."""
        self.watched.pop(client_order_id, None)
        self.busy_at_ms[client_order_id] = now_ms
        self.next_due_ms = 0

    def modify_refused(self, client_order_id: str) -> None:
        """The broker refused the last re-price: the next step cancels and replaces instead."""
        watched = self.watched.get(client_order_id)
        if watched is not None:
            watched.modify_refused = True
            watched.deadline_ms = 0  # act at the next look
            self.next_due_ms = 0

    def due(
        self,
        now_ms: int,
        orders: Mapping[str, Order],
        last_price: Callable[[str], int | None],
        tick_paise: Callable[[str], int],
        *,
        busy: Container[str] = (),
    ) -> list[LifecycleAction]:
        """What to do now about the working orders (``orders``: the engine's, by client id).

        Orders not watched yet start their deadline now; orders gone are forgotten; orders in
        ``busy`` (not acknowledged, held) wait, their deadline restarting when they are free.
        """
        if self.next_due_ms and now_ms < self.next_due_ms and len(orders) == len(self.watched):
            return []  # nothing due, no order new or gone since the last look
        for gone in [cid for cid in self.watched if cid not in orders]:
            del self.watched[gone]
        for gone in [cid for cid in self.busy_at_ms if cid not in orders]:
            del self.busy_at_ms[gone]
        actions: list[LifecycleAction] = []
        deadlines: list[int] = []
        any_busy = False
        for client_order_id, order in orders.items():
            if order.status not in WORKABLE or client_order_id in busy:
                self.watched.pop(client_order_id, None)  # its clock starts once it works
                self.busy_at_ms[client_order_id] = now_ms
                any_busy = True
                continue
            watched = self.watch(order, now_ms)
            if now_ms >= watched.deadline_ms:
                acted = self._act(watched, order, now_ms, last_price, tick_paise)
                if acted is not None:
                    actions.extend(acted)
            deadlines.append(watched.deadline_ms)
        # An order not workable yet is looked at again on the next call; else at the deadline.
        self.next_due_ms = 0 if any_busy or not deadlines else min(deadlines)
        return actions

    def _act(
        self,
        watched: Watched,
        order: Order,
        now_ms: int,
        last_price: Callable[[str], int | None],
        tick_paise: Callable[[str], int],
    ) -> list[LifecycleAction] | None:
        config = self.config
        if watched.purpose is OrderPurpose.ENTRY:
            overdue = now_ms - watched.deadline_ms
            watched.attempts += 1
            watched.deadline_ms = now_ms + config.entry_timeout_ms  # ask again if unconfirmed
            return [CancelEntry(order=order, overdue_ms=overdue)]
        actions: list[LifecycleAction] = []
        watched.attempts += 1
        if watched.attempts > config.exit_reprice_attempts and not watched.escalated:
            watched.escalated = True
            actions.append(
                Escalate(order=order, attempts=watched.attempts - 1, owner=watched.owner)
            )
        wait = config.escalated_every_ms if watched.escalated else config.exit_timeout_ms
        watched.deadline_ms = now_ms + wait
        if watched.modify_refused:
            watched.modify_refused = False
            actions.append(Replace(order=order, attempt=watched.attempts))
            return actions
        price = last_price(order.instrument_key)
        if not price:
            actions.append(Replace(order=order, attempt=watched.attempts))
            return actions
        step = min(config.exit_reprice_bps * min(watched.attempts, 25), MAX_REPRICE_BPS)
        actions.append(
            Reprice(
                order=order,
                price_paise=through_price(
                    order.side, price, step, tick_paise(order.instrument_key)
                ),
                attempt=watched.attempts,
            )
        )
        return actions


def through_price(side: Side, price_paise: int, bps: int, tick_paise: int) -> int:
    """A limit ``bps`` through ``price_paise`` on the side that fills: above for a buy, below
    for a sell, on the tick (rounded further through), never below one tick."""
    tick = max(tick_paise, 1)
    if side is Side.BUY:
        raw = price_paise * (10_000 + bps)
        ticks = -(-raw // (10_000 * tick))
    else:
        raw = price_paise * (10_000 - bps)
        ticks = raw // (10_000 * tick)
    return max(ticks * tick, tick)

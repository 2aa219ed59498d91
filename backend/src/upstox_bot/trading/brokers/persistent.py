"""A paper broker whose book outlives the process: accepted orders and fills go to a PaperBook.

The plain PaperBroker keeps its book in memory, so a worker killed after the broker accepted an
order (and before the bot's database write) would lose the only trace of it, and the next worker
would place it again. This broker writes every accepted order and every fill through to a
`PaperBook` (Redis in the distributed harness) before it reports them, and a new instance loads
the book back: `find_by_tag` after a crash sees what the dead worker's broker accepted, and the
working orders still fill on the instrument's next trade. The fill rule is the PaperBroker's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Protocol

from upstox_bot.domain import Fill, Order, OrderStatus, Tick
from upstox_bot.trading.brokers.paper import PaperBroker
from upstox_bot.trading.engine import EngineClock


class PaperBook(Protocol):
    """Durable storage of a paper broker's book: its orders by tag and their fills."""

    def save_order(self, order: Order) -> None:
        """Store the broker's view of an order (insert or replace by client id)."""
        ...

    def save_fill(self, order: Order, fill: Fill) -> None:
        """Store a fill and the order's state after it, together."""
        ...

    def get(self, client_order_id: str) -> Order | None:
        """The broker's view of the order with this tag, or None."""
        ...

    def fills(self, client_order_id: str) -> list[Fill]:
        """The fills of an order, oldest first."""
        ...

    def working(self) -> list[Order]:
        """The accepted orders not yet filled, oldest first."""
        ...


class PersistentPaperBroker:
    """PaperBroker semantics with the book written through to a PaperBook.

    Args:
        book: where accepted orders and fills are kept; its working orders are loaded now.
        clock: market time for the fills.
        slippage_bps, tick_size_paise: as for PaperBroker.
    """

    def __init__(
        self,
        *,
        book: PaperBook,
        clock: EngineClock,
        slippage_bps: Decimal = Decimal("5"),
        tick_size_paise: Callable[[str], int] = lambda _key: 5,
    ) -> None:
        self._book = book
        self._paper = PaperBroker(
            clock=clock, slippage_bps=slippage_bps, tick_size_paise=tick_size_paise
        )
        for order in book.working():
            self._paper.place(order.copy())

    @property
    def working_count(self) -> int:
        return self._paper.working_count

    def place(self, order: Order) -> Sequence[Fill]:
        """Accept a MARKET order (idempotent by tag); it fills on the instrument's next tick.

        Raises:
            OrderRejected: not a MARKET order.
        """
        stored = self._book.get(order.client_order_id)
        if stored is not None:
            # An earlier attempt (maybe by a dead worker) reached the broker: same order.
            order.broker_order_id = stored.broker_order_id
            if (
                stored.status is OrderStatus.OPEN
                and self._paper.find_by_tag(stored.client_order_id) is None
            ):
                self._paper.place(stored.copy())
            return ()
        fills = self._paper.place(order)
        known = self._paper.find_by_tag(order.client_order_id)
        if known is not None:
            self._book.save_order(known)
        return fills

    def on_tick(self, tick: Tick) -> list[Fill]:
        """Fill the instrument's working orders at this trade and record the fills."""
        return self.on_trade(tick.instrument_key, tick.ltp_paise)

    def on_trade(self, instrument_key: str, price_paise: int) -> list[Fill]:
        """`on_tick` for a trade given by its instrument and price."""
        fills = self._paper.on_trade(instrument_key, price_paise)
        for fill in fills:
            known = self._paper.find_by_tag(fill.client_order_id)
            if known is not None:
                self._book.save_fill(known, fill)
        return fills

    def find_by_tag(self, client_order_id: str) -> Order | None:
        """The broker's view of the order: the book first, this process's memory second."""
        stored = self._book.get(client_order_id)
        return stored if stored is not None else self._paper.find_by_tag(client_order_id)

    def fills_of(self, client_order_id: str) -> list[Fill]:
        """The fills the broker reported for an order (to replay them after a crash)."""
        return self._book.fills(client_order_id)

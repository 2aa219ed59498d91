"""The paper broker: market orders fill at once at the last price, slipped against the trader."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from decimal import Decimal

from upstox_bot.domain import Fill, Order, OrderStatus, OrderType, Side
from upstox_bot.errors import OrderRejected
from upstox_bot.trading.engine import EngineClock, derive_id


class PaperBroker:
    """Fills MARKET orders in full at last price +/- slippage, aligned to the tick size.

    A buy fills at or above the last price and a sell at or below it: slippage only ever costs.
    """

    def __init__(
        self,
        *,
        last_price: Callable[[str], int | None],
        clock: EngineClock,
        slippage_bps: Decimal = Decimal("5"),
        tick_size_paise: Callable[[str], int] = lambda _key: 5,
    ) -> None:
        self._last_price = last_price
        self._clock = clock
        self._slippage = slippage_bps / Decimal(10_000)
        self._tick = tick_size_paise
        self._orders: dict[str, Order] = {}

    def fill_price(self, side: Side, price_paise: int, tick_paise: int) -> int:
        """The price a market order fills at, given the last price (paise)."""
        slip = Decimal(price_paise) * self._slippage
        if side is Side.BUY:
            raw = price_paise + slip
            ticks = -(-raw // tick_paise)  # ceiling: never better than the slipped price
        else:
            raw = price_paise - slip
            ticks = raw // tick_paise
        return max(int(ticks) * tick_paise, tick_paise)

    def place(self, order: Order) -> Sequence[Fill]:
        if order.client_order_id in self._orders:
            # Same tag twice: the broker already has it; report no new fill (idempotent).
            return ()
        if order.order_type is not OrderType.MARKET:
            raise OrderRejected(f"paper broker fills MARKET orders only, got {order.order_type}")
        price = self._last_price(order.instrument_key)
        if not price:
            raise OrderRejected(f"no last price for {order.instrument_key}")
        fill_price = self.fill_price(order.side, price, self._tick(order.instrument_key))
        now = self._clock.now()
        broker_id = derive_id("paper", order.client_order_id)
        known = copy.copy(order)
        known.broker_order_id = broker_id
        known.status = OrderStatus.FILLED
        known.filled_quantity = order.quantity
        known.average_price_paise = fill_price
        self._orders[order.client_order_id] = known
        order.broker_order_id = broker_id
        return (
            Fill(
                fill_id=derive_id("fill", order.client_order_id, 1),
                client_order_id=order.client_order_id,
                broker_order_id=broker_id,
                instrument_key=order.instrument_key,
                side=order.side,
                quantity=order.quantity,
                price_paise=fill_price,
                filled_at=now,
            ),
        )

    def find_by_tag(self, client_order_id: str) -> Order | None:
        known = self._orders.get(client_order_id)
        return copy.copy(known) if known else None

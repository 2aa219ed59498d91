"""The paper broker: a MARKET order fills in full at the first trade after it was placed.

Without slippage the fill price is that trade's price, as it is. With SLIPPAGE_BPS the price is
moved against the trader (a buy up, a sell down) and rounded against the trader: to the tick when
the trade price is on the tick grid (the exchange's prices always are), to the paisa when it is
not (adjusted historical prices). Filling on the next trade (not on the price seen when the order
was decided) is what a real market order does, and it is the same rule the backtester applies to
bars (next bar's open), so a replayed session and a backtest agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from upstox_bot.domain import Fill, Order, OrderStatus, OrderType, Side, Tick
from upstox_bot.errors import OrderRejected
from upstox_bot.trading.engine import EngineClock, derive_id


class PaperBroker:
    """Simulated broker for MARKET orders, driven by the same ticks as the engine."""

    def __init__(
        self,
        *,
        clock: EngineClock,
        slippage_bps: Decimal = Decimal("5"),
        tick_size_paise: Callable[[str], int] = lambda _key: 5,
    ) -> None:
        self._clock = clock
        self._slippage = slippage_bps / Decimal(10_000)
        self._tick = tick_size_paise
        self._orders: dict[str, Order] = {}  # every order by tag, as the broker knows it
        self._working: dict[str, list[Order]] = {}  # by instrument, oldest first
        self._working_count = 0  # the orders in _working: read after every tick in a backtest
        self._no_slippage = self._slippage == 0

    @property
    def working_count(self) -> int:
        return self._working_count

    def fill_price(self, side: Side, price_paise: int, tick_paise: int) -> int:
        """The price a market order fills at, given the trade price (paise).

        No slippage: the trade price itself. Slippage: the price slipped against the trader,
        then a buy rounded up and a sell rounded down, to the tick when the trade price is on
        the tick grid and to the paisa when it is not, so a fill is never better than the
        slipped price; never below one step.
        """
        if self._no_slippage:
            return price_paise
        step = tick_paise if tick_paise > 0 and price_paise % tick_paise == 0 else 1
        if side is Side.BUY:
            slipped = Decimal(price_paise) * (1 + self._slippage) / step
            steps = int(slipped.to_integral_value(rounding=ROUND_CEILING))
        else:
            slipped = Decimal(price_paise) * (1 - self._slippage) / step
            steps = int(slipped.to_integral_value(rounding=ROUND_FLOOR))
        return max(steps * step, step)

    def place(self, order: Order) -> Sequence[Fill]:
        """Accept a MARKET order; it fills on the instrument's next tick (no fill now)."""
        if order.client_order_id in self._orders:
            return ()  # the same tag twice: the broker already has it (idempotent)
        if order.order_type is not OrderType.MARKET:
            raise OrderRejected(f"paper broker fills MARKET orders only, got {order.order_type}")
        known = order.copy()
        known.broker_order_id = derive_id("paper", order.client_order_id)
        known.status = OrderStatus.OPEN
        order.broker_order_id = known.broker_order_id
        self._orders[order.client_order_id] = known
        self._working.setdefault(order.instrument_key, []).append(known)
        self._working_count += 1
        return ()

    def on_tick(self, tick: Tick) -> list[Fill]:
        """Fill the instrument's working orders at this trade; return the fills, oldest first."""
        return self.on_trade(tick.instrument_key, tick.ltp_paise)

    def on_trade(self, instrument_key: str, price_paise: int) -> list[Fill]:
        """`on_tick` for a trade at `price_paise` (a backtest feeds trades without Ticks)."""
        working = self._working.pop(instrument_key, None)
        if not working:
            return []
        self._working_count -= len(working)
        now = self._clock.now()
        tick_paise = self._tick(instrument_key)
        fills = []
        for known in working:
            price = self.fill_price(known.side, price_paise, tick_paise)
            known.status = OrderStatus.FILLED
            known.filled_quantity = known.quantity
            known.average_price_paise = price
            known.filled_value_paise = price * known.quantity
            fills.append(
                Fill(
                    fill_id=derive_id("fill", known.client_order_id, 1),
                    client_order_id=known.client_order_id,
                    broker_order_id=known.broker_order_id or "",
                    instrument_key=known.instrument_key,
                    side=known.side,
                    quantity=known.quantity,
                    price_paise=price,
                    filled_at=now,
                )
            )
        return fills

    def cancel(self, client_order_id: str) -> bool:
        """Cancel a working order; False when it is unknown or already filled."""
        known = self._orders.get(client_order_id)
        if known is None or known.status is not OrderStatus.OPEN:
            return False
        working = self._working.get(known.instrument_key, [])
        kept = [o for o in working if o.client_order_id != client_order_id]
        self._working[known.instrument_key] = kept
        self._working_count -= len(working) - len(kept)
        known.status = OrderStatus.CANCELLED
        return True

    def find_by_tag(self, client_order_id: str) -> Order | None:
        known = self._orders.get(client_order_id)
        return known.copy() if known else None

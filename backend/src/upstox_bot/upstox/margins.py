"""Futures margins from Upstox's margin API, as fractions of the contracts' value.

Live, a future is sized on the margin Upstox asks for one lot of it intraday (``POST
/v2/charges/margin``, product ``I``; API.md 6.5): its ``total_margin`` over the lot's value is
the fraction `RiskManager.margin_fractions` holds for it. Paper trading and backtests use
FUTURES_MARGIN_PERCENT instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from upstox_bot.domain import Instrument, InstrumentKind, paise_to_rupees

log = logging.getLogger(__name__)

BATCH = 20  # instruments per request (API.md 6.5)


class MarginSource(Protocol):
    """What fetching margins needs of the Upstox client."""

    async def margin(self, legs: Sequence[Mapping[str, Any]]) -> dict[str, Any]: ...


async def future_margin_fractions(
    client: MarginSource, futures: Sequence[tuple[Instrument, int]]
) -> dict[str, Decimal]:
    """The margin of one lot of each future as a fraction of its value.

    Args:
        client: the Upstox client.
        futures: (future, its price in paise); other kinds and unpriced ones are skipped.

    Returns:
        Fractions by instrument key; a future Upstox gave no usable figure for is left out (it
        falls back to FUTURES_MARGIN_PERCENT).

    Raises:
        UpstoxApiError: a request failed (the caller keeps the fractions it has).
    """
    priced = [
        (f, price)
        for f, price in futures
        if f.kind is InstrumentKind.FUTURE and price > 0 and f.lot_size > 0
    ]
    fractions: dict[str, Decimal] = {}
    for start in range(0, len(priced), BATCH):
        batch = priced[start : start + BATCH]
        answer = await client.margin(
            [
                {
                    "instrument_key": f.instrument_key,
                    "quantity": f.lot_size,
                    "transaction_type": "BUY",
                    "product": "I",
                    "price": float(paise_to_rupees(price)),
                }
                for f, price in batch
            ]
        )
        margins = answer.get("margins") or []
        for (future, price), margin in zip(batch, margins, strict=False):
            try:
                total = Decimal(str(margin.get("total_margin")))
            except (InvalidOperation, AttributeError):
                continue
            value = paise_to_rupees(price) * future.lot_size
            if total.is_finite() and total > 0 and value > 0:
                fractions[future.instrument_key] = total / value
            else:
                log.warning("margin.unusable", extra={"instrument_key": future.instrument_key})
    return fractions

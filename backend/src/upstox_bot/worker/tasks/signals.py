"""Queue "signals": what the configured strategy says about an instrument on its stored candles.

The trading decisions themselves are made by the account's engine, in tick order, on the orders
queue (that is what keeps them identical to the embedded harness); this queue answers scans.
"""

from __future__ import annotations

from typing import Any

from upstox_bot import live_events
from upstox_bot.db.repositories.candles import CandleRepository
from upstox_bot.db.session import session_scope
from upstox_bot.domain import ms_to_datetime
from upstox_bot.runtime import components
from upstox_bot.signals.series import CandleSeries
from upstox_bot.worker import events
from upstox_bot.worker.app import resources, task


@task("signals.evaluate", acks_late=True)
def evaluate(instrument_key: str) -> list[dict[str, Any]]:
    """Evaluate the strategy on the instrument's latest stored candles; publish and return
    what it says (type, strength, reason, indicators)."""
    res = resources()
    settings = res.settings
    strategy = components.strategy(settings)
    interval_s = settings.CANDLE_INTERVAL_MINUTES * 60
    capacity = max(strategy.startup_candles, 300)
    with session_scope(res.sessions) as session:
        candles = CandleRepository(session).latest(instrument_key, interval_s, capacity)
    if len(candles) < strategy.startup_candles:
        return []
    series = CandleSeries(instrument_key, interval_s, capacity)
    for candle in candles:
        series.append(candle)
    now = ms_to_datetime(candles[-1].end_ms)  # decided as the candle closes
    said = strategy.evaluate(series, position=None, now=now)
    out = [
        {
            "instrument_key": instrument_key,
            "strategy": strategy.name,
            "type": s.type.value,
            "strength": s.strength,
            "reason": s.reason,
            "indicators": dict(s.indicators),
            "candle_start_ms": candles[-1].start_ms,
            "status": "scan",
        }
        for s in said
    ]
    events.publish(res.redis, ((live_events.SIGNALS, item) for item in out))
    return out

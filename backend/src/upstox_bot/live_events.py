"""The live event stream: its channels, the JSON payload of each event, and the in-process hub.

What a harness publishes and the API serves on /api/v1/ws, kept apart from both so that neither
imports the other for it. `EventHub.publish(channel, payload)` fans out to subscribers. Every
subscriber has a bounded queue. Publishing never waits: a subscriber whose queue is full is
dropped (its connection is closed), so one slow client can never hold up the trading loop or the
other clients. `publish` must be called on the event loop that serves the API (the embedded
harness runs both on one loop); from another thread use `publish_threadsafe`. In the
distributed harness a Redis pub/sub reader task calls `publish` with what the workers sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from upstox_bot.domain import (
    AccountSnapshot,
    Candle,
    Order,
    Signal,
    SignalStatus,
    Tick,
    ms_to_datetime,
    paise_to_rupees,
)

log = logging.getLogger(__name__)

TICKS = "ticks"
CANDLES = "candles"
SIGNALS = "signals"
ORDERS = "orders"
POSITIONS = "positions"
ACCOUNT = "account"
CHANNELS: tuple[str, ...] = (TICKS, CANDLES, SIGNALS, ORDERS, POSITIONS, ACCOUNT)
SYMBOL_CHANNELS = frozenset({TICKS, CANDLES})  # filtered by the subscriber's symbols
DEFAULT_QUEUE_SIZE = 256

Message = dict[str, Any]


class Subscriber:
    """One client: its channels, its symbol filter and its bounded outbox."""

    def __init__(self, queue_size: int) -> None:
        self.channels: set[str] = set()
        self.symbols: frozenset[str] = frozenset()  # empty: every symbol
        self.queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=queue_size)
        self.dropped = asyncio.Event()
        self.closing: tuple[int, str] | None = None  # why the server ends this stream

    def end(self, code: int, reason: str) -> None:
        """End this client's stream with a WebSocket close code and reason (e.g. its key was
        revoked); its connection handler closes the socket."""
        self.closing = (code, reason)
        self.dropped.set()

    def wants(self, channel: str, payload: Mapping[str, Any]) -> bool:
        """Whether this event is for this subscriber."""
        if channel not in self.channels:
            return False
        if channel not in SYMBOL_CHANNELS or not self.symbols:
            return True
        return (
            payload.get("instrument_key") in self.symbols
            or payload.get("trading_symbol") in self.symbols
        )

    def offer(self, message: Message) -> bool:
        """Queue a message without waiting; False when the outbox is full."""
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            return False
        return True


class EventHub:
    """Fans events out to WebSocket subscribers; drops any subscriber that falls behind."""

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self._subscribers: set[Subscriber] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.published = 0
        self.dropped = 0

    def subscribe(self) -> Subscriber:
        """A new subscriber (on no channel yet); call on the API's event loop."""
        self._loop = asyncio.get_running_loop()
        subscriber = Subscriber(self.queue_size)
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Forget a subscriber (its connection ended)."""
        self._subscribers.discard(subscriber)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def has_subscribers(self, channel: str) -> bool:
        """Whether anybody listens on `channel`: skip building payloads nobody reads."""
        # A copy first: the trading loop asks from its own thread while clients come and go.
        return any(channel in s.channels for s in tuple(self._subscribers))

    def publish(self, channel: str, payload: Mapping[str, Any]) -> int:
        """Send an event to every subscriber of `channel`, never waiting.

        Args:
            channel: one of CHANNELS.
            payload: JSON-ready data (see the *_payload helpers); ticks and candles carry
                "instrument_key" (and "trading_symbol") for the subscribers' symbol filter.

        Returns:
            How many subscribers got it. Subscribers whose outbox was full are dropped.
        """
        if not self._subscribers:
            return 0
        message: Message = {"type": "event", "channel": channel, "data": payload}
        delivered = 0
        for subscriber in list(self._subscribers):
            if not subscriber.wants(channel, payload):
                continue
            if subscriber.offer(message):
                delivered += 1
            else:
                self.drop(subscriber)
        self.published += 1
        return delivered

    def publish_threadsafe(self, channel: str, payload: Mapping[str, Any]) -> None:
        """`publish` from a thread other than the API's event loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop is shutting down
            loop.call_soon_threadsafe(self.publish, channel, dict(payload))

    def drop(self, subscriber: Subscriber) -> None:
        """Cut a subscriber off (its connection handler closes the socket)."""
        if subscriber in self._subscribers:
            self._subscribers.discard(subscriber)
            self.dropped += 1
            log.warning("ws.slow_client_dropped", extra={"queue_size": self.queue_size})
        subscriber.dropped.set()


# --- payloads: the JSON the lead's loop (or the Redis reader) publishes --------------------


def _iso(at: datetime) -> str:
    return at.isoformat()


def _money(paise: int | None) -> str | None:
    return None if paise is None else str(paise_to_rupees(paise))


def tick_payload(tick: Tick, trading_symbol: str | None = None) -> dict[str, Any]:
    """A tick for the "ticks" channel (prices in rupees as strings)."""
    return {
        "instrument_key": tick.instrument_key,
        "trading_symbol": trading_symbol,
        "at": _iso(ms_to_datetime(tick.ts_ms)),
        "ltp": _money(tick.ltp_paise),
        "ltq": tick.ltq,
        "volume": tick.volume,
        "bid": _money(tick.bid_paise),
        "ask": _money(tick.ask_paise),
    }


def candle_payload(candle: Candle, trading_symbol: str | None = None) -> dict[str, Any]:
    """A closed candle for the "candles" channel."""
    return {
        "instrument_key": candle.instrument_key,
        "trading_symbol": trading_symbol,
        "interval_s": candle.interval_s,
        "start_at": _iso(candle.start_at),
        "open": _money(candle.open_paise),
        "high": _money(candle.high_paise),
        "low": _money(candle.low_paise),
        "close": _money(candle.close_paise),
        "volume": candle.volume,
    }


def signal_payload(signal: Signal, status: SignalStatus) -> dict[str, Any]:
    """A signal and its status for the "signals" channel."""
    return {
        "signal_id": signal.signal_id,
        "instrument_key": signal.instrument_key,
        "strategy": signal.strategy,
        "type": signal.type.value,
        "status": status.value,
        "strength": signal.strength,
        "reason": signal.reason,
        "price": _money(signal.price_paise),
        "candle_start_at": _iso(ms_to_datetime(signal.candle_start_ms)),
        "created_at": _iso(signal.created_at),
    }


def order_payload(order: Order) -> dict[str, Any]:
    """An order's current state for the "orders" channel."""
    return {
        "client_order_id": order.client_order_id,
        "instrument_key": order.instrument_key,
        "side": order.side.value,
        "quantity": order.quantity,
        "purpose": order.purpose.value,
        "status": order.status.value,
        "filled_quantity": order.filled_quantity,
        "average_price": _money(order.average_price_paise),
        "rejection_reason": order.rejection_reason,
        "updated_at": _iso(order.updated_at),
    }


def account_payload(snapshot: AccountSnapshot, as_of: datetime | None = None) -> dict[str, Any]:
    """The account's day figures for the "account" channel; `as_of` is the market time they
    hold at (the engine's clock), when the publisher knows it."""
    headroom = max(0, snapshot.loss_limit_paise + snapshot.day_pnl_paise)
    return {
        "as_of": _iso(as_of) if as_of is not None else None,
        "trading_date": snapshot.trading_date,
        "capital": _money(snapshot.capital_paise),
        "realised_pnl": _money(snapshot.realised_pnl_paise),
        "unrealised_pnl": _money(snapshot.unrealised_pnl_paise),
        "day_pnl": _money(snapshot.day_pnl_paise),
        "charges": _money(snapshot.charges_paise),
        "open_positions": snapshot.open_positions,
        "trades": snapshot.trades,
        "orders": snapshot.orders,
        "daily_loss_limit": _money(snapshot.loss_limit_paise),
        "loss_limit_headroom": _money(headroom),
        "loss_limit_hit": snapshot.loss_limit_hit,
        "kill_switch": snapshot.kill_switch,
    }


def unknown_channels(channels: Collection[str]) -> list[str]:
    """The unknown names among `channels` (empty when all are valid)."""
    return sorted(set(channels) - set(CHANNELS))

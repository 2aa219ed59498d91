"""What the distributed harness keeps in Redis: key names, codecs, the paper book, rate windows.

Redis holds transport and coordination state (queues, leases, cursors, tick batches, the rate
windows, the paper broker's book, the positions snapshot). PostgreSQL holds the record. Every
key lives under the `ub:` prefix; a deployment gives the bot its own Redis database.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from upstox_bot.domain import (
    TICK_FIELDS,
    ClientOrderId,
    ExitReason,
    Fill,
    Order,
    OrderPurpose,
    OrderStatus,
    OrderType,
    Position,
    Side,
    SignalId,
    Tick,
)
from upstox_bot.risk.rate_limit import WINDOW_MS, OrderRateLimiter

PREFIX = "ub"
REDIS_RETRIES = 60  # with the backoff capped at 0.5 s: rides out a Redis restart of ~30 s


class Keys:
    """Redis key names (one place, so that docs/deployment.md can list them)."""

    @staticmethod
    def account_lock(account: str) -> str:
        return f"{PREFIX}:lock:account:{account}"

    @staticmethod
    def engine(account: str) -> str:
        """Hash: token (the engine instance that wrote last), clock_ms, cursor:<shard>."""
        return f"{PREFIX}:engine:{account}"

    @staticmethod
    def batch(account: str, shard: str, seq: int) -> str:
        return f"{PREFIX}:batch:{account}:{shard}:{seq}"

    @staticmethod
    def feed_lease(shard: str) -> str:
        return f"{PREFIX}:lease:feed:{shard}"

    @staticmethod
    def feed_state(shard: str) -> str:
        """Hash: next_seq, ticks_done, last_seq (set when the shard played its last tick)."""
        return f"{PREFIX}:feed:{shard}"

    @staticmethod
    def feed_launch(shard: str) -> str:
        return f"{PREFIX}:feed:{shard}:launch"

    shards = f"{PREFIX}:feed:shards"  # hash: shard -> spec (JSON) of the sessions to play

    @staticmethod
    def paper_orders(account: str) -> str:
        return f"{PREFIX}:paper:{account}:orders"

    @staticmethod
    def paper_fills(account: str) -> str:
        return f"{PREFIX}:paper:{account}:fills"

    @staticmethod
    def sent(account: str) -> str:
        """Sorted set of order send times (epoch ms) in the rate windows."""
        return f"{PREFIX}:sent:{account}"

    @staticmethod
    def positions(account: str) -> str:
        """Hash: instrument_key -> the open position (JSON), rewritten after every commit."""
        return f"{PREFIX}:positions:{account}"

    @staticmethod
    def ingest_sampled(shard: str) -> str:
        return f"{PREFIX}:ingest:{shard}:sampled"

    @staticmethod
    def latencies(account: str) -> str:
        """List: recent candle-close-to-order latencies (wall seconds), newest first."""
        return f"{PREFIX}:metrics:{account}:candle_to_order"

    @staticmethod
    def holder_launch(account: str) -> str:
        return f"{PREFIX}:lock:account:{account}:launch"

    @staticmethod
    def wake(account: str) -> str:
        """Stream: a note per tick batch stored for the account (wakes its kernel's holder)."""
        return f"{PREFIX}:wake:{account}"

    @staticmethod
    def controls(account: str) -> str:
        """Stream: the commands sent to the account's kernel (JSON), in order."""
        return f"{PREFIX}:control:{account}"

    @staticmethod
    def reply(command_id: str) -> str:
        """List: the kernel's answer to one command."""
        return f"{PREFIX}:reply:{command_id}"

    @staticmethod
    def view(account: str) -> str:
        """String: the account kernel's last committed view (JSON), while it runs."""
        return f"{PREFIX}:view:{account}"

    @staticmethod
    def session_pause(account: str) -> str:
        """String: the market time (epoch ms) at which the simulated feeds wait, while set."""
        return f"{PREFIX}:pause:{account}"

    beat_heartbeat = f"{PREFIX}:beat:heartbeat"


def redis_client(url: str) -> redis.Redis:
    """A Redis client that retries through connection errors (a restarting server)."""
    return redis.Redis.from_url(
        url,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), REDIS_RETRIES),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        socket_timeout=10,
        socket_connect_timeout=2,
        health_check_interval=15,
    )


# --- codecs ---------------------------------------------------------------------------------


def encode_ticks(ticks: Iterable[Tick]) -> list[dict[str, Any]]:
    """Ticks as JSON-ready objects of their set fields (None fields left out)."""
    out = []
    for tick in ticks:
        values = {name: getattr(tick, name) for name in TICK_FIELDS}
        out.append({k: v for k, v in values.items() if v is not None})
    return out


def decode_tick(values: Mapping[str, Any]) -> Tick:
    """The Tick of one object made by `encode_ticks`."""
    return Tick(**values)


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def order_to_json(order: Order) -> str:
    return json.dumps(
        {
            "client_order_id": order.client_order_id,
            "instrument_key": order.instrument_key,
            "side": order.side.value,
            "quantity": order.quantity,
            "lots": order.lots,
            "purpose": order.purpose.value,
            "order_type": order.order_type.value,
            "status": order.status.value,
            "created_at": order.created_at.isoformat(),
            "updated_at": order.updated_at.isoformat(),
            "reason": order.reason,
            "limit_price_paise": order.limit_price_paise,
            "signal_id": order.signal_id,
            "exit_reason": order.exit_reason.value if order.exit_reason else None,
            "broker_order_id": order.broker_order_id,
            "filled_quantity": order.filled_quantity,
            "average_price_paise": order.average_price_paise,
            "rejection_reason": order.rejection_reason,
            "filled_value_paise": order.filled_value_paise,
        }
    )


def order_from_json(text: str | bytes) -> Order:
    d = json.loads(text)
    return Order(
        client_order_id=ClientOrderId(d["client_order_id"]),
        instrument_key=d["instrument_key"],
        side=Side(d["side"]),
        quantity=d["quantity"],
        lots=d["lots"],
        purpose=OrderPurpose(d["purpose"]),
        order_type=OrderType(d["order_type"]),
        status=OrderStatus(d["status"]),
        created_at=datetime.fromisoformat(d["created_at"]),
        updated_at=datetime.fromisoformat(d["updated_at"]),
        reason=d["reason"],
        limit_price_paise=d["limit_price_paise"],
        signal_id=SignalId(d["signal_id"]) if d["signal_id"] else None,
        exit_reason=ExitReason(d["exit_reason"]) if d["exit_reason"] else None,
        broker_order_id=d["broker_order_id"],
        filled_quantity=d["filled_quantity"],
        average_price_paise=d["average_price_paise"],
        rejection_reason=d["rejection_reason"],
        filled_value_paise=d.get("filled_value_paise", 0),
    )


def fill_to_dict(fill: Fill) -> dict[str, Any]:
    return {
        "fill_id": fill.fill_id,
        "client_order_id": fill.client_order_id,
        "broker_order_id": fill.broker_order_id,
        "instrument_key": fill.instrument_key,
        "side": fill.side.value,
        "quantity": fill.quantity,
        "price_paise": fill.price_paise,
        "filled_at": fill.filled_at.isoformat(),
    }


def fill_from_dict(d: dict[str, Any]) -> Fill:
    return Fill(
        fill_id=d["fill_id"],
        client_order_id=ClientOrderId(d["client_order_id"]),
        broker_order_id=d["broker_order_id"],
        instrument_key=d["instrument_key"],
        side=Side(d["side"]),
        quantity=d["quantity"],
        price_paise=d["price_paise"],
        filled_at=datetime.fromisoformat(d["filled_at"]),
    )


def position_to_dict(position: Position) -> dict[str, Any]:
    """A position as JSON-ready values (paise, ISO times) for the snapshot and the events."""
    return {
        "instrument_key": position.instrument_key,
        "direction": position.direction.value,
        "quantity": position.quantity,
        "lots": position.lots,
        "entry_price_paise": position.entry_price_paise,
        "entry_at": position.entry_at.isoformat(),
        "entry_order_id": position.entry_order_id,
        "stop_paise": position.stop_paise,
        "target_paise": position.target_paise,
        "trailing_active": position.trailing_active,
        "trail_stop_paise": position.trail_stop_paise,
        "best_price_paise": position.best_price_paise,
        "last_price_paise": position.last_price_paise,
        "unrealised_pnl_paise": position.unrealised_pnl_paise,
        "exit_pending": position.exit_pending,
        "strategy": position.strategy,
    }


# --- the paper broker's book ----------------------------------------------------------------


class RedisPaperBook:
    """The PaperBook of one account in two Redis hashes (orders by tag; fills by tag)."""

    def __init__(self, client: redis.Redis, account: str) -> None:
        self._redis = client
        self._orders = Keys.paper_orders(account)
        self._fills = Keys.paper_fills(account)

    def save_order(self, order: Order) -> None:
        self._redis.hset(self._orders, order.client_order_id, order_to_json(order))

    def save_fill(self, order: Order, fill: Fill) -> None:
        fills = [fill_to_dict(f) for f in self.fills(fill.client_order_id)]
        if any(f["fill_id"] == fill.fill_id for f in fills):
            return
        fills.append(fill_to_dict(fill))
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self._fills, fill.client_order_id, json.dumps(fills))
        pipe.hset(self._orders, order.client_order_id, order_to_json(order))
        pipe.execute()

    def get(self, client_order_id: str) -> Order | None:
        raw = cast(bytes | None, self._redis.hget(self._orders, client_order_id))
        return order_from_json(raw) if raw is not None else None

    def fills(self, client_order_id: str) -> list[Fill]:
        raw = cast(bytes | None, self._redis.hget(self._fills, client_order_id))
        return [fill_from_dict(d) for d in json.loads(raw)] if raw else []

    def working(self) -> list[Order]:
        stored = cast(dict[bytes, bytes], self._redis.hgetall(self._orders))
        orders = [order_from_json(raw) for raw in stored.values()]
        working = [o for o in orders if o.status is OrderStatus.OPEN]
        return sorted(working, key=lambda o: (o.created_at, o.client_order_id))

    def clear(self) -> None:
        self._redis.delete(self._orders, self._fills)


# --- the order rate windows -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Window:
    client: redis.Redis
    key: str
    horizon_ms: int


class RedisOrderRateLimiter(OrderRateLimiter):
    """The order rate limiter with its windows shared in Redis.

    The engine that holds the account lock checks against its own copy of the windows (no
    round trip per tick) and writes every order it counts through to a Redis sorted set; an
    engine built on another worker starts from that set merged with the rate_limit_logs table
    (`restore`), so the limits hold across workers, restarts and a Redis restart.
    """

    def __init__(
        self, max_per_minute: int, min_interval_s: int, *, client: redis.Redis, account: str
    ) -> None:
        super().__init__(max_per_minute, min_interval_s)
        horizon = max(WINDOW_MS, self.min_interval_ms)
        self._window = _Window(client, Keys.sent(account), horizon)
        self._seq = 0

    def shared_sent_ms(self, now_ms: int) -> list[int]:
        """Send times (epoch ms) in Redis within the windows that matter at `now_ms`."""
        w = self._window
        members = cast(list[bytes], w.client.zrangebyscore(w.key, now_ms - w.horizon_ms, "+inf"))
        return [int(m.split(b":", 1)[0]) for m in members]

    def restore(self, sent_ms: Iterable[int]) -> None:
        """Rebuild the windows from `sent_ms` (the database's log) and the shared Redis set."""
        times = set(sent_ms)
        latest = max(times, default=0)
        # If Redis is away, the database's log alone still holds every order sent.
        with contextlib.suppress(redis.RedisError):
            times.update(self.shared_sent_ms(latest - self._window.horizon_ms))
        super().restore(times)

    def record(self, now_ms: int) -> None:
        super().record(now_ms)
        self._seq += 1
        w = self._window
        pipe = w.client.pipeline(transaction=False)
        pipe.zadd(w.key, {f"{now_ms}:{id(self)}:{self._seq}": now_ms})
        pipe.zremrangebyscore(w.key, "-inf", now_ms - w.horizon_ms - 1)
        pipe.expire(w.key, 86_400)
        pipe.execute()

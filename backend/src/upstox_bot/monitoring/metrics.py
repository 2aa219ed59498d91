"""Prometheus metrics of the bot, rendered per scrape from a snapshot of its state."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsSnapshot:
    """What a scrape reports; money in paise."""

    ticks: int | None  # ticks processed since start; None when no engine runs here
    orders_by_status: Mapping[str, int] = field(default_factory=dict)
    open_positions: int = 0
    day_pnl_paise: int = 0
    loss_limit_paise: int = 0
    kill_switch: bool = False
    ws_clients: int = 0
    ws_dropped: int = 0
    rejections_by_rule: Mapping[str, int] = field(default_factory=dict)
    feed_lag_s: float | None = None  # wall seconds since the engine processed its last tick
    candle_to_order_s: Sequence[float] = ()  # recent latencies, wall seconds
    queue_depth: Mapping[str, int] = field(default_factory=dict)  # Celery queues (Redis)


def render(snapshot: MetricsSnapshot) -> bytes:
    """The Prometheus text exposition of `snapshot`."""
    registry = CollectorRegistry(auto_describe=False)
    if snapshot.ticks is not None:
        Counter("upstox_bot_ticks", "Market ticks processed by the engine.", registry=registry).inc(
            snapshot.ticks
        )
    orders = Gauge(
        "upstox_bot_orders", "Orders of the account by state.", ["status"], registry=registry
    )
    for status, count in sorted(snapshot.orders_by_status.items()):
        orders.labels(status=status).set(count)
    Gauge("upstox_bot_open_positions", "Open positions.", registry=registry).set(
        snapshot.open_positions
    )
    Gauge(
        "upstox_bot_day_pnl_rupees", "The day's P&L, realised + unrealised.", registry=registry
    ).set(snapshot.day_pnl_paise / 100)
    Gauge("upstox_bot_daily_loss_limit_rupees", "The daily loss limit.", registry=registry).set(
        snapshot.loss_limit_paise / 100
    )
    Gauge(
        "upstox_bot_loss_limit_headroom_rupees",
        "How much more the day may lose before new entries stop.",
        registry=registry,
    ).set(max(0, snapshot.loss_limit_paise + snapshot.day_pnl_paise) / 100)
    Gauge("upstox_bot_kill_switch", "1 while the kill switch is on.", registry=registry).set(
        1 if snapshot.kill_switch else 0
    )
    Gauge("upstox_bot_ws_clients", "Connected WebSocket clients.", registry=registry).set(
        snapshot.ws_clients
    )
    Counter(
        "upstox_bot_ws_dropped", "WebSocket clients dropped for being slow.", registry=registry
    ).inc(snapshot.ws_dropped)
    rejections = Gauge(
        "upstox_bot_rejections",
        "Entries refused by the risk manager, by the rule that refused them.",
        ["rule"],
        registry=registry,
    )
    for rule, count in sorted(snapshot.rejections_by_rule.items()):
        rejections.labels(rule=rule).set(count)
    if snapshot.feed_lag_s is not None:
        Gauge(
            "upstox_bot_feed_lag_seconds",
            "Seconds since the engine processed its last tick (a dead feed grows it).",
            registry=registry,
        ).set(snapshot.feed_lag_s)
    latency = Gauge(
        "upstox_bot_candle_to_order_seconds",
        "Wall time from the tick that closed a candle to its entry orders being sent.",
        ["quantile"],
        registry=registry,
    )
    if snapshot.candle_to_order_s:
        ordered = sorted(snapshot.candle_to_order_s)
        for q in (0.5, 0.9, 0.99):
            latency.labels(quantile=str(q)).set(
                ordered[min(len(ordered) - 1, int(q * len(ordered)))]
            )
    depth = Gauge(
        "upstox_bot_queue_depth",
        "Tasks waiting in each Celery queue.",
        ["queue"],
        registry=registry,
    )
    for queue, waiting in sorted(snapshot.queue_depth.items()):
        depth.labels(queue=queue).set(waiting)
    return generate_latest(registry)

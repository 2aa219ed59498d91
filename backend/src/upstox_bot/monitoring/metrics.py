"""Prometheus metrics of the bot, rendered per scrape from a snapshot of its state."""

from __future__ import annotations

from collections.abc import Mapping
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
    return generate_latest(registry)

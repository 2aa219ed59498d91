"""The embedded harness on the real Upstox feed (`upstox-bot run --market upstox`).

Ticks come from Market Data Feed V3 for the ranked F&O stocks of the universe (refresh it first
with `upstox-bot universe refresh`). Orders go to the paper broker, or to Upstox when the trader
has switched live trading on (PAPER_TRADING=false and LIVE_TRADING_ENABLED=true, after the
paper period: runtime/live_switch.py). Market time is the later of the wall clock and the last
trade time. Once a second the loop runs the engine's timer, pauses or resumes entries from the
token's state and the order gate's, applies what the live broker reported through the order
desk (fills, ends, acknowledgements, refusals, look-ups), tends the working orders, and
commits; once a minute it reconciles with Upstox.

No outside failure ends the run: a refused token pauses entries while the feed, the portfolio
stream and the broker wait for the next login and then resume by themselves; a feed that fails
is started again; a failing step of the loop is logged and tried again the next second. Only
stop() (Ctrl-C, SIGTERM, the duration) ends it, and positions keep their exits until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time as walltime
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from upstox_bot.api.hub import TICKS, tick_payload
from upstox_bot.db.repositories.symbols import SymbolRepository
from upstox_bot.db.session import session_scope
from upstox_bot.domain import Instrument, InstrumentKind, Order, OrderPurpose, Tick
from upstox_bot.errors import ConfigError
from upstox_bot.monitoring.alerts import AlertKind
from upstox_bot.trading.brokers.paper import PaperBroker
from upstox_bot.trading.brokers.upstox import UpstoxBroker, reconcile_books
from upstox_bot.trading.desk import OrderDesk
from upstox_bot.trading.order_gate import OrderGate
from upstox_bot.upstox.client import PlacementPolicy, UpstoxClient
from upstox_bot.upstox.live import UpstoxOrderGateway, UpstoxTickSource
from upstox_bot.upstox.token_store import TokenGuard, TokenStore, token_store_from_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from upstox_bot.config import Settings
    from upstox_bot.runtime.embedded import EmbeddedBot

log = logging.getLogger(__name__)

TIMER_S = 1.0
RECONCILE_S = 60.0
FEED_RESTART_S = 5.0  # a feed that failed altogether is started again after this pause


def universe_instruments(sessions: sessionmaker[Session], limit: int) -> list[Instrument]:
    """The ranked F&O stocks of the stored universe, most liquid first.

    Raises:
        ConfigError: the universe was never refreshed.
    """
    with session_scope(sessions) as session:
        records = SymbolRepository(session).find(
            kind=InstrumentKind.EQUITY, ranked_only=True, exclude_banned=False, limit=limit
        )
    if not records:
        raise ConfigError(
            "no F&O universe in the database: run `upstox-bot universe refresh` first"
        )
    return [r.instrument for r in records]


def _now_ms() -> int:
    return int(walltime.time() * 1000)


def current_token(store: TokenStore) -> str:
    """The token to use now ("" when there is none): read on every call and connect, so a
    login takes effect at the next one."""
    secret = store.access_token(datetime.now(UTC))
    return secret.get_secret_value() if secret is not None else ""


def live_broker(settings: Settings, store: TokenStore, guard: TokenGuard) -> UpstoxBroker:
    """The Upstox broker of these settings (started by the caller): market protection, algo
    name, the tag look-up window; a token Upstox refuses is reported to ``guard``; entries are
    refused before any call while the token is unusable (exits always go)."""

    def token() -> str:
        return current_token(store)

    client = UpstoxClient(
        access_token=token,
        api_base_url=settings.UPSTOX_API_BASE_URL,
        algo_name=settings.UPSTOX_ALGO_NAME,
        placement=PlacementPolicy(
            market_protection=float(settings.MARKET_PROTECTION),
            lookup_window_s=settings.UPSTOX_TAG_LOOKUP_SECONDS,
        ),
    )
    gateway = UpstoxOrderGateway(
        client,
        access_token=token,
        api_base_url=settings.UPSTOX_API_BASE_URL,
        on_auth_failure=lambda reason: guard.report_rejected(datetime.now(UTC), reason),
    )

    def can_place(order: Order) -> str | None:
        if order.purpose is OrderPurpose.EXIT or guard.entries_allowed(datetime.now(UTC)):
            return None
        return "Upstox token expired or missing: log in again"

    return UpstoxBroker(
        gateway,
        clock=lambda: datetime.now(UTC),
        can_place=can_place,
        lookup_window_s=settings.UPSTOX_TAG_LOOKUP_SECONDS,
    )


async def play_upstox(bot: EmbeddedBot) -> None:
    """Trade on the real feed until stop() is called (or the duration, in market minutes)."""
    settings = bot.settings
    store = token_store_from_settings(settings, bot.sessions)
    guard = TokenGuard(store, alerts=bot.alerts)
    bot.desk.token_usable = lambda: guard.entries_allowed(datetime.now(UTC))

    broker: UpstoxBroker | None = None
    if settings.live_trading:
        broker = live_broker(settings, store, guard)
        broker.start()
        bot.broker = broker  # type: ignore[assignment]
        bot.executor.broker = broker
        # Upstox's book may lag: an order is sent again only after this long without it.
        bot.executor.lookup_window_ms = int(settings.UPSTOX_TAG_LOOKUP_SECONDS * 1000)
        log.warning(
            "live.trading",
            extra={"broker": "upstox", "market_protection": str(settings.MARKET_PROTECTION)},
        )

    bot.clock.advance_to(_now_ms())
    bot.recover_today()
    if broker is not None:
        adopt_recovered_orders(bot.desk, broker)

    end_ms: int | None = None
    if bot.options.duration_minutes is not None:
        end_ms = bot.clock.now_ms() + int(bot.options.duration_minutes * 60_000)
    feed = asyncio.create_task(_feed(bot, store, guard), name="upstox-feed")
    timer = asyncio.create_task(_timer(bot, guard, broker, end_ms), name="live-timer")
    try:
        # The timer ends when stop() is called or the duration is over; the feed task never
        # ends on its own (it waits for a login, and is started again after a failure).
        await asyncio.wait({feed, timer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        bot.stop()
        for task in (feed, timer):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            bot.desk.drain()
        bot.flush()
        if broker is not None:
            broker.stop()
        bot.stats.finished = True


def adopt_recovered_orders(desk: OrderDesk, broker: UpstoxBroker) -> None:
    """Hand the orders left working before a restart to the live broker: their fills follow.

    An order the restart left SUBMITTING and that recovery could not settle yet (not in the
    book: it may still show there, or the token is gone) is looked up by its tag from the
    broker's loop until it is found, or until the look-up window since it was sent has passed
    with nothing (then it is sent again, never before).
    """
    executor = desk.executor
    for client_order_id, order in list(desk.engine.orders.items()):
        unknown = executor.unresolved.pop(client_order_id, None)
        if unknown is not None:
            desk.unknown.add(client_order_id)
            broker.track(order, unknown_since=order.updated_at)
        else:
            broker.track(order)


async def _feed(bot: EmbeddedBot, store: TokenStore, guard: TokenGuard) -> None:
    """Ticks from the Upstox feed until cancelled; started again whenever it fails."""
    failures = 0
    while not bot.stopping:
        source = UpstoxTickSource(
            api_base_url=bot.settings.UPSTOX_API_BASE_URL,
            access_token=lambda: current_token(store),
            instrument_keys=list(bot.instruments),
            clock=lambda: datetime.now(UTC),
            is_market_open=bot.calendar.is_open,
            resume_on_new_token=True,
            on_unauthorized=lambda refused: guard.report_rejected(
                datetime.now(UTC), "the market feed's authorize answered 401", token=refused
            ),
        )
        try:
            async with source:
                async for tick in source.ticks():
                    failures = 0
                    try:
                        _on_tick(bot, tick)
                    except Exception:  # one tick must not stop the feed (the timer goes on)
                        bot.stats.tick_errors += 1
                        log.exception("live.tick.failed", extra={"key": tick.instrument_key})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures += 1
            log.exception("live.feed.failed")
            bot.alerts.notify(
                AlertKind.FEED_DEAD,
                f"The Upstox feed failed ({type(exc).__name__}: {exc}); starting it again.",
                key=f"feed:{type(exc).__name__}",
            )
        if not bot.stopping:
            await asyncio.sleep(min(60.0, FEED_RESTART_S * failures or FEED_RESTART_S))


def _on_tick(bot: EmbeddedBot, tick: Tick) -> None:
    bot.clock.advance_to(max(tick.ts_ms, _now_ms()))
    broker = bot.broker
    if isinstance(broker, PaperBroker) and broker.working_count:
        bot.executor.apply_fills(broker.on_tick(tick))
    intents = bot.engine.on_tick(tick)
    if intents:
        bot.executor.execute(intents)
    bot.sample_tick(tick)
    bot.stats.ticks += 1
    bot.stats.last_tick_wall = walltime.monotonic()
    bot.stats.market_now = bot.clock.now()
    hub = bot.hub
    if hub is not None and hub.has_subscribers(TICKS):
        instrument = bot.instruments.get(tick.instrument_key)
        hub.publish(TICKS, tick_payload(tick, instrument.trading_symbol if instrument else None))


def entries_paused_reason(guard: TokenGuard, gate: OrderGate, now: datetime) -> str | None:
    """Why new entries wait now (the token, Upstox refusing the account's orders), or None."""
    reasons = []
    if not guard.entries_allowed(now):
        reasons.append(f"Upstox token {guard.token_state(now).value}")
    if gate.blocked and gate.cause is not None:
        reasons.append(f"Upstox refuses orders ({gate.cause.value})")
    return "; ".join(reasons) or None


async def _timer(
    bot: EmbeddedBot, guard: TokenGuard, broker: UpstoxBroker | None, end_ms: int | None
) -> None:
    last_reconcile = walltime.monotonic()
    while not bot.stopping:
        await asyncio.sleep(TIMER_S)
        try:
            now = datetime.now(UTC)
            bot.clock.advance_to(_now_ms())
            bot.desk.drain()  # first: a refusal it reports pauses entries at once
            bot.engine.risk.entries_paused = entries_paused_reason(guard, bot.desk.gate, now)
            bot.executor.execute(bot.engine.on_timer(bot.clock.now_ms()))
            if broker is None and bot.executor.unresolved:
                bot.executor.resolve_unresolved()
            bot.stats.recent.append((walltime.monotonic(), bot.stats.ticks))
            bot.flush()
            if broker is not None and walltime.monotonic() - last_reconcile >= RECONCILE_S:
                last_reconcile = walltime.monotonic()
                await _reconcile(bot, broker, now)
        except Exception:  # a failed step is tried again the next second: never stop here
            bot.stats.timer_errors += 1
            log.exception("live.timer.failed")
        if end_ms is not None and bot.clock.now_ms() >= end_ms:
            bot.stop()


async def _reconcile(bot: EmbeddedBot, broker: UpstoxBroker, now: datetime) -> None:
    """Compare the bot's books with Upstox's (reads on the broker's loop, awaited here)."""
    try:
        broker_orders, broker_positions = await broker.books()
    except Exception as exc:
        log.warning("reconcile.unavailable", extra={"error": str(exc)})
        return
    engine = bot.engine
    # An order still on its way, or younger than Upstox's book lag, is not a mismatch yet.
    settled_before = now - timedelta(seconds=bot.settings.UPSTOX_TAG_LOOKUP_SECONDS)
    unsettled = bot.desk.busy() | {
        cid for cid, o in engine.orders.items() if o.updated_at >= settled_before
    }
    report = reconcile_books(
        bot_orders=list(engine.orders.values()),
        bot_positions=list(engine.positions.values()),
        broker_orders=broker_orders,
        broker_positions=broker_positions,
        at=now,
        ignore_tags=unsettled,
    )
    if not report.clean:
        log.warning(
            "reconcile.mismatch",
            extra={"orders": len(report.orders), "positions": len(report.positions)},
        )
        bot.alerts.notify(
            AlertKind.RECONCILIATION_MISMATCH,
            f"{len(report.orders)} order and {len(report.positions)} position "
            "difference(s) with Upstox",
        )

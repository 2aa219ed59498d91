"""The embedded harness on the real Upstox feed (`upstox-bot run --market upstox`).

Ticks come from Market Data Feed V3 for the ranked F&O stocks of the universe (refresh it first
with `upstox-bot universe refresh`). Orders go to the paper broker, or to Upstox when the trader
has switched live trading on (PAPER_TRADING=false and LIVE_TRADING_ENABLED=true). Market time
is the later of the wall clock and the last trade time. Once a second the loop runs the engine's
timer, pauses or resumes entries from the token's state, applies the live broker's fills and
closures, and commits; once a minute it reconciles with Upstox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time as walltime
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from upstox_bot.api.hub import TICKS, tick_payload
from upstox_bot.db.repositories.symbols import SymbolRepository
from upstox_bot.db.session import session_scope
from upstox_bot.domain import IST, Instrument, InstrumentKind, Order, OrderPurpose, Tick
from upstox_bot.errors import ConfigError, UpstoxBotError
from upstox_bot.monitoring.alerts import AlertKind
from upstox_bot.runtime import components
from upstox_bot.trading.brokers.upstox import OrderClosed, UpstoxBroker
from upstox_bot.upstox.client import UpstoxClient
from upstox_bot.upstox.holidays import HolidaySource, fetch_calendar_days, store_calendar_days
from upstox_bot.upstox.live import UpstoxOrderGateway, UpstoxTickSource, reconcile
from upstox_bot.upstox.margins import MarginSource, future_margin_fractions
from upstox_bot.upstox.token_store import TokenGuard, token_store_from_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from upstox_bot.config import Settings
    from upstox_bot.monitoring.alerts import AlertDispatcher
    from upstox_bot.runtime.embedded import EmbeddedBot
    from upstox_bot.runtime.kernel import AccountKernel

log = logging.getLogger(__name__)

TIMER_S = 1.0
RECONCILE_S = 60.0


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


def fno_contracts(
    sessions: sessionmaker[Session], underlyings: Iterable[Instrument], kind: InstrumentKind
) -> list[tuple[Instrument, int]]:
    """The stored futures (or options) of the given stocks: the contracts of Upstox's instrument
    file, with its expiry dates (stored by `upstox-bot universe refresh`), each with its stock's
    last stored price in paise (0 when none is known)."""
    with session_scope(sessions) as session:
        repo = SymbolRepository(session)
        out: list[tuple[Instrument, int]] = []
        for stock in underlyings:
            known = repo.get_or_none(stock.instrument_key)
            price = (known.last_price_paise if known is not None else None) or 0
            out.extend(
                (record.instrument, price)
                for record in repo.find(kind=kind, underlying_symbol=stock.trading_symbol)
            )
        return out


async def load_live_futures(bot: EmbeddedBot, client: MarginSource) -> list[str]:
    """TRADE_INSTRUMENT=future on the real feed: give the router the universe's real futures
    (expiries from the instrument file) and the engine their intraday margins from Upstox's
    margin API; returns their keys, for the feed to subscribe. A failed margin call leaves
    FUTURES_MARGIN_PERCENT in force (logged)."""
    router = bot.router
    if router is None:
        return []
    # A near-month future trades close to its stock: the stock's price values one lot here.
    priced = fno_contracts(bot.sessions, bot.instruments.values(), InstrumentKind.FUTURE)
    router.add_contracts(c for c, _ in priced)
    try:
        bot.engine.set_margins(await future_margin_fractions(client, priced))
    except UpstoxBotError as exc:
        log.warning("live.margins_unavailable", extra={"error": str(exc)})
    return [c.instrument_key for c, _ in priced]


async def refresh_calendar(bot: EmbeddedBot, client: HolidaySource) -> None:
    """Fetch this year's NSE holidays from Upstox, store them and trade by them from now on; a
    failed fetch keeps the calendar the bot has (logged)."""
    try:
        days = await fetch_calendar_days(client)
    except UpstoxBotError as exc:
        log.warning("calendar.upstox_fetch_failed", extra={"error": str(exc)})
        return
    now = datetime.now(UTC)
    with session_scope(bot.sessions) as session:
        store_calendar_days(session, days, year=now.astimezone(IST).year, at=now)
    bot.calendar = components.trading_calendar(bot.settings, bot.sessions)
    bot.engine.use_calendar(bot.calendar)


def _now_ms() -> int:
    return int(walltime.time() * 1000)


@dataclass(slots=True)
class LiveTrading:
    """What trading on Upstox needs besides the kernel: the token store, its guard and, when
    live orders are switched on, the broker (with its portfolio stream started)."""

    guard: TokenGuard
    token: Callable[[], str]
    broker: UpstoxBroker | None


def live_trading(
    settings: Settings, sessions: sessionmaker[Session], alerts: AlertDispatcher | None
) -> LiveTrading:
    """The token guard and, with PAPER_TRADING=false and LIVE_TRADING_ENABLED=true, the live
    Upstox broker (started: its portfolio stream runs). Used by every harness."""
    store = token_store_from_settings(settings, sessions)
    guard = TokenGuard(store, alerts=alerts)

    def token() -> str:
        secret = store.access_token(datetime.now(UTC))
        return secret.get_secret_value() if secret is not None else ""

    if settings.PAPER_TRADING or not settings.LIVE_TRADING_ENABLED:
        return LiveTrading(guard=guard, token=token, broker=None)
    client = UpstoxClient(
        access_token=token,
        api_base_url=settings.UPSTOX_API_BASE_URL,
        algo_name=settings.UPSTOX_ALGO_NAME,
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

    broker = UpstoxBroker(gateway, clock=lambda: datetime.now(UTC), can_place=can_place)
    broker.start()
    log.warning("live.trading", extra={"broker": "upstox"})
    return LiveTrading(guard=guard, token=token, broker=broker)


def apply_broker_events(kernel: AccountKernel, broker: UpstoxBroker) -> None:
    """Feed the live broker's order updates to the kernel: fills, then closures."""
    for event in broker.drain():
        if isinstance(event, OrderClosed):
            # cancelled or rejected at Upstox, after the fills it had (drained first)
            kernel.engine.on_order_closed(
                event.client_order_id,
                event.status,
                event.reason,
                by=event.requested_by or "broker",
            )
        else:
            kernel.executor.apply_fills([event])


def reconcile_with_upstox(
    kernel: AccountKernel, broker: UpstoxBroker, alerts: AlertDispatcher | None
) -> None:
    """Compare the bot's orders and positions with Upstox's; alert on a difference and settle
    the orders whose outcome was unknown."""
    now = datetime.now(UTC)
    report = kernel.store.run(
        lambda session: reconcile(session, broker, account=kernel.account, now=now)
    )
    if not report.clean and alerts is not None:
        alerts.notify(
            AlertKind.RECONCILIATION_MISMATCH,
            f"{len(report.orders)} order and {len(report.positions)} position "
            "difference(s) with Upstox",
        )
    kernel.executor.resolve_unresolved()


async def play_upstox(bot: EmbeddedBot) -> None:
    """Trade on the real feed until stop() is called (or the duration, in market minutes)."""
    settings = bot.settings
    live = live_trading(settings, bot.sessions, bot.alerts)
    guard, token, live_broker = live.guard, live.token, live.broker
    if live_broker is not None:
        bot.kernel.use_broker(live_broker)

    bot.clock.advance_to(_now_ms())
    checkpoint = bot.store.checkpoint()
    if checkpoint is not None and checkpoint.trading_date != bot.kernel.today():
        checkpoint = None  # an earlier day's candles being built are of no use today
    bot.kernel.recover(checkpoint)
    if live_broker is not None:
        for order in list(bot.engine.orders.values()):
            live_broker.track(order)

    contract_keys: list[str] = []
    async with UpstoxClient(
        access_token=token, api_base_url=settings.UPSTOX_API_BASE_URL
    ) as reader:
        await refresh_calendar(bot, reader)
        if settings.TRADE_INSTRUMENT is InstrumentKind.FUTURE:
            contract_keys = await load_live_futures(bot, reader)
    if settings.TRADE_INSTRUMENT is InstrumentKind.OPTION:
        # The feed subscribes once, at the start; an at-the-money option is chosen later and
        # would have no ticks to manage its stop, so no option contract is loaded: entries are
        # refused (no contract) rather than left unmanaged.
        log.error("live.options_unsupported", extra={"trade_instrument": "option"})

    end_ms: int | None = None
    if bot.options.duration_minutes is not None:
        end_ms = bot.clock.now_ms() + int(bot.options.duration_minutes * 60_000)
    source = UpstoxTickSource(
        api_base_url=settings.UPSTOX_API_BASE_URL,
        access_token=token,
        instrument_keys=list(bot.instruments) + contract_keys,
        clock=lambda: datetime.now(UTC),
        is_market_open=bot.calendar.is_open,
    )

    async def consume() -> None:
        async with source:
            async for tick in source.ticks():
                _on_tick(bot, tick)

    feed = asyncio.create_task(consume())
    timer = asyncio.create_task(_timer(bot, guard, live_broker, end_ms))
    try:
        # The timer ends when stop() is called or the duration is over; a feed that fails for
        # good (e.g. the token is refused) ends the run too, and its error is raised.
        done, _ = await asyncio.wait({feed, timer}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        bot.stop()
        for task in (feed, timer):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        bot.flush()
        if live_broker is not None:
            live_broker.stop()
        bot.stats.finished = True


def _on_tick(bot: EmbeddedBot, tick: Tick) -> None:
    bot.clock.advance_to(max(tick.ts_ms, _now_ms()))
    bot.kernel.step(tick)
    bot.sample_tick(tick)
    bot.stats.ticks += 1
    bot.stats.last_tick_wall = walltime.monotonic()
    bot.stats.market_now = bot.clock.now()
    hub = bot.hub
    if hub is not None and hub.has_subscribers(TICKS):
        instrument = bot.instruments.get(tick.instrument_key)
        hub.publish_threadsafe(
            TICKS, tick_payload(tick, instrument.trading_symbol if instrument else None)
        )


async def _timer(
    bot: EmbeddedBot, guard: TokenGuard, live_broker: UpstoxBroker | None, end_ms: int | None
) -> None:
    last_reconcile = walltime.monotonic()
    while not bot.stopping:
        await asyncio.sleep(TIMER_S)
        now = datetime.now(UTC)
        bot.clock.advance_to(_now_ms())
        allowed = guard.entries_allowed(now)
        bot.engine.pause_entries(None if allowed else guard.token_state(now).value)
        if live_broker is not None:
            apply_broker_events(bot.kernel, live_broker)
        bot.kernel.timer(bot.clock.now_ms())
        bot.stats.recent.append((walltime.monotonic(), bot.stats.ticks))
        bot.flush()
        if live_broker is not None and walltime.monotonic() - last_reconcile >= RECONCILE_S:
            last_reconcile = walltime.monotonic()
            reconcile_with_upstox(bot.kernel, live_broker, bot.alerts)
        if end_ms is not None and bot.clock.now_ms() >= end_ms:
            bot.stop()

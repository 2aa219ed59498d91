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
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from upstox_bot.db.repositories.symbols import SymbolRepository
from upstox_bot.db.session import session_scope
from upstox_bot.domain import IST, Instrument, InstrumentKind, Order, OrderPurpose, Tick
from upstox_bot.errors import ConfigError, UpstoxBotError
from upstox_bot.live_events import TICKS, tick_payload
from upstox_bot.monitoring.alerts.dispatcher import AlertDispatcher
from upstox_bot.monitoring.alerts.model import AlertKind
from upstox_bot.runtime import components
from upstox_bot.trading.brokers.upstox import UpstoxBroker
from upstox_bot.trading.brokers.upstox_book import reconcile_books
from upstox_bot.trading.desk import OrderDesk
from upstox_bot.trading.order_gate import OrderGate
from upstox_bot.upstox.client import PlacementPolicy, UpstoxClient
from upstox_bot.upstox.holidays import HolidaySource, fetch_calendar_days, store_calendar_days
from upstox_bot.upstox.live import UpstoxOrderGateway, UpstoxTickSource
from upstox_bot.upstox.margins import MarginSource, future_margin_fractions
from upstox_bot.upstox.token_store import TokenGuard, TokenStore, token_store_from_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from upstox_bot.config import Settings
    from upstox_bot.runtime.embedded import EmbeddedBot
    from upstox_bot.runtime.kernel import AccountKernel

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


class LiveTrading:
    """What trading on Upstox needs besides the kernel, in every harness: the token store and
    its guard and, with the live switches on, the started Upstox broker, all plugged into the
    account's kernel (its order desk follows the broker's reports)."""

    def __init__(
        self,
        kernel: AccountKernel,
        settings: Settings,
        sessions: sessionmaker[Session],
        alerts: AlertDispatcher | None,
    ) -> None:
        self.kernel = kernel
        self.store = token_store_from_settings(settings, sessions)
        self.guard = TokenGuard(self.store, alerts=alerts)
        kernel.desk.token_usable = lambda: self.guard.entries_allowed(datetime.now(UTC))
        self.broker: UpstoxBroker | None = None
        if settings.live_trading:
            broker = live_broker(settings, self.store, self.guard)
            broker.start()
            # Upstox's book may lag: an order is sent again only after this long without it.
            kernel.use_broker(
                broker, lookup_window_ms=int(settings.UPSTOX_TAG_LOOKUP_SECONDS * 1000)
            )
            self.broker = broker
            log.warning(
                "live.trading",
                extra={"broker": "upstox", "market_protection": str(settings.MARKET_PROTECTION)},
            )

    def token(self) -> str:
        return current_token(self.store)

    def adopt(self) -> None:
        """After recovery: the live broker follows the orders left working."""
        if self.broker is not None:
            adopt_recovered_orders(self.kernel.desk, self.broker)

    def second(self, now_ms: int) -> None:
        """The once-a-second step: what the broker reported, entries paused or not, the
        engine's timer and the desk's deadlines, settling unknown outcomes."""
        kernel = self.kernel
        now = datetime.now(UTC)
        kernel.desk.drain()  # first: a refusal it reports pauses entries at once
        kernel.engine.pause_entries(entries_paused_reason(self.guard, kernel.desk.gate, now))
        kernel.timer(now_ms)
        if self.broker is None and kernel.executor.unresolved:
            kernel.executor.resolve_unresolved()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.kernel.desk.drain()
        if self.broker is not None:
            self.broker.stop()


async def play_upstox(bot: EmbeddedBot) -> None:
    """Trade on the real feed until stop() is called (or the duration, in market minutes)."""
    settings = bot.settings
    live = LiveTrading(bot.kernel, settings, bot.sessions, bot.alerts)
    bot.clock.advance_to(_now_ms())
    checkpoint = bot.store.checkpoint()
    if checkpoint is not None and checkpoint.trading_date != bot.kernel.today():
        checkpoint = None  # an earlier day's candles being built are of no use today
    bot.kernel.recover(checkpoint)
    live.adopt()

    contract_keys: list[str] = []
    with contextlib.suppress(Exception):
        async with UpstoxClient(
            access_token=live.token, api_base_url=settings.UPSTOX_API_BASE_URL
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
    feed = asyncio.create_task(
        _feed(bot, live.store, live.guard, contract_keys), name="upstox-feed"
    )
    timer = asyncio.create_task(_timer(bot, live, end_ms), name="live-timer")
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
        live.stop()
        bot.flush()
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


async def _feed(
    bot: EmbeddedBot, store: TokenStore, guard: TokenGuard, contract_keys: list[str]
) -> None:
    """Ticks from the Upstox feed until cancelled; started again whenever it fails."""
    failures = 0
    while not bot.stopping:
        source = UpstoxTickSource(
            api_base_url=bot.settings.UPSTOX_API_BASE_URL,
            access_token=lambda: current_token(store),
            instrument_keys=list(bot.instruments) + contract_keys,
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


def entries_paused_reason(guard: TokenGuard, gate: OrderGate, now: datetime) -> str | None:
    """Why new entries wait now (the token, Upstox refusing the account's orders), or None."""
    reasons = []
    if not guard.entries_allowed(now):
        reasons.append(f"Upstox token {guard.token_state(now).value}")
    if gate.blocked and gate.cause is not None:
        reasons.append(f"Upstox refuses orders ({gate.cause.value})")
    return "; ".join(reasons) or None


async def _timer(bot: EmbeddedBot, live: LiveTrading, end_ms: int | None) -> None:
    last_reconcile = walltime.monotonic()
    while not bot.stopping:
        await asyncio.sleep(TIMER_S)
        try:
            now = datetime.now(UTC)
            bot.clock.advance_to(_now_ms())
            live.second(bot.clock.now_ms())
            bot.stats.recent.append((walltime.monotonic(), bot.stats.ticks))
            bot.flush()
            broker = live.broker
            if broker is not None and walltime.monotonic() - last_reconcile >= RECONCILE_S:
                last_reconcile = walltime.monotonic()
                await reconcile_live(bot.kernel, broker, bot.alerts, now)
        except Exception:  # a failed step is tried again the next second: never stop here
            bot.stats.timer_errors += 1
            log.exception("live.timer.failed")
        if end_ms is not None and bot.clock.now_ms() >= end_ms:
            bot.stop()


async def reconcile_live(
    kernel: AccountKernel, broker: UpstoxBroker, alerts: AlertDispatcher | None, now: datetime
) -> None:
    """Compare the bot's books with Upstox's (reads on the broker's loop, awaited here)."""
    try:
        broker_orders, broker_positions = await broker.books()
    except Exception as exc:
        log.warning("reconcile.unavailable", extra={"error": str(exc)})
        return
    engine = kernel.engine
    # An order still on its way, or younger than Upstox's book lag, is not a mismatch yet.
    settled_before = now - timedelta(seconds=kernel.settings.UPSTOX_TAG_LOOKUP_SECONDS)
    unsettled = kernel.desk.busy() | {
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
        if alerts is None:
            return
        alerts.notify(
            AlertKind.RECONCILIATION_MISMATCH,
            f"{len(report.orders)} order and {len(report.positions)} position "
            "difference(s) with Upstox",
        )

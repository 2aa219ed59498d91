"""Run the embedded bot with the API server and a live Rich summary on one asyncio loop.

The live block is redrawn in place and always fits the terminal: its lines never wrap (a line
the terminal wraps is one Rich does not count, which leaves old copies of the block above the
new one), the positions table keeps the columns that fit the width, and its rows are cut to the
height. What happened is printed above it: a summary at the end of each session, and on stopping
what is left open and what the next start does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from upstox_bot.config import Settings
from upstox_bot.db.repositories.trades import TradeRepository
from upstox_bot.db.session import session_scope
from upstox_bot.diagnose import StartupError, port_message
from upstox_bot.domain import IST, AccountSnapshot, Position, Trade
from upstox_bot.money import format_rupees
from upstox_bot.runtime.embedded import EmbeddedBot, RunOptions

log = logging.getLogger(__name__)

SEPARATOR = " · "
GAUGE_CELLS = 10
REFRESH_PER_SECOND = 4
# Lines of the live block besides the positions' rows: two header lines (four when narrow),
# the table's title, head, rules and the "more" line.
CHROME_LINES = 9


@dataclass(frozen=True, slots=True)
class _Column:
    name: str
    min_width: int  # the widest usual value, so that the table is measured before it is drawn
    right: bool


# By importance: a narrow terminal keeps the first ones that fit.
_COLUMNS = (
    _Column("symbol", 10, False),
    _Column("P&L", 12, True),
    _Column("qty", 5, True),
    _Column("last", 10, True),
    _Column("stop", 10, True),
    _Column("entry", 10, True),
    _Column("side", 5, False),
    _Column("target", 10, True),
    _Column("trail", 10, True),
)
_ORDER = ("symbol", "side", "qty", "entry", "last", "stop", "target", "trail", "P&L")


def fit_line(parts: Sequence[str], width: int) -> list[str]:
    """Join `parts` with " · " into as few lines as fit `width` (a part is never split, but one
    longer than the width is cut with "…")."""
    lines: list[str] = []
    current = ""
    for part in parts:
        if len(part) > width:
            part = part[: max(width - 1, 0)] + "…"
        candidate = part if not current else current + SEPARATOR + part
        if len(candidate) <= width:
            current = candidate
        else:
            lines.append(current)
            current = part
    if current:
        lines.append(current)
    return lines


def _columns_for(width: int) -> list[_Column]:
    chosen: list[_Column] = []
    used = 0
    for column in _COLUMNS:
        need = column.min_width + 3  # padding and the border
        if chosen and used + need > width - 1:
            break
        chosen.append(column)
        used += need
    return sorted(chosen, key=lambda c: _ORDER.index(c.name))


def _cell(column: str, p: Position, symbol: str) -> Text:
    if column == "P&L":
        pnl = p.unrealised_pnl_paise
        return Text(format_rupees(pnl, signed=True), style="green" if pnl >= 0 else "red")
    values = {
        "symbol": symbol,
        "side": p.direction.value,
        "qty": str(p.quantity),
        "entry": format_rupees(p.entry_price_paise),
        "last": format_rupees(p.last_price_paise),
        "stop": format_rupees(p.effective_stop_paise),
        "target": format_rupees(p.target_paise),
        "trail": format_rupees(p.trail_stop_paise) if p.trail_stop_paise else "-",
    }
    return Text(values[column])


def render_summary(bot: EmbeddedBot, width: int = 100, height: int = 40) -> RenderableType:
    """The live block for a terminal of `width` x `height`: clock and pace, the day's P&L
    against the loss limit, and the open positions with the columns that fit."""
    engine = bot.engine
    stats = bot.stats
    now = (
        stats.market_now.astimezone(IST).strftime("%Y-%m-%d %H:%M:%S IST")
        if stats.market_now
        else "starting"
    )
    day_pnl = engine.day_pnl_paise
    limit = engine.risk.limits.daily_loss_limit_paise
    used = max(0.0, -day_pnl / limit) if limit else 0.0
    cells = int(min(used, 1.0) * GAUGE_CELLS)
    gauge = "#" * cells + "-" * (GAUGE_CELLS - cells)
    first = [
        f"market {now}",
        f"speed x{bot.options.speed:g}",
        f"{stats.ticks_per_second():,.0f} ticks/s",
    ]
    second = [
        f"day P&L {format_rupees(day_pnl, signed=True)}",
        f"loss limit {format_rupees(limit)} [{gauge}] {used:.0%}"
        + (" HIT" if engine.day.loss_limit_hit else ""),
        f"trades {engine.day.trades}",
        f"orders {engine.day.orders}",
    ]
    if engine.risk.kill_switch.active:
        second.append("KILL SWITCH ON")
    pnl_style = "green" if day_pnl >= 0 else "red"
    lines: list[RenderableType] = [
        Text(line, style="bold", no_wrap=True, overflow="ellipsis")
        for line in fit_line(first, width)
    ]
    for i, line in enumerate(fit_line(second, width)):
        lines.append(Text(line, style=pnl_style if i == 0 else "", no_wrap=True))
    positions = list(engine.positions.values())
    columns = _columns_for(width)
    table = Table(
        title=f"open positions ({len(positions)}/{engine.risk.limits.max_open_positions})",
        expand=False,
        title_justify="left",
    )
    for column in columns:
        table.add_column(
            column.name,
            justify="right" if column.right else "left",
            no_wrap=True,
            overflow="ellipsis",
        )
    room = max(1, height - CHROME_LINES - len(lines))
    shown = positions[:room] if len(positions) > room else positions
    for p in shown:
        instrument = bot.instruments.get(p.instrument_key)
        symbol = instrument.trading_symbol if instrument is not None else p.instrument_key
        table.add_row(*(_cell(c.name, p, symbol) for c in columns))
    lines.append(table)
    if len(shown) < len(positions):
        lines.append(Text(f"… and {len(positions) - len(shown)} more", style="dim"))
    return Group(*lines)


# --- what is printed above the live block -------------------------------------------------------


def session_summary(day: date, snap: AccountSnapshot, trades: Sequence[Trade]) -> str:
    """The summary of one session: trades, wins, net P&L, charges, best and worst, what is open."""
    wins = sum(1 for t in trades if t.net_pnl_paise > 0)
    losses = sum(1 for t in trades if t.net_pnl_paise < 0)
    net = sum(t.net_pnl_paise for t in trades)
    charges = sum(t.charges_paise for t in trades)
    parts = [
        f"session {day.isoformat()} ended: {len(trades)} trade(s) ({wins} won, {losses} lost)",
        f"net P&L {format_rupees(net, signed=True)} after charges {format_rupees(charges)}",
    ]
    if trades:
        best = max(trades, key=lambda t: t.net_pnl_paise)
        worst = min(trades, key=lambda t: t.net_pnl_paise)
        parts.append(f"best {format_rupees(best.net_pnl_paise, signed=True)}")
        parts.append(f"worst {format_rupees(worst.net_pnl_paise, signed=True)}")
    parts.append(f"day P&L {format_rupees(snap.day_pnl_paise, signed=True)}")
    if snap.loss_limit_hit:
        parts.append("daily loss limit hit")
    if snap.kill_switch:
        parts.append("kill switch on")
    parts.append(f"{snap.open_positions} position(s) open")
    return "; ".join(parts)


def stop_note(bot: EmbeddedBot) -> str:
    """What a trader must know on stopping: the positions left open and what the next start
    does with them."""
    positions = list(bot.engine.positions.values())
    market = bot.options.market
    if market == "upstox":
        resume = (
            "the next `upstox-bot run --market upstox` reconciles them with Upstox and manages "
            "their stops again; until then no stop is watched (Upstox squares off intraday "
            "positions at its own cut-off)"
        )
    else:
        at = bot.clock.now().astimezone(IST).strftime("%Y-%m-%d %H:%M IST")
        resume = (
            f"the next `upstox-bot run` resumes the {market} market at {at} (the last committed "
            "tick) with them, their stops and the 15:15 square-off"
        )
    if not positions:
        return f"stopped: no position left open; {resume.replace(' with them,', ',')}."
    held = ", ".join(
        f"{_symbol(bot, p.instrument_key)} {p.direction.value} {p.quantity} "
        f"@ {format_rupees(p.entry_price_paise)} (stop {format_rupees(p.effective_stop_paise)})"
        for p in positions
    )
    return f"stopped with {len(positions)} position(s) left open: {held}; {resume}."


def _symbol(bot: EmbeddedBot, key: str) -> str:
    instrument = bot.instruments.get(key)
    return instrument.trading_symbol if instrument is not None else key


def _trades_of(bot: EmbeddedBot, day: date) -> list[Trade]:
    with session_scope(bot.sessions) as session:
        return TradeRepository(session, bot.account).find(
            start_date=day, end_date=day, limit=100_000
        )


# --- the run -------------------------------------------------------------------------------------


class _LiveBlock:
    """The live block, drawn in place at the console's current size."""

    def __init__(self, bot: EmbeddedBot, console: Console) -> None:
        self._bot = bot
        self._console = console

    def __rich__(self) -> RenderableType:
        size = self._console.size
        return render_summary(self._bot, width=size.width, height=size.height)


class ApiThread:
    """The API server on a thread of its own, with its own event loop: no request (a large
    body, a slow client) ever runs on the market loop or slows trading."""

    def __init__(self, bot: EmbeddedBot, settings: Settings) -> None:
        import uvicorn

        from upstox_bot.api.server import uvicorn_options

        app = bot.create_api()
        config = uvicorn.Config(
            app,
            host=settings.API_HOST,
            port=settings.API_PORT,
            log_config=None,
            lifespan="on",
            **uvicorn_options(settings),
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._serve, name="api", daemon=True)

    def _serve(self) -> None:
        # uvicorn exits with SystemExit when it cannot bind: that ends this thread only.
        with contextlib.suppress(SystemExit):
            self.server.run()

    async def start(self) -> bool:
        """Start serving; False when the server could not start (its port is taken)."""
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                return False
            await asyncio.sleep(0.05)
        return True

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.to_thread(self.thread.join, 10)


async def run_embedded(settings: Settings, options: RunOptions, console: Console) -> int:
    """Run until the duration is played (exit 0) or the process is interrupted."""
    bot = EmbeddedBot(settings, options)

    def session_ended(day: date, snap: AccountSnapshot) -> None:
        try:
            console.print(
                session_summary(day, snap, _trades_of(bot, day)), highlight=False, soft_wrap=True
            )
        except Exception:  # a summary must never stop the trading loop
            log.warning("console.summary_failed", exc_info=True)

    bot.session_ended = session_ended
    api: ApiThread | None = None
    if options.serve_api:
        api = ApiThread(bot, settings)
        # Trade only once the API is up: a bot the trader cannot reach or stop is refused.
        if not await api.start():
            bot.close()
            raise StartupError(port_message(settings.API_HOST, settings.API_PORT))
        console.print(
            f"API on http://{settings.API_HOST}:{settings.API_PORT} (dashboard at /, docs at "
            "/docs)",
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"{'paper' if settings.PAPER_TRADING else 'LIVE'} trading {len(bot.instruments)} stocks "
        f"({options.market} market) from "
        f"{bot.first_date.isoformat()}, seed {options.seed}, speed x{options.speed:g}; "
        f"database {settings.database_url}",
        highlight=False,
        soft_wrap=True,
    )
    terminated = False

    def on_sigterm() -> None:
        # SIGTERM (a service manager, `docker stop`) stops as Ctrl-C does: the market loop
        # ends, the last commit is made and pending alerts are sent.
        nonlocal terminated
        terminated = True
        log.warning("run.sigterm")
        bot.stop()

    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    market = asyncio.create_task(bot.run_market())
    interrupted = False
    try:
        if options.live_console:
            _log_through(console)
            block = _LiveBlock(bot, console)
            with Live(
                block,
                console=console,
                refresh_per_second=REFRESH_PER_SECOND,
                vertical_overflow="crop",
            ):
                await market
        else:
            await market
        market.result()
    except asyncio.CancelledError:
        interrupted = True
        raise
    finally:
        bot.stop()
        if not market.done():
            market.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await market
        bot.flush()
        if api is not None:
            await api.stop()
        bot.close()
        if interrupted:
            console.print(stop_note(bot), highlight=False, soft_wrap=True)
    snap = bot.engine.snapshot()
    console.print(
        f"done: {snap.trades} trade(s) on {snap.trading_date}, day P&L "
        f"{format_rupees(snap.day_pnl_paise, signed=True)} (charges "
        f"{format_rupees(snap.charges_paise)}), {snap.open_positions} open position(s)",
        highlight=False,
        soft_wrap=True,
    )
    if snap.open_positions:
        console.print(stop_note(bot), highlight=False, soft_wrap=True)
    return 128 + signal.SIGTERM if terminated else 0


def _log_through(console: Console) -> None:
    """Send the console log handler's lines through the live block's console: Live prints
    them above the block. A line written past it lands inside the block's area, and the next
    redraw leaves a torn copy of the block above."""
    from rich.logging import RichHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, RichHandler):
            handler.console = console

"""Run the embedded bot with the API server and a live Rich summary on one asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from upstox_bot.config import Settings
from upstox_bot.domain import IST, paise_to_rupees
from upstox_bot.errors import ConfigError
from upstox_bot.runtime.embedded import EmbeddedBot, RunOptions

log = logging.getLogger(__name__)


def render_summary(bot: EmbeddedBot) -> Group:
    """The console view: clock, ticks/s, positions, day P&L against the loss limit."""
    engine = bot.engine
    stats = bot.stats
    now = (
        stats.market_now.astimezone(IST).strftime("%Y-%m-%d %H:%M:%S IST")
        if (stats.market_now)
        else "starting"
    )
    day_pnl = engine.day_pnl_paise
    limit = engine.risk.limits.daily_loss_limit_paise
    used = max(0.0, -day_pnl / limit) if limit else 0.0
    head = Table.grid(padding=(0, 2))
    head.add_row(
        Text(f"market {now}", style="bold"),
        Text(f"{stats.ticks_per_second():,.0f} ticks/s ({stats.ticks:,} total)"),
        Text(f"speed x{bot.options.speed:g}"),
    )
    pnl_style = "green" if day_pnl >= 0 else "red"
    bar = "#" * int(min(used, 1.0) * 20)
    head.add_row(
        Text(f"day P&L Rs {paise_to_rupees(day_pnl)}", style=pnl_style),
        Text(
            f"loss limit Rs {paise_to_rupees(limit)} [{bar:<20}] {used:.0%}"
            + ("  HIT" if engine.day.loss_limit_hit else "")
        ),
        Text(
            f"trades {engine.day.trades}  orders {engine.day.orders}"
            + ("  KILL SWITCH ON" if engine.risk.kill_switch.active else "")
        ),
    )
    table = Table(
        title=f"open positions ({len(engine.positions)}/{engine.risk.limits.max_open_positions})",
        expand=False,
    )
    for col in ("symbol", "side", "qty", "entry", "last", "stop", "target", "trail", "P&L"):
        table.add_column(col, justify="right" if col not in ("symbol", "side") else "left")
    for key, p in engine.positions.items():
        table.add_row(
            bot.instruments[key].trading_symbol,
            p.direction.value,
            str(p.quantity),
            str(paise_to_rupees(p.entry_price_paise)),
            str(paise_to_rupees(p.last_price_paise)),
            str(paise_to_rupees(p.stop_paise)),
            str(paise_to_rupees(p.target_paise)),
            str(paise_to_rupees(p.trail_stop_paise)) if p.trail_stop_paise else "-",
            Text(
                str(paise_to_rupees(p.unrealised_pnl_paise)),
                style="green" if p.unrealised_pnl_paise >= 0 else "red",
            ),
        )
    return Group(head, table)


async def run_embedded(settings: Settings, options: RunOptions, console: Console) -> int:
    """Run until the duration is played (exit 0) or the process is interrupted."""
    bot = EmbeddedBot(settings, options)
    server = None
    server_task: asyncio.Task[None] | None = None
    if options.serve_api:
        import uvicorn

        from upstox_bot.api.app import create_app
        from upstox_bot.api.hub import EventHub
        from upstox_bot.api.server import uvicorn_options

        bot.hub = EventHub()
        app = create_app(bot.settings, bot=bot, hub=bot.hub)
        config = uvicorn.Config(
            app,
            host=settings.API_HOST,
            port=settings.API_PORT,
            log_config=None,
            lifespan="on",
            **uvicorn_options(settings),
        )
        server = uvicorn.Server(config)
        server_task = asyncio.create_task(server.serve())
        # Trade only once the API is up: a bot the trader cannot reach or stop is refused.
        while not server.started:
            if server_task.done():
                bot.close()
                raise ConfigError(
                    f"the API could not start on {settings.API_HOST}:{settings.API_PORT} "
                    "(port in use?); use --port, or --no-api"
                )
            await asyncio.sleep(0.05)
        console.print(
            f"API on http://{settings.API_HOST}:{settings.API_PORT} (docs at /docs)",
            highlight=False,
        )
    console.print(
        f"{'paper' if settings.PAPER_TRADING else 'LIVE'} trading {len(bot.instruments)} stocks "
        f"({options.market} market) from "
        f"{bot.first_date.isoformat()}, seed {options.seed}, speed x{options.speed:g}; "
        f"database {settings.database_url}",
        highlight=False,
    )
    market = asyncio.create_task(bot.run_market())
    try:
        if options.live_console:
            with Live(render_summary(bot), console=console, refresh_per_second=4) as live:
                while not market.done():
                    live.update(render_summary(bot))
                    await asyncio.wait({market}, timeout=0.25)
                live.update(render_summary(bot))
        else:
            await market
        market.result()
    finally:
        bot.stop()
        if not market.done():
            market.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await market
        bot.flush()
        if server is not None and server_task is not None:
            server.should_exit = True
            await server_task
        bot.close()
    snap = bot.engine.snapshot()
    console.print(
        f"done: {snap.trades} trades today, realised Rs {paise_to_rupees(snap.realised_pnl_paise)}"
        f" (charges Rs {paise_to_rupees(snap.charges_paise)}), {snap.open_positions} open "
        f"position(s)",
        highlight=False,
    )
    return 0

"""`upstox-bot`: run the bot, serve the API, migrate the database, and small tools."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import date
from typing import Annotated, Any

import typer
from rich.console import Console

from upstox_bot import __version__
from upstox_bot.config import Settings, load_settings
from upstox_bot.errors import ConfigError

app = typer.Typer(
    name="upstox-bot",
    help="Automated trading of NSE F&O stocks on Upstox (paper trading by default).",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")

console = Console()
err_console = Console(stderr=True)


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None


def _configure_logging(settings: Settings) -> None:
    from upstox_bot.monitoring.logging import configure_logging

    configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT.value)


@app.command()
def version() -> None:
    """Print the version."""
    console.print(__version__)


@app.command()
def run(
    speed: Annotated[
        float | None, typer.Option(help="Simulated seconds per second (default SIM_SPEED).")
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option(help="Simulated minutes to play, then exit 0 (375 = one whole session)."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Market seed (default SIM_SEED).")] = None,
    start_date: Annotated[
        str | None,
        typer.Option("--date", help="First session (YYYY-MM-DD); default today or the next."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="API host (default API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="API port (default API_PORT).")] = None,
    api: Annotated[bool, typer.Option(help="Serve the REST API while running.")] = True,
    live: Annotated[bool, typer.Option(help="Show the live console summary.")] = True,
) -> None:
    """Run the embedded bot: simulated market, paper broker, SQLite, API on port 8000."""
    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["API_HOST"] = host
    if port is not None:
        overrides["API_PORT"] = port
    settings = _settings(**overrides)
    _configure_logging(settings)
    from upstox_bot.runtime.console import run_embedded
    from upstox_bot.runtime.embedded import RunOptions

    try:
        first = date.fromisoformat(start_date) if start_date else None
    except ValueError:
        err_console.print(f"[bold red]error:[/] --date: not a date: {start_date!r}")
        raise typer.Exit(2) from None
    if speed is not None and speed <= 0:
        err_console.print("[bold red]error:[/] --speed must be positive")
        raise typer.Exit(2)
    options = RunOptions(
        speed=speed if speed is not None else settings.SIM_SPEED,
        duration_minutes=duration,
        seed=seed if seed is not None else settings.SIM_SEED,
        start_date=first,
        serve_api=api,
        live_console=live and console.is_terminal,
    )
    try:
        code = asyncio.run(run_embedded(settings, options, console))
    except ConfigError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        code = 130
    raise typer.Exit(code)


@app.command("api")
def serve_api(
    host: Annotated[str | None, typer.Option(help="Bind address (default API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default API_PORT).")] = None,
) -> None:
    """Serve the REST API alone (with DATABASE_URL unset: the embedded SQLite database)."""
    settings = _settings()
    _configure_logging(settings)
    import uvicorn

    from upstox_bot.api.app import create_app
    from upstox_bot.db import migrate

    migrate.upgrade(settings.database_url)
    uvicorn.run(
        create_app(settings),
        host=host or settings.API_HOST,
        port=port or settings.API_PORT,
        log_config=None,
    )


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Migrate the database (DATABASE_URL, or the SQLite file in DATA_DIR) to a revision."""
    settings = _settings()
    from upstox_bot.db import migrate

    settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.database_url, revision)
    console.print(f"database at revision {migrate.current(settings.database_url)}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's current revision."""
    settings = _settings()
    from upstox_bot.db import migrate

    console.print(migrate.current(settings.database_url) or "empty (no revision)")


@app.command("config")
def show_config() -> None:
    """Validate the settings and print them (secrets hidden)."""
    settings = _settings()
    shown = json.loads(settings.model_dump_json())
    for key, value in shown.items():
        console.print(f"{key}={value}", highlight=False)


@app.command()
def greeks(
    option_type: Annotated[str, typer.Option("--type", help="CE or PE.")],
    spot: Annotated[float, typer.Option(help="Underlying price.")],
    strike: Annotated[float, typer.Option(help="Strike price.")],
    t: Annotated[float, typer.Option(help="Time to expiry in years.")],
    r: Annotated[float, typer.Option(help="Risk-free rate (0.065 = 6.5%).")] = 0.065,
    sigma: Annotated[float | None, typer.Option(help="Volatility (0.2 = 20%).")] = None,
    price: Annotated[float | None, typer.Option(help="Option price: solve IV from it.")] = None,
    q: Annotated[float, typer.Option(help="Dividend yield.")] = 0.0,
) -> None:
    """Black-Scholes price, implied volatility and greeks of one option, as JSON."""
    from upstox_bot.options import greeks as bs

    kind = option_type.upper()
    if kind not in ("CE", "PE"):
        err_console.print("[bold red]error:[/] --type must be CE or PE")
        raise typer.Exit(2)
    vol = sigma
    if vol is None:
        if price is None:
            err_console.print("[bold red]error:[/] give --sigma or --price")
            raise typer.Exit(2)
        vol = float(bs.implied_volatility(price, kind, spot, strike, t, r, q))
        if vol != vol:  # NaN: outside the no-arbitrage bounds
            err_console.print("[bold red]error:[/] --price is outside the no-arbitrage bounds")
            raise typer.Exit(2)
    g = bs.greeks(kind, spot, strike, t, r, vol, q)
    out = {
        "price": float(bs.bs_price(kind, spot, strike, t, r, vol, q)),
        "iv": vol,
        "delta": float(g.delta),
        "gamma": float(g.gamma),
        "theta": float(g.theta),
        "vega": float(g.vega),
        "rho": float(g.rho),
    }
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":  # pragma: no cover
    app()

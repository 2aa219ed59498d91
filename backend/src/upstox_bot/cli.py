"""`upstox-bot`: run the bot, serve the API, migrate the database, and small tools."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from datetime import date, datetime, time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from upstox_bot import __version__
from upstox_bot.config import Settings, load_settings
from upstox_bot.errors import ConfigError
from upstox_bot.upstox import commands as upstox_commands

app = typer.Typer(
    name="upstox-bot",
    help="Automated trading of NSE F&O stocks on Upstox (paper trading by default).",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")

console = Console()
# soft_wrap: a one-line error stays one line when stderr is a file or a pipe (not cut at 80).
err_console = Console(stderr=True, soft_wrap=True)
log = logging.getLogger(__name__)


class _Options:
    debug = False  # --debug: a failure prints its full traceback


@app.callback()
def _global_options(
    debug: Annotated[
        bool, typer.Option("--debug", help="On a failure, print the full traceback too.")
    ] = False,
) -> None:
    """Automated trading of NSE F&O stocks on Upstox (paper trading by default)."""
    _Options.debug = debug


def main() -> None:
    """The `upstox-bot` command: a known start-up failure is one line and exit code 2."""
    from upstox_bot.diagnose import explain

    try:
        app()
    except Exception as exc:
        message = explain(exc, database_url=_database_url_or_none())
        if message is None or _Options.debug:
            raise
        log.debug("cli.failed", exc_info=True)
        err_console.print(f"[bold red]error:[/] {message}", highlight=False)
        sys.exit(2)


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None


def _database_url_or_none() -> str | None:
    try:
        return load_settings().database_url
    except ConfigError:
        return None


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(2)


def _check_storage(settings: Settings) -> None:
    """DATA_DIR must be a writable folder when the database is the SQLite file in it."""
    from upstox_bot.diagnose import StartupError, check_data_dir

    if settings.DATABASE_URL:
        return
    try:
        check_data_dir(settings.DATA_DIR)
    except StartupError as exc:
        raise _fail(str(exc)) from None


def _configure_logging(settings: Settings) -> None:
    from upstox_bot.config import credential_values
    from upstox_bot.monitoring.logging import configure_logging

    configure_logging(
        settings.LOG_LEVEL, settings.LOG_FORMAT.value, secrets=credential_values(settings)
    )


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
    market: Annotated[
        str | None, typer.Option(help="sim (default, MARKET) or replay (bars from --data).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="With --market replay: a bars CSV or a folder of them.")
    ] = None,
    api: Annotated[bool, typer.Option(help="Serve the REST API while running.")] = True,
    live: Annotated[bool, typer.Option(help="Show the live console summary.")] = True,
    force_live: Annotated[
        str | None,
        typer.Option(
            "--force-live",
            metavar="REASON",
            help="With the live switches set: start live before PAPER_TRADING_DAYS_REQUIRED "
            "days of paper trading, for this reason (written to the audit log).",
        ),
    ] = None,
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
    chosen = (market or settings.MARKET.value).lower()
    if chosen not in ("sim", "replay", "upstox"):
        err_console.print(f"[bold red]error:[/] --market {chosen}: use sim, replay or upstox")
        raise typer.Exit(2)
    if (chosen == "replay") != (data is not None):
        err_console.print("[bold red]error:[/] --data goes with --market replay (and only it)")
        raise typer.Exit(2)
    _check_storage(settings)
    if api:
        # Before anything is created or printed: the one-time key must never scroll away
        # above a failure to serve.
        from upstox_bot.diagnose import StartupError, check_port_free

        try:
            check_port_free(settings.API_HOST, settings.API_PORT)
        except StartupError as exc:
            raise _fail(str(exc)) from None
    options = RunOptions(
        speed=speed if speed is not None else settings.SIM_SPEED,
        duration_minutes=duration,
        seed=seed if seed is not None else settings.SIM_SEED,
        start_date=first,
        serve_api=api,
        live_console=live and console.is_terminal,
        replay_data=data,
        market=chosen,
        force_live_reason=force_live,
    )
    if api:
        from upstox_bot.api.auth import ensure_local_key

        local_key = ensure_local_key(settings)
        if local_key is not None:
            console.print(
                "first start: created the trade-scope API key 'local' (shown once, stored "
                f"hashed): {local_key}",
                highlight=False,
                soft_wrap=True,
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
    from upstox_bot.api.server import uvicorn_options
    from upstox_bot.db import migrate
    from upstox_bot.diagnose import StartupError, check_port_free

    _check_storage(settings)
    bind_host, bind_port = host or settings.API_HOST, port or settings.API_PORT
    try:
        check_port_free(bind_host, bind_port)
    except StartupError as exc:
        raise _fail(str(exc)) from None
    migrate.upgrade(settings.database_url)
    control = None
    if settings.REDIS_URL:
        from upstox_bot.worker.control import RedisControl

        # The distributed harness: controls go to the worker holding the account.
        control = RedisControl(settings.REDIS_URL, settings.ACCOUNT_NAME)
    uvicorn.run(
        create_app(settings, control=control),
        host=bind_host,
        port=bind_port,
        log_config=None,
        **uvicorn_options(settings),
    )


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Migrate the database (DATABASE_URL, or the SQLite file in DATA_DIR) to a revision."""
    settings = _settings()
    from upstox_bot.db import migrate

    _check_storage(settings)
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
    """Validate the settings and print them (credentials hidden)."""
    settings = _settings()
    from upstox_bot.api.settings_changes import public_values

    for key, value in public_values(settings).items():
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


alert_app = typer.Typer(help="Alerts to Telegram, a webhook and email.", no_args_is_help=True)
app.add_typer(alert_app, name="alert")


@alert_app.command("test")
def alert_test(
    channel: Annotated[
        list[str] | None,
        typer.Option(help="Channel to test (telegram, webhook, email); repeat; default all."),
    ] = None,
) -> None:
    """Send a test alert on the configured channels; print ok or failed per channel."""
    settings = _settings()
    from upstox_bot.monitoring.notifiers import send_test_alert

    if not channel and not settings.ALERT_CHANNELS:
        err_console.print("[bold red]error:[/] no alert channels: set ALERT_CHANNELS or --channel")
        raise typer.Exit(2)
    try:
        results = send_test_alert(settings, channel or None)
    except ConfigError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    for result in results:
        if result.ok:
            console.print(f"{result.channel}: [green]ok[/]", highlight=False)
        else:
            console.print(f"{result.channel}: [red]failed[/]: {result.error}", highlight=False)
    raise typer.Exit(0 if all(r.ok for r in results) else 1)


from upstox_bot.api.keys_cli import apikey_app  # noqa: E402 - sub-app registered last

app.add_typer(apikey_app, name="apikey")

from upstox_bot.backtest.cli import backtest, data_app  # noqa: E402 - sub-app registered last

app.command("backtest")(backtest)
app.add_typer(data_app, name="data")


@app.command()
def worker(
    queues: Annotated[
        str, typer.Option(help="Comma-separated queues: feed,ingest,signals,orders,default, all.")
    ] = "all",
    concurrency: Annotated[int, typer.Option(min=1, help="Worker processes or threads.")] = 1,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork, solo or threads.")] = "prefork",
    name: Annotated[str | None, typer.Option(help="Node name (default: worker@host).")] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Health check: ping the workers, exit 0 if any answer.")
    ] = False,
) -> None:
    """Run a Celery worker of the distributed harness (needs REDIS_URL and DATABASE_URL)."""
    settings = _settings()
    from upstox_bot.worker import queues as worker_queues

    try:
        chosen = worker_queues.parse_queues(queues)
    except ValueError as exc:
        err_console.print(f"[bold red]error:[/] --queues: {exc}")
        raise typer.Exit(2) from None
    if not settings.REDIS_URL:
        err_console.print("[bold red]error:[/] the worker needs REDIS_URL")
        raise typer.Exit(2)
    from upstox_bot.worker.app import app as celery_app

    if check:
        destination = [name] if name else None
        replies = celery_app.control.ping(destination=destination, timeout=2.0)
        console.print(json.dumps(replies))
        raise typer.Exit(0 if replies else 1)
    argv = ["worker", "-Q", ",".join(chosen), "-c", str(concurrency), "-P", pool]
    argv += ["-l", settings.LOG_LEVEL, "--without-gossip", "--without-mingle"]
    if name:
        argv += ["-n", name]
    celery_app.worker_main(argv)


@app.command()
def beat(
    check: Annotated[
        bool, typer.Option("--check", help="Health check: exit 0 if beat's heartbeat is fresh.")
    ] = False,
    max_age: Annotated[float, typer.Option(help="Seconds a heartbeat stays fresh.")] = 30.0,
) -> None:
    """Run Celery beat: the session's schedule (universe, token, square-off, reconciliation)."""
    settings = _settings()
    if not settings.REDIS_URL:
        err_console.print("[bold red]error:[/] beat needs REDIS_URL")
        raise typer.Exit(2)
    if check:
        import redis

        from upstox_bot.worker.beat import heartbeat_age_s

        age = heartbeat_age_s(redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2))
        console.print("no heartbeat" if age is None else f"heartbeat {age:.1f} s ago")
        raise typer.Exit(0 if age is not None and age <= max_age else 1)
    from upstox_bot.worker.app import app as celery_app

    settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
    schedule_file = settings.DATA_DIR / "celerybeat-schedule"
    celery_app.start(
        [
            "beat",
            "-S",
            "upstox_bot.worker.beat:HeartbeatScheduler",
            "-s",
            str(schedule_file),
            "-l",
            settings.LOG_LEVEL,
        ]
    )


session_app = typer.Typer(
    help="Simulated sessions on the workers (distributed harness: REDIS_URL, DATABASE_URL).",
    no_args_is_help=True,
)
app.add_typer(session_app, name="session")


def _workers_settings() -> Settings:
    settings = _settings()
    if not settings.REDIS_URL:
        err_console.print(
            "[bold red]error:[/] sessions run on the workers: set REDIS_URL (and DATABASE_URL) "
            "as the workers have them; the embedded bot plays its own with `upstox-bot run`"
        )
        raise typer.Exit(2)
    return settings


@session_app.command("start")
def session_start(
    speed: Annotated[
        float | None,
        typer.Option(help="Simulated seconds per wall second (default SIM_SPEED; 0 = flat out)."),
    ] = None,
    start_date: Annotated[
        str | None, typer.Option("--date", help="The session (YYYY-MM-DD); default today/next.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Market seed (default SIM_SEED).")] = None,
    minutes: Annotated[
        float, typer.Option(help="Simulated minutes from 09:15 (375 = the whole session).")
    ] = 375,
    shards: Annotated[int, typer.Option(help="Feed shards (one feed worker slot each).")] = 1,
) -> None:
    """Start a simulated session on the running workers, at any hour."""
    settings = _workers_settings()
    from upstox_bot.errors import Conflict
    from upstox_bot.runtime.distributed.sessions import start_sim_session
    from upstox_bot.worker.app import enqueue
    from upstox_bot.worker.state import redis_client

    try:
        day = date.fromisoformat(start_date) if start_date else None
    except ValueError:
        err_console.print(f"[bold red]error:[/] --date: not a date: {start_date!r}")
        raise typer.Exit(2) from None
    pace = settings.SIM_SPEED if speed is None else speed
    try:
        specs = start_sim_session(
            settings,
            redis_client(settings.REDIS_URL or ""),
            enqueue,
            trading_date=day,
            speed=pace or None,
            seed=seed,
            minutes=minutes,
            shards=shards,
            sessions=_sessions(settings),
        )
    except (ConfigError, Conflict) as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    first = specs[0]
    console.print(
        f"session {first.trading_date.isoformat()} started for account {first.account}: "
        f"{len(specs)} shard(s) ({', '.join(s.shard for s in specs)}), seed {first.seed}, "
        f"speed {'flat out' if first.speed is None else f'x{first.speed:g}'}",
        highlight=False,
    )


def _sessions(settings: Settings) -> Any:
    from upstox_bot.db.session import make_engine, make_session_factory

    return make_session_factory(make_engine(settings.database_url))


def _session_command(action: str, **args: object) -> None:
    settings = _workers_settings()
    from upstox_bot.runtime.control import Command, CommandKind, NoKernel
    from upstox_bot.worker.control import RedisControl

    control = RedisControl(settings.REDIS_URL or "", settings.ACCOUNT_NAME)
    command = Command(
        kind=CommandKind.SESSION, by="cli", args={"action": action, **args}, reason=action
    )
    try:
        result = asyncio.run(control.send(command))
    except NoKernel as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    except TimeoutError:
        err_console.print("[bold red]error:[/] the account's worker did not answer in time")
        raise typer.Exit(1) from None
    console.print(result.detail, highlight=False)
    raise typer.Exit(0 if result.status.value == "done" else 1)


@session_app.command("pause")
def session_pause(
    at: Annotated[str, typer.Option(help="Market time to pause at (HH:MM, IST).")],
) -> None:
    """Pause the simulated market at a market time of the running session."""
    settings = _workers_settings()
    from upstox_bot.worker.control import RedisControl

    try:
        clock = time.fromisoformat(at)
    except ValueError:
        err_console.print(f"[bold red]error:[/] --at: not a time (HH:MM): {at!r}")
        raise typer.Exit(2) from None
    view = RedisControl(settings.REDIS_URL or "", settings.ACCOUNT_NAME).view()
    if view is None:
        err_console.print("[bold red]error:[/] no session is running (no worker holds the account)")
        raise typer.Exit(1)
    from upstox_bot.domain import IST

    day = view.at.astimezone(IST).date()
    at_ms = int(datetime.combine(day, clock, tzinfo=IST).timestamp() * 1000)
    _session_command("pause_at", at_ms=at_ms)


@session_app.command("resume")
def session_resume() -> None:
    """Resume a paused simulated market."""
    _session_command("resume")


@session_app.command("stop")
def session_stop() -> None:
    """End the running session now (its feeds send their last batch)."""
    _session_command("stop")


# universe refresh, feed, login, token status (upstox/commands.py)
upstox_commands.register(app)


if __name__ == "__main__":  # pragma: no cover
    main()

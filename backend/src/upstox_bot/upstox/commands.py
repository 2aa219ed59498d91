"""The Upstox commands of the ``upstox-bot`` CLI: universe refresh, feed, login, token status.

``cli.py`` mounts them with :func:`register`; heavy imports happen inside each command so that
``upstox-bot --help`` stays fast.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from upstox_bot.config import Settings, load_settings
from upstox_bot.errors import ConfigError, UpstoxBotError

if TYPE_CHECKING:
    from upstox_bot.screening.universe import BanListReport
    from upstox_bot.upstox.feed_protocol import FeedMode
    from upstox_bot.upstox.token_store import TokenStatus

console = Console()
err_console = Console(stderr=True)

universe_app = typer.Typer(help="The NSE F&O stock universe (symbols table).", no_args_is_help=True)
token_app = typer.Typer(help="The Upstox access token.", no_args_is_help=True)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None


def _fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


@universe_app.command("refresh")
def universe_refresh(
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", help="A local instrument file (.json.gz or .json) instead of the download."
        ),
    ] = None,
    ban_list: Annotated[
        str | None, typer.Option(help="F&O ban list path or URL (default FNO_BAN_LIST).")
    ] = None,
) -> None:
    """Download the Upstox instrument master (or read --file) and store the F&O stock universe."""
    settings = _settings()
    from upstox_bot.db import migrate
    from upstox_bot.db.session import make_engine, make_session_factory, session_scope
    from upstox_bot.upstox.universe import refresh_universe

    if file is not None and not file.is_file():
        raise _fail(f"--file: no such file: {file}")
    settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            report = asyncio.run(
                refresh_universe(session, settings, source=file, ban_source=ban_list)
            )
    except (UpstoxBotError, OSError, ValueError) as exc:
        raise _fail(f"universe refresh failed: {exc}", 1) from None
    finally:
        engine.dispose()
    console.print(
        f"{report.stocks} F&O stocks, {report.futures} futures, {report.options} options "
        f"from {report.source} (trading date {report.trading_date})",
        highlight=False,
    )
    console.print(f"index underlyings excluded: {', '.join(report.excluded_indices) or 'none'}")
    console.print(f"ranked by {report.ranked_by}; most liquid: {', '.join(report.top)}")
    if report.deactivated:
        console.print(f"{report.deactivated} instruments no longer in the file were deactivated")
    if report.calendar_days is not None:
        console.print(
            f"NSE calendar: {report.calendar_days} holidays and sessions stored from Upstox",
            highlight=False,
        )
    if report.ban_error is not None:
        _alert_ban_list_failure(settings, report.ban_error, report.ban)
        err_console.print(
            f"[bold yellow]warning:[/] the F&O ban list could not be read ({report.ban_error}); "
            "the last known list stays in force",
            highlight=False,
        )
    if report.ban is not None:
        stale = " (STALE: not today's list)" if report.ban.stale else ""
        kept = " (kept from the last refresh)" if report.ban_error is not None else ""
        console.print(
            f"F&O ban list{stale}{kept}: {', '.join(report.ban.symbols) or 'none'}",
            highlight=False,
        )


def _alert_ban_list_failure(settings: Settings, error: str, kept: BanListReport | None) -> None:
    from upstox_bot.domain import AuditRecord
    from upstox_bot.monitoring.alerts.rules import alerts_for_audit
    from upstox_bot.monitoring.notifiers import dispatcher_from_settings

    record = AuditRecord(
        event="universe.ban_list_failed",
        entity="universe",
        entity_id="ban_list",
        at=datetime.now(UTC),
        data={"error": error, "kept": len(kept.symbols) if kept else 0},
        actor="universe_refresh",
    )
    dispatcher = dispatcher_from_settings(settings)
    dispatcher.start()
    try:
        dispatcher.send_many(alerts_for_audit(record))
    finally:
        dispatcher.close()


def _token(settings: Settings) -> str | None:
    """The usable token: the stored login, else UPSTOX_ACCESS_TOKEN."""
    from sqlalchemy.exc import SQLAlchemyError

    from upstox_bot.db.session import make_engine, make_session_factory
    from upstox_bot.upstox.token_store import token_store_from_settings

    engine = make_engine(settings.database_url)
    try:
        store = token_store_from_settings(settings, make_session_factory(engine))
        token = store.access_token(datetime.now(UTC))
    except SQLAlchemyError:
        env = settings.UPSTOX_ACCESS_TOKEN
        return env.get_secret_value() if env is not None else None
    finally:
        engine.dispose()
    return token.get_secret_value() if token is not None else None


def feed(
    instruments: Annotated[
        str, typer.Option(help="Comma-separated instrument keys, e.g. NSE_EQ|INE002A01018.")
    ],
    mode: Annotated[str, typer.Option(help="ltpc, option_greeks, full or full_d30.")] = "full",
    jsonl: Annotated[bool, typer.Option("--jsonl", help="One JSON object per tick.")] = False,
    max_messages: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many ticks.")
    ] = None,
) -> None:
    """Stream decoded ticks from Upstox Market Data Feed V3 (a first check that it works)."""
    from upstox_bot.upstox.feed_protocol import FeedMode

    settings = _settings()
    keys = [k.strip() for k in instruments.split(",") if k.strip()]
    if not keys or any("|" not in k for k in keys):
        raise _fail("--instruments: give instrument keys like NSE_EQ|INE002A01018")
    try:
        feed_mode = FeedMode(mode)
    except ValueError:
        raise _fail(f"--mode: one of {', '.join(m.value for m in FeedMode)}") from None
    token = _token(settings)
    if not token:
        raise _fail("no Upstox token: run `upstox-bot login` or set UPSTOX_ACCESS_TOKEN")
    try:
        asyncio.run(_stream(settings, token, keys, feed_mode, jsonl, max_messages))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except UpstoxBotError as exc:
        raise _fail(f"feed stopped: {exc}", 1) from None


async def _stream(
    settings: Settings,
    token: str,
    keys: list[str],
    mode: FeedMode,
    jsonl: bool,
    max_messages: int | None,
) -> None:
    from upstox_bot.clock import NseCalendar
    from upstox_bot.upstox.feed_protocol import tick_to_json
    from upstox_bot.upstox.market_feed import MarketDataFeedV3Client, stream_jsonl

    calendar = NseCalendar.default()
    client = MarketDataFeedV3Client(
        api_base_url=settings.UPSTOX_API_BASE_URL,
        access_token=token,
        clock=lambda: datetime.now(UTC),
        is_market_open=calendar.is_open,
    )
    await client.subscribe(keys, mode)
    await client.start()
    try:
        if jsonl:
            await stream_jsonl(client, sys.stdout, max_messages)
            return
        shown = 0
        async for frame in client.frames():
            for tick in frame.ticks:
                values = tick_to_json(tick, frame.quote(tick.instrument_key))
                text = " ".join(f"{k}={v}" for k, v in values.items() if k != "instrument_key")
                sys.stdout.write(f"{tick.instrument_key} {text}\n")
                sys.stdout.flush()
                shown += 1
                if max_messages is not None and shown >= max_messages:
                    return
    finally:
        await client.close()


def login() -> None:
    """Print a one-time link that starts today's Upstox login in your browser (valid ten
    minutes, once), and check the settings the login needs."""
    settings = _settings()
    problems = []
    if not settings.UPSTOX_API_KEY or settings.UPSTOX_API_SECRET is None:
        problems.append("UPSTOX_API_KEY and UPSTOX_API_SECRET are not both set")
    if settings.TOKEN_ENCRYPTION_KEY is None:
        problems.append("TOKEN_ENCRYPTION_KEY is not set (the token is only stored encrypted)")
    for problem in problems:
        err_console.print(f"[bold yellow]warning:[/] {problem}", highlight=False)
    if problems:
        raise typer.Exit(2)
    from sqlalchemy.exc import SQLAlchemyError

    from upstox_bot.api.routers.upstox_auth import issue_login_link
    from upstox_bot.db import migrate
    from upstox_bot.db.session import make_engine, make_session_factory

    engine = make_engine(settings.database_url)
    try:
        migrate.upgrade(settings.database_url)
        url = issue_login_link(make_session_factory(engine), settings, datetime.now(UTC))
    except SQLAlchemyError as exc:
        raise _fail(f"cannot write the database (DATABASE_URL): {exc}", 1) from None
    finally:
        engine.dispose()
    console.print(
        "Open this one-time link in your browser while the bot's API runs (it works once, for "
        f"ten minutes):\n\n  {url}\n",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        "It sends you to Upstox's login page. After you log in, Upstox sends your browser back\n"
        f"to UPSTOX_REDIRECT_URI = {settings.UPSTOX_REDIRECT_URI}\n"
        "(it must be exactly the Redirect URL of your Upstox app), where the bot exchanges the\n"
        "code for today's access token and stores it encrypted. Finish in the same browser that\n"
        "opened the link. The token dies at 03:30 IST: log in again every trading day before\n"
        "09:15. Check it with `upstox-bot token status`.",
        highlight=False,
    )


def _describe(status: TokenStatus) -> str:
    from upstox_bot.domain import IST

    parts = [f"state: {status.state.value}"]
    if status.source is not None:
        parts.append(f"source: {status.source.value}")
    if status.user_id:
        parts.append(f"user: {status.user_id}")
    if status.expires_at is not None:
        parts.append(f"expires: {status.expires_at.astimezone(IST):%Y-%m-%d %H:%M} IST")
    if status.reason:
        parts.append(status.reason)
    return "\n".join(parts)


@token_app.command("status")
def token_status() -> None:
    """Show the Upstox token the bot would use (exit 1 when it is expired or missing)."""
    settings = _settings()
    from sqlalchemy.exc import SQLAlchemyError

    from upstox_bot.db.session import make_engine, make_session_factory
    from upstox_bot.upstox.token_store import token_store_from_settings

    engine = make_engine(settings.database_url)
    try:
        store = token_store_from_settings(settings, make_session_factory(engine))
        status = store.status(datetime.now(UTC))
    except SQLAlchemyError as exc:
        raise _fail(f"cannot read the database (run `upstox-bot db upgrade`): {exc}", 1) from None
    finally:
        engine.dispose()
    console.print(_describe(status), highlight=False)
    if not status.entries_allowed:
        raise typer.Exit(1)


def calendar(
    year: Annotated[
        int | None, typer.Option("--year", min=2000, max=2100, help="The year (default: this one).")
    ] = None,
    fetch: Annotated[
        bool,
        typer.Option(
            "--fetch", help="First fetch this year's list from Upstox and store it (needs a login)."
        ),
    ] = False,
) -> None:
    """List the year's NSE holidays and special sessions, one a line: ISO date, then its name.

    Exit code 1 when the calendar has no list for the year (the bot takes no entries then).
    """
    from upstox_bot.clock import NseCalendar
    from upstox_bot.db import migrate
    from upstox_bot.db.session import make_engine, make_session_factory
    from upstox_bot.domain import IST
    from upstox_bot.runtime import components

    settings = _settings()
    today = datetime.now(UTC).astimezone(IST).date()
    chosen = year or today.year
    stored = settings.DATABASE_URL is not None or (settings.DATA_DIR / "upstox_bot.sqlite").exists()
    if fetch:
        token = _token(settings)
        if not token:
            raise _fail("no Upstox token: run `upstox-bot login` or set UPSTOX_ACCESS_TOKEN")
        settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
        migrate.upgrade(settings.database_url)
        try:
            rows = asyncio.run(_fetch_calendar(settings, token, today.year))
        except UpstoxBotError as exc:
            raise _fail(f"holiday fetch failed: {exc}", 1) from None
        err_console.print(f"stored {rows} calendar rows from Upstox for {today.year}")
        stored = True
    engine = make_engine(settings.database_url) if stored else None
    try:
        sessions = make_session_factory(engine) if engine is not None else None
        try:
            days = components.calendar_days(settings, sessions)
        except (OSError, ValueError) as exc:
            raise _fail(f"HOLIDAYS_FILE: {exc}") from None
    finally:
        if engine is not None:
            engine.dispose()
    known = NseCalendar.from_days(days)
    for day in known.days_of_year(chosen):
        sys.stdout.write(f"{day.day.isoformat()} {day.describe()}\n")
    first = date(chosen, 1, 1)
    warning = known.unknown_date_warning(first)
    if warning is not None:
        err_console.print(f"[bold red]warning:[/] {warning}", highlight=False)
        raise typer.Exit(1)
    if known.is_provisional(first):
        err_console.print(
            f"[bold yellow]warning:[/] the {chosen} list is provisional (fixed-date holidays "
            "only, until NSE publishes its list): refresh it with `upstox-bot calendar --fetch` "
            "in that year, or set HOLIDAYS_FILE",
            highlight=False,
        )


async def _fetch_calendar(settings: Settings, token: str, year: int) -> int:
    from upstox_bot.db.session import make_engine, make_session_factory, session_scope
    from upstox_bot.upstox.client import UpstoxClient
    from upstox_bot.upstox.holidays import fetch_calendar_days, store_calendar_days

    async with UpstoxClient(
        access_token=lambda: token, api_base_url=settings.UPSTOX_API_BASE_URL
    ) as client:
        days = await fetch_calendar_days(client)
    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            return store_calendar_days(session, days, year=year, at=datetime.now(UTC))
    finally:
        engine.dispose()


def doctor() -> None:
    """Check everything live trading needs before the open; print what to fix (exit 1 when
    something blocks trading)."""
    from rich.table import Table

    from upstox_bot.db import migrate
    from upstox_bot.db.session import make_engine, make_session_factory
    from upstox_bot.upstox.doctor import Verdict, run_checks

    settings = _settings()
    settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        checks = asyncio.run(run_checks(settings, make_session_factory(engine)))
    finally:
        engine.dispose()
    marks = {
        Verdict.OK: "[green]ok[/]",
        Verdict.WARN: "[yellow]warn[/]",
        Verdict.FAIL: "[bold red]FAIL[/]",
        Verdict.SKIP: "[dim]skip[/]",
    }
    table = Table(title="upstox-bot doctor", show_lines=False)
    table.add_column("check")
    table.add_column("", justify="center")
    table.add_column("what it found")
    table.add_column("what to do")
    for check in checks:
        table.add_row(check.name, marks[check.verdict], check.detail, check.fix)
    console.print(table)
    blocking = [c for c in checks if c.blocks]
    if blocking:
        names = ", ".join(c.name for c in blocking)
        console.print(f"[bold red]not ready to trade:[/] fix {names}", highlight=False)
        raise typer.Exit(1)
    console.print("[green]ready to trade[/]", highlight=False)


def register(app: typer.Typer) -> None:
    """Mount the Upstox commands on the CLI app."""
    app.add_typer(universe_app, name="universe")
    app.add_typer(token_app, name="token")
    app.command("feed")(feed)
    app.command("calendar")(calendar)
    app.command("login")(login)
    app.command("doctor")(doctor)

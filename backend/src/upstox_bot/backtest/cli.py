"""The `upstox-bot backtest` command and the `upstox-bot data` sub-app (registered in cli.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from upstox_bot.config import Settings, load_settings
from upstox_bot.domain import IST
from upstox_bot.errors import ConfigError
from upstox_bot.money import format_rupees

if TYPE_CHECKING:
    from upstox_bot.backtest.grid import GridRun
    from upstox_bot.backtest.models import BacktestRequest, BacktestResult

data_app = typer.Typer(help="Historical candles for backtests.", no_args_is_help=True)

console = Console()
err_console = Console(stderr=True, soft_wrap=True)
PROGRESS_MIN_BARS = 50_000  # smaller runs finish before a bar would help


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(2)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def _date(text: str | None, option: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise _fail(f"{option}: not a date (YYYY-MM-DD): {text!r}") from None


def _decimal(text: str | None, option: str) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise _fail(f"{option}: not a number: {text!r}") from None
    if not value.is_finite():
        raise _fail(f"{option}: not a number: {text!r}")
    return value


def _split(values: list[str] | None) -> tuple[str, ...]:
    return tuple(part.strip() for v in values or () for part in v.split(",") if part.strip())


def _params(values: list[str] | None) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in values or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise _fail(f"--param {item!r}: expected key=value")
        params[key.strip()] = value.strip()
    return params


@contextmanager
def _progress(label: str, enabled: bool) -> Iterator[Callable[[float], None] | None]:
    if not enabled:
        yield None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=1.0)

        def update(fraction: float) -> None:
            progress.update(task, completed=fraction)

        yield update


def _print_summary(result: BacktestResult) -> None:
    s = result.summary

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}%"

    def num(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    table = Table(title=f"{result.strategy} {result.params} on {', '.join(result.symbols)}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("bars", f"{result.bars:,} ({result.timeframe} candles, {s.sessions} sessions)"),
        ("net P&L", format_rupees(s.net_pnl_paise, signed=True)),
        ("charges", format_rupees(s.charges_paise)),
        ("return", pct(s.return_pct)),
        ("CAGR", pct(s.cagr_pct)),
        ("Sharpe", num(s.sharpe)),
        ("Sortino", num(s.sortino)),
        ("max drawdown", pct(s.max_drawdown_pct)),
        ("win rate", pct(s.win_rate_pct)),
        ("profit factor", num(s.profit_factor)),
        ("exposure", pct(s.exposure_pct)),
        ("trades", str(s.trade_count)),
        ("open at the end", str(len(result.open_positions))),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if result.skipped_bars:
        err_console.print(f"note: {result.skipped_bars} bars outside the NSE session were skipped")


def _print_grid(runs: list[GridRun], metric: str) -> None:
    table = Table(title=f"grid ranked by {metric}")
    for column in ("#", "params", "net P&L", "return", "Sharpe", "max DD", "trades"):
        table.add_column(column, justify="left" if column == "params" else "right")
    for i, run in enumerate(runs, start=1):
        params = ", ".join(f"{k}={v}" for k, v in run.params.items())
        s = run.summary
        if s is None:
            table.add_row(str(i), params, f"error: {run.error}", "", "", "", "")
            continue
        table.add_row(
            str(i),
            params,
            format_rupees(s.net_pnl_paise, signed=True),
            f"{s.return_pct:.2f}%",
            "n/a" if s.sharpe is None else f"{s.sharpe:.2f}",
            f"{s.max_drawdown_pct:.2f}%",
            str(s.trade_count),
        )
    console.print(table)


def backtest(
    data: Annotated[Path, typer.Option(help="A CSV, a folder of CSVs, or a cache folder.")],
    strategy: Annotated[str | None, typer.Option(help="Strategy name (default STRATEGY).")] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="Strategy parameter key=value; repeat.")
    ] = None,
    symbols: Annotated[
        list[str] | None, typer.Option(help="Symbols to use (comma-separated); default all.")
    ] = None,
    from_date: Annotated[str | None, typer.Option("--from", help="First date (IST).")] = None,
    to_date: Annotated[str | None, typer.Option("--to", help="Last date (IST).")] = None,
    timeframe: Annotated[
        str | None, typer.Option(help="Candle timeframe: 1m, 5m, 15m, 1h, 1d; default the data's.")
    ] = None,
    quantity: Annotated[
        int | None, typer.Option(help="Fixed shares per entry instead of risk-based sizing.")
    ] = None,
    capital: Annotated[
        str | None, typer.Option(help="Starting capital in rupees (default ACCOUNT_SIZE).")
    ] = None,
    charges: Annotated[str, typer.Option(help="Charges model: upstox or none.")] = "upstox",
    stop_loss: Annotated[str | None, typer.Option(help="Stop loss %; 0 disables.")] = None,
    take_profit: Annotated[str | None, typer.Option(help="Take profit %; 0 disables.")] = None,
    trailing_stop: Annotated[str | None, typer.Option(help="Trailing stop %; 0 disables.")] = None,
    slippage_bps: Annotated[
        str | None, typer.Option(help="Fill slippage in basis points (default SLIPPAGE_BPS).")
    ] = None,
    grid: Annotated[
        list[str] | None,
        typer.Option(help="Parameter grid name=start:stop:step or name=a,b,c; repeat."),
    ] = None,
    rank: Annotated[str, typer.Option(help="Grid ranking metric.")] = "sharpe",
    workers: Annotated[int | None, typer.Option(help="Grid processes (default CPUs).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result JSON.")] = None,
    report: Annotated[Path | None, typer.Option(help="Write the HTML report.")] = None,
    save: Annotated[
        bool,
        typer.Option(
            help="Store the result in the database (DATABASE_URL, or the SQLite file in "
            "DATA_DIR), where the dashboard and GET /api/v1/backtests list it."
        ),
    ] = True,
) -> None:
    """Backtest a strategy over history with the live engine, risk rules, exits and charges."""
    settings = _settings()
    from upstox_bot.backtest.data import DataError
    from upstox_bot.backtest.grid import parse_grid, run_grid
    from upstox_bot.backtest.models import BacktestRequest
    from upstox_bot.backtest.report import render_html
    from upstox_bot.backtest.service import load_request_data, run_backtest

    try:
        request = BacktestRequest(
            data=str(data),
            strategy=strategy or settings.STRATEGY,
            params=_params(param),
            symbols=_split(symbols),
            start=_date(from_date, "--from"),
            end=_date(to_date, "--to"),
            timeframe=timeframe,
            quantity=quantity,
            capital_rupees=_decimal(capital, "--capital"),
            charges=charges.lower(),
            stop_loss_pct=_decimal(stop_loss, "--stop-loss"),
            take_profit_pct=_decimal(take_profit, "--take-profit"),
            trailing_stop_pct=_decimal(trailing_stop, "--trailing-stop"),
            slippage_bps=_decimal(slippage_bps, "--slippage-bps"),
        )
        if grid:
            spec = parse_grid(grid)
            if report is not None:
                raise ConfigError("--report is for one backtest, not a grid")
            with _progress("grid", console.is_terminal) as update:
                runs = run_grid(
                    request,
                    spec,
                    settings=settings,
                    metric=rank,
                    workers=workers,
                    progress=(lambda done, total: update(done / total)) if update else None,
                )
            _print_grid(runs, rank)
            if json_out is not None:
                body: Any = {"rank": rank, "runs": [r.to_dict() for r in runs]}
                json_out.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
            return
        dataset = load_request_data(request)
        show = console.is_terminal and dataset.bar_count >= PROGRESS_MIN_BARS
        with _progress("backtest", show) as update:
            result = run_backtest(request, settings=settings, dataset=dataset, progress=update)
    except (ConfigError, DataError) as exc:
        raise _fail(str(exc)) from None
    _print_summary(result)
    if json_out is not None:
        json_out.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
        console.print(f"wrote {json_out}")
    if report is not None:
        report.write_text(render_html(result), encoding="utf-8")
        console.print(f"wrote {report}")
    if save:
        _store(settings, request, data, result)


def _store(
    settings: Settings, request: BacktestRequest, data: Path, result: BacktestResult
) -> None:
    """Keep a CLI backtest beside the API's, marked as run by the CLI. A database that cannot
    be used costs a note, never the result already printed."""
    from sqlalchemy.exc import SQLAlchemyError

    from upstox_bot.db import migrate
    from upstox_bot.db.repositories.backtests import BacktestRepository
    from upstox_bot.db.session import make_engine, make_session_factory, session_scope
    from upstox_bot.diagnose import explain

    stored = {**request.to_dict(), "data": str(data.resolve()), "source": "cli"}
    try:
        if not settings.DATABASE_URL:
            settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
        migrate.upgrade(settings.database_url)
        engine = make_engine(settings.database_url)
        try:
            with session_scope(make_session_factory(engine)) as session:
                repo = BacktestRepository(session)
                now = datetime.now(UTC)
                record = repo.create(stored, now)
                repo.mark_running(record.id, now)
                repo.finish(record.id, result.to_dict(), now)
        finally:
            engine.dispose()
    except (SQLAlchemyError, OSError) as exc:
        why = explain(exc, database_url=settings.database_url) or str(exc)
        err_console.print(f"note: the result was not stored ({why}); --no-save skips storing")
        return
    console.print(
        f"stored as backtest {record.id}: the dashboard and GET /api/v1/backtests list it",
        highlight=False,
        soft_wrap=True,
    )


@data_app.command("download")
def download(
    symbols: Annotated[
        list[str], typer.Option(help="Trading symbols or instrument keys (comma-separated).")
    ],
    interval: Annotated[str, typer.Option(help="Candle interval: 1m..300m, 1h..5h or 1d.")],
    from_date: Annotated[str, typer.Option("--from", help="First date (IST).")],
    to_date: Annotated[str, typer.Option("--to", help="Last date (IST).")],
    out: Annotated[
        Path | None, typer.Option(help="Cache folder (default DATA_DIR/candles).")
    ] = None,
) -> None:
    """Download Upstox historical candles into the local cache (resumes where it stopped)."""
    settings = _settings()
    from upstox_bot.backtest.download import Chunk, chunks, download_candles, upstox_interval
    from upstox_bot.upstox.client import UpstoxClient
    from upstox_bot.upstox.errors import UpstoxApiError

    first = _date(from_date, "--from")
    last = _date(to_date, "--to")
    if first is None or last is None:
        raise _fail("--from and --to are required")
    token = settings.UPSTOX_ACCESS_TOKEN
    if token is None:
        raise _fail("no Upstox access token: set UPSTOX_ACCESS_TOKEN")
    names = _split(symbols)
    cache = out or settings.DATA_DIR / "candles"
    today = datetime.now(IST).date()
    try:
        unit, _ = upstox_interval(interval)
        total = len(names) * len(chunks(unit, first, last))
    except ConfigError as exc:
        raise _fail(str(exc)) from None

    async def fetch() -> Any:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} chunks"),
            TimeElapsedColumn(),
            console=err_console,
            disable=not err_console.is_terminal,
        ) as progress:
            task = progress.add_task("download", total=total)

            def advance(symbol: str, chunk: Chunk, fetched: bool) -> None:
                verb = "fetched" if fetched else "cached"
                progress.update(task, advance=1, description=f"{symbol} {chunk.name} {verb}")

            async with UpstoxClient(
                access_token=lambda: token, api_base_url=settings.UPSTOX_API_BASE_URL
            ) as client:
                return await download_candles(
                    client,
                    symbols=names,
                    timeframe=interval,
                    first=first,
                    last=last,
                    cache_dir=cache,
                    today=today,
                    on_chunk=advance,
                )

    try:
        report = asyncio.run(fetch())
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    except UpstoxApiError as exc:
        err_console.print(f"[bold red]error:[/] Upstox: {exc}", highlight=False)
        raise typer.Exit(1) from None
    console.print(
        f"{report.downloaded} chunks fetched, {report.skipped} already cached, "
        f"{report.candles} candles written to {cache / interval.lower()}"
    )


@data_app.command("sample")
def sample(
    out: Annotated[Path, typer.Option(help="Folder to write the CSVs to (created if missing).")],
    symbols: Annotated[
        int, typer.Option(min=1, max=40, help="How many stocks (the most liquid first).")
    ] = 5,
    days: Annotated[int, typer.Option(min=1, max=60, help="How many sessions.")] = 5,
    seed: Annotated[int, typer.Option(help="Market seed of the first session.")] = 7,
    last: Annotated[
        str | None, typer.Option("--to", help="Last session (YYYY-MM-DD); default yesterday.")
    ] = None,
) -> None:
    """Write a small offline set of 1-minute bars generated by the simulated market (not real
    prices), to try `backtest`, `--report` and `--grid` without an Upstox token."""
    from datetime import timedelta

    from upstox_bot.backtest.sample import write_sample
    from upstox_bot.clock import NseCalendar

    settings = _settings()
    calendar = (
        NseCalendar.from_csv(settings.HOLIDAYS_FILE)
        if settings.HOLIDAYS_FILE
        else NseCalendar.default()
    )
    end = _date(last, "--to") or datetime.now(IST).date() - timedelta(days=1)
    try:
        report = write_sample(
            out, calendar=calendar, last=end, symbols=symbols, days=days, seed=seed
        )
    except OSError as exc:
        raise _fail(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    console.print(
        f"wrote {report.bars:,} 1-minute bars of {', '.join(report.symbols)} "
        f"({report.sessions[0]} to {report.sessions[-1]}) to {out}: generated by the simulated "
        f"market (seed {report.seed}), not real prices. Try: upstox-bot backtest --data {out}",
        highlight=False,
        soft_wrap=True,
    )

"""`upstox-bot apikey create|list|revoke`: manage the API's keys (only hashes are stored)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from upstox_bot.config import Settings, load_settings
from upstox_bot.db import migrate
from upstox_bot.db.models import ApiKeyScope
from upstox_bot.db.repositories.api_keys import ApiKeyRepository
from upstox_bot.db.session import make_engine, make_session_factory, session_scope
from upstox_bot.errors import ConfigError, NotFound

apikey_app = typer.Typer(
    help="API keys: a read key for GETs and the stream, a trade key to change state.",
    no_args_is_help=True,
)
console = Console()
err_console = Console(stderr=True)


def _settings() -> Settings:
    try:
        settings = load_settings()
    except ConfigError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.database_url)
    return settings


@apikey_app.command("create")
def create_key(
    name: Annotated[str, typer.Option(help="What the key is for (shown in lists and audits).")] = (
        "cli"
    ),
    scope: Annotated[ApiKeyScope, typer.Option(help="read or trade.")] = ApiKeyScope.READ,
    quiet: Annotated[bool, typer.Option(help="Print the key alone (for scripts).")] = False,
) -> None:
    """Create a key and print it once: it is stored hashed and cannot be shown again."""
    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            record, key = ApiKeyRepository(session).create(name, scope, datetime.now(UTC))
    finally:
        engine.dispose()
    if quiet:
        typer.echo(key)
        return
    console.print(
        f"created {record.scope.value} key #{record.id} {record.name!r}; copy it now, it is not "
        "shown again:",
        highlight=False,
    )
    typer.echo(key)


@apikey_app.command("list")
def list_keys(
    all_keys: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
) -> None:
    """List the keys (prefix, scope, last use); never the keys themselves."""
    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            records = ApiKeyRepository(session).find(include_revoked=all_keys)
    finally:
        engine.dispose()
    table = Table("id", "name", "prefix", "scope", "created", "last used", "revoked")
    for r in records:
        table.add_row(
            str(r.id),
            r.name,
            r.prefix + "...",
            r.scope.value,
            f"{r.created_at:%Y-%m-%d %H:%M}",
            f"{r.last_used_at:%Y-%m-%d %H:%M}" if r.last_used_at else "-",
            f"{r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "-",
        )
    console.print(table)


@apikey_app.command("revoke")
def revoke_key(key_id: Annotated[int, typer.Argument(help="The key's id (see list).")]) -> None:
    """Revoke a key: it stops working at once."""
    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            record = ApiKeyRepository(session).revoke(key_id, datetime.now(UTC))
    except NotFound as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    console.print(f"revoked key #{record.id} {record.name!r}", highlight=False)

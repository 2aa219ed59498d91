"""Fixtures of the API tests: a database filled by the real embedded bot, keys, clients."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from upstox_bot.api.app import create_app
from upstox_bot.config import Settings
from upstox_bot.db.models import ApiKeyScope
from upstox_bot.db.repositories.api_keys import ApiKeyRepository
from upstox_bot.db.session import make_engine, make_session_factory, session_scope
from upstox_bot.runtime.embedded import EmbeddedBot, RunOptions

SESSION_DATE = date(2026, 11, 25)
PLAY_MINUTES = 120  # 09:15-11:15 IST: trades closed and positions still open at the end


def bot_settings(data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, Any] = {
        "DATA_DIR": data_dir,
        "SIM_SYMBOLS": 12,
        "TICK_STORE_INTERVAL_SECONDS": 30,
        **overrides,
    }
    return Settings.model_validate(values)


def play(data_dir: Path, **overrides: object) -> EmbeddedBot:
    """Run the embedded bot over two simulated hours (about a second of wall time)."""
    bot = EmbeddedBot(
        bot_settings(data_dir, **overrides),
        RunOptions(
            speed=100_000,
            duration_minutes=PLAY_MINUTES,
            seed=7,
            start_date=SESSION_DATE,
            serve_api=False,
            live_console=False,
        ),
    )
    asyncio.run(bot.run_market())
    return bot


@dataclass
class Keys:
    read: str
    trade: str
    revoked: str


def make_keys(settings: Settings) -> Keys:
    engine = make_engine(settings.database_url)
    now = datetime.now(UTC)
    with session_scope(make_session_factory(engine)) as session:
        repo = ApiKeyRepository(session)
        _, read = repo.create("reader", ApiKeyScope.READ, now)
        _, trade = repo.create("trader", ApiKeyScope.TRADE, now)
        revoked_record, revoked = repo.create("old", ApiKeyScope.TRADE, now)
        repo.revoke(revoked_record.id, now)
    engine.dispose()
    return Keys(read=read, trade=trade, revoked=revoked)


@pytest.fixture(scope="session")
def played_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder whose SQLite database holds a real two-hour bot session."""
    data_dir = tmp_path_factory.mktemp("played")
    bot = play(data_dir)
    bot.db_engine.dispose()
    return data_dir


@pytest.fixture
def settings(played_dir: Path, tmp_path: Path) -> Settings:
    """Settings over a private copy of the played database (tests may change it)."""
    for path in played_dir.iterdir():
        shutil.copy(path, tmp_path / path.name)
    return bot_settings(tmp_path)


@pytest.fixture
def keys(settings: Settings) -> Keys:
    return make_keys(settings)


@pytest.fixture
def client(settings: Settings, keys: Keys) -> Iterator[TestClient]:
    """The API alone (no bot in the process) with a trade key."""
    with TestClient(create_app(settings), headers={"X-API-Key": keys.trade}) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def universe_from_sample() -> Iterator[None]:
    """The universe refresh reads the shipped instrument master instead of downloading it."""
    from upstox_bot.upstox import universe

    real = universe.refresh_universe
    sample = Path(universe.__file__).parents[1] / "data" / "upstox_instruments_sample.json.gz"

    async def from_sample(session: Any, settings: Any) -> Any:
        return await real(session, settings, source=sample)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(universe, "refresh_universe", from_sample)
        yield


@dataclass
class BotApp:
    bot: EmbeddedBot
    client: TestClient
    keys: Keys


@pytest.fixture
def bot_app(tmp_path: Path) -> Iterator[BotApp]:
    """The API embedded with a bot that has just played two hours (its engine still holds
    its open positions)."""
    bot = play(tmp_path / "bot")
    keys = make_keys(bot.settings)
    with TestClient(bot.create_api(), headers={"X-API-Key": keys.trade}) as test_client:
        yield BotApp(bot=bot, client=test_client, keys=keys)
    bot.db_engine.dispose()

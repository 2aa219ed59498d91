"""The console: a live block that fits any terminal, a summary per session, a word on stop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from rich.console import Console

from tests.unit.api.conftest import SESSION_DATE, play
from upstox_bot.runtime.console import fit_line, render_summary, session_summary, stop_note
from upstox_bot.runtime.embedded import EmbeddedBot, RunOptions


@pytest.fixture(scope="module")
def bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBot]:
    played = play(tmp_path_factory.mktemp("console"))
    yield played
    played.db_engine.dispose()


def _lines(bot: EmbeddedBot, width: int, height: int = 40) -> list[str]:
    console = Console(width=width, height=height, record=True, color_system=None)
    console.print(render_summary(bot, width=width, height=height))
    return console.export_text().splitlines()


@pytest.mark.parametrize("width", [40, 60, 80, 100, 160])
def test_the_live_block_never_needs_more_than_the_width(bot: EmbeddedBot, width: int) -> None:
    assert bot.engine.positions, "the played session leaves positions open"
    lines = _lines(bot, width)
    assert all(len(line) <= width for line in lines), "\n".join(lines)
    text = "\n".join(lines)
    assert "day P&L" in text
    symbols = [bot.instruments[k].trading_symbol for k in bot.engine.positions]
    assert all(symbol[:6] in text for symbol in symbols)


def test_a_narrow_terminal_keeps_the_pnl_column(bot: EmbeddedBot) -> None:
    narrow = "\n".join(_lines(bot, 44))
    wide = "\n".join(_lines(bot, 160))
    assert "P&L" in narrow
    assert "target" not in narrow
    assert "target" in wide


def test_the_block_is_cut_to_the_terminal_height(bot: EmbeddedBot) -> None:
    lines = _lines(bot, 100, height=12)
    assert len(lines) <= 12 or "more" in lines[-1]


def test_fit_line_breaks_between_parts() -> None:
    assert fit_line(["aaaa", "bbbb", "cc"], 11) == ["aaaa · bbbb", "cc"]
    assert fit_line(["a" * 20], 8) == ["aaaaaaa…"]


def test_the_session_summary_counts_the_days_trades(bot: EmbeddedBot) -> None:
    from upstox_bot.runtime.console import _trades_of

    trades = _trades_of(bot, SESSION_DATE)
    text = session_summary(SESSION_DATE, bot.engine.snapshot(), trades)
    assert text.startswith(f"session {SESSION_DATE.isoformat()} ended: {len(trades)} trade(s)")
    assert "₹" in text
    assert f"{len(bot.engine.positions)} position(s) open" in text


def test_stopping_names_the_open_positions_and_the_next_start(bot: EmbeddedBot) -> None:
    note = stop_note(bot)
    assert f"{len(bot.engine.positions)} position(s) left open" in note
    for key, p in bot.engine.positions.items():
        assert f"{bot.instruments[key].trading_symbol} {p.direction.value} {p.quantity}" in note
    assert "the next `upstox-bot run` resumes" in note
    assert "11:15 IST" in note  # the market time it stopped at


def test_a_session_end_is_reported_to_the_hook(tmp_path: Path) -> None:
    from tests.unit.api.conftest import bot_settings

    bot = EmbeddedBot(
        bot_settings(tmp_path),
        RunOptions(
            speed=100_000,
            duration_minutes=375 + 30,  # one whole session and the start of the next
            seed=7,
            start_date=SESSION_DATE,
            serve_api=False,
            live_console=False,
        ),
    )
    ended: list[date] = []
    bot.session_ended = lambda day, snap: ended.append(day)
    asyncio.run(bot.run_market())
    bot.db_engine.dispose()
    assert ended[0] == SESSION_DATE
    assert len(ended) == 2

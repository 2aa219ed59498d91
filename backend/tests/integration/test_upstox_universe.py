"""Universe refresh into the symbols table: shipped sample, simulator download, ban list."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.support.upstox_sim import UpstoxSimulator, upstox_simulator
from upstox_bot.config import Settings
from upstox_bot.db.models import SymbolRow
from upstox_bot.db.repositories.audit import AuditRepository
from upstox_bot.db.repositories.symbols import SymbolRepository
from upstox_bot.domain import Instrument, InstrumentKind
from upstox_bot.monitoring.alerts.model import AlertKind
from upstox_bot.monitoring.alerts.rules import alerts_for_audit
from upstox_bot.screening.instruments import INDEX_UNDERLYINGS
from upstox_bot.upstox.client import RetryPolicy, UpstoxClient
from upstox_bot.upstox.universe import refresh_universe

SAMPLE = Path(str(resources.files("upstox_bot.data").joinpath("upstox_instruments_sample.json.gz")))
NOW = datetime(2026, 11, 25, 4, 0, tzinfo=UTC)  # 09:30 IST

sim = pytest.fixture(upstox_simulator)


def settings(**overrides: Any) -> Settings:
    return Settings(_env_file=None, **overrides)


def sample_records() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(gzip.decompress(SAMPLE.read_bytes()))
    return records


async def test_refresh_from_the_shipped_sample_stores_only_fno_stocks_and_no_index(
    db_session: Session,
) -> None:
    stale = Instrument(instrument_key="NSE_EQ|INE000Z99999", trading_symbol="GONE")
    SymbolRepository(db_session).upsert_many([stale], NOW)

    report = await refresh_universe(db_session, settings(), now=NOW, source=SAMPLE)

    assert report.stocks == 92
    assert report.futures == 92 * 3
    assert report.options == 92 * 6
    assert set(report.excluded_indices) == INDEX_UNDERLYINGS
    assert report.ranked_by == "proxy"
    assert report.deactivated == 1
    rows = db_session.scalars(select(SymbolRow).where(SymbolRow.is_active.is_(True))).all()
    assert len(rows) == 92 * 10
    assert not any(r.segment == "NSE_INDEX" for r in rows)
    assert not {r.underlying_symbol for r in rows} & INDEX_UNDERLYINGS
    assert not {r.trading_symbol for r in rows} & {"SAMPLEAGRO", "NIFTY", "BANKNIFTY"}
    equities = SymbolRepository(db_session).find(kind=InstrumentKind.EQUITY, ranked_only=True)
    assert len(equities) == 92
    assert [e.liquidity_rank for e in equities] == list(range(1, 93))
    reliance = SymbolRepository(db_session).get("NSE_EQ|INE002A01018")
    assert reliance.instrument.lot_size == 500
    assert reliance.instrument.sector == "Oil Gas & Consumable Fuels"
    gone = SymbolRepository(db_session).get("NSE_EQ|INE000Z99999")
    assert not gone.is_active


async def test_refresh_downloads_from_upstox_and_ranks_by_quotes(
    db_session: Session, sim: UpstoxSimulator
) -> None:
    records = sample_records()
    sbin_future = next(
        r["instrument_key"]
        for r in records
        if r.get("underlying_symbol") == "SBIN" and r["instrument_type"] == "FUT"
    )
    sim.rest.set_instruments(records, {sbin_future: Decimal("99999")})
    token = sim.rest.issue_token()
    async with UpstoxClient(
        access_token=lambda: token,
        api_base_url=sim.base_url,
        retry=RetryPolicy(base_delay_s=0.01),
    ) as client:
        report = await refresh_universe(
            db_session, settings(UPSTOX_API_BASE_URL=sim.base_url), now=NOW, client=client
        )

    assert report.stocks == 92
    assert report.ranked_by == "quotes"
    assert sim.rest.requests_to("/market-quote/instruments/exchange/NSE.json.gz")
    # with a token the year's NSE holidays come along: the simulator's year has Republic Day,
    # Christmas, and a Diwali holiday with its Muhurat session (a settlement holiday is skipped)
    assert sim.rest.requests_to("/v2/market/holidays")
    assert report.calendar_days == 4
    # the simulator quotes one volume for all: SBIN's dear near future trades the most value
    ranked = SymbolRepository(db_session).find(kind=InstrumentKind.EQUITY, ranked_only=True)
    assert ranked[0].instrument.trading_symbol == "SBIN"
    assert ranked[0].last_price_paise == 9_999_900
    assert report.top[0] == "SBIN"


async def test_ban_list_file_marks_the_stock_and_its_derivatives(
    db_session: Session, tmp_path: Path
) -> None:
    ban_file = tmp_path / "fo_secban.csv"
    ban_file.write_text("Securities in Ban For Trade Date 25-NOV-2026:\n1,IDEA\n2,SAIL\n3,NOPE\n")

    report = await refresh_universe(
        db_session, settings(FNO_BAN_LIST=str(ban_file)), now=NOW, source=SAMPLE
    )

    assert report.ban is not None
    assert report.ban.symbols == ("IDEA", "NOPE", "SAIL")
    assert report.ban.unknown_symbols == ("NOPE",)
    assert report.ban.banned_keys == 2 * 10
    assert not report.ban.stale
    assert SymbolRepository(db_session).banned_symbols() == {"IDEA", "SAIL"}
    banned_keys = SymbolRepository(db_session).banned_instrument_keys()
    assert len(banned_keys) == 20
    assert "NSE_EQ|INE669E01016" in banned_keys  # IDEA's cash instrument
    repo = SymbolRepository(db_session)
    tradable = {
        r.instrument.trading_symbol
        for r in repo.find(kind=InstrumentKind.EQUITY, exclude_banned=True)
    }
    assert "IDEA" not in tradable
    assert "RELIANCE" in tradable

    ban_file.write_text("Securities in Ban For Trade Date 24-NOV-2026:\n1,SAIL\n")
    report = await refresh_universe(
        db_session, settings(FNO_BAN_LIST=str(ban_file)), now=NOW, source=SAMPLE
    )
    assert report.ban is not None
    assert report.ban.stale  # yesterday's list: applied, but reported
    assert SymbolRepository(db_session).banned_symbols() == {"SAIL"}


async def test_a_failed_ban_list_fetch_keeps_the_last_list_alerts_and_finishes_the_refresh(
    db_session: Session, tmp_path: Path, sim: UpstoxSimulator
) -> None:
    ban_file = tmp_path / "fo_secban.csv"
    ban_file.write_text("Securities in Ban For Trade Date 24-NOV-2026:\n1,IDEA\n")
    await refresh_universe(db_session, settings(FNO_BAN_LIST=str(ban_file)), now=NOW, source=SAMPLE)
    assert SymbolRepository(db_session).banned_symbols() == {"IDEA"}

    # The next morning NSE's URL fails (here: a path the simulator answers with 404).
    unreachable = f"{sim.base_url}/content/fo/fo_secban.csv"
    report = await refresh_universe(
        db_session, settings(FNO_BAN_LIST=unreachable), now=NOW, source=SAMPLE
    )

    assert report.stocks > 0  # the universe refresh finished
    assert report.ban_error is not None
    assert "404" in report.ban_error
    # the last known list stays in force
    assert SymbolRepository(db_session).banned_symbols() == {"IDEA"}
    assert report.ban is not None
    assert report.ban.symbols == ("IDEA",)
    (failed,) = AuditRepository(db_session).find(event="universe.ban_list_failed", limit=10)
    assert failed.data["kept"] == 1
    (alert,) = alerts_for_audit(failed)
    assert alert.kind is AlertKind.BAN_LIST_FAILED
    assert "last known list" in alert.message

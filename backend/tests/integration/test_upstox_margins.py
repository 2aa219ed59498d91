"""Futures on the real feed: contracts (and their expiries) from the instrument file, margins
from Upstox's margin API through the simulator, sizing on them."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.support.factories import make_limits
from tests.support.upstox_sim import FaultKind, UpstoxSimulator, upstox_simulator
from upstox_bot.clock import NseCalendar
from upstox_bot.config import Settings
from upstox_bot.db import migrate
from upstox_bot.db.repositories.symbols import SymbolRepository
from upstox_bot.db.session import make_engine, make_session_factory, session_scope
from upstox_bot.domain import Instrument, InstrumentKind
from upstox_bot.feed.derivatives import ChainPricer
from upstox_bot.risk.checks import RiskManager
from upstox_bot.risk.kill_switch import KillSwitch
from upstox_bot.risk.rate_limit import OrderRateLimiter
from upstox_bot.runtime.live_market import fno_contracts, load_live_futures
from upstox_bot.trading.routing import ContractBook
from upstox_bot.upstox.client import UpstoxClient
from upstox_bot.upstox.errors import UpstoxApiError
from upstox_bot.upstox.margins import future_margin_fractions
from upstox_bot.upstox.universe import refresh_universe

SAMPLE = Path(str(resources.files("upstox_bot.data").joinpath("upstox_instruments_sample.json.gz")))
NOW = datetime(2026, 11, 25, 4, 0, tzinfo=UTC)  # 09:30 IST

sim = pytest.fixture(upstox_simulator)


def _client(upstox: UpstoxSimulator) -> UpstoxClient:
    token = upstox.rest.issue_token()
    return UpstoxClient(access_token=lambda: token, api_base_url=upstox.base_url)


def _sim_future(upstox: UpstoxSimulator) -> dict[str, Any]:
    return next(r for r in upstox.rest.instruments if r.get("instrument_type") == "FUT")


async def test_the_margin_api_answers_as_documented_and_one_lot_gives_the_fraction(
    sim: UpstoxSimulator,
) -> None:
    record = _sim_future(sim)
    lot = int(record["lot_size"])
    async with _client(sim) as client:
        answer = await client.margin(
            [
                {
                    "instrument_key": record["instrument_key"],
                    "quantity": lot,
                    "transaction_type": "BUY",
                    "product": "I",
                    "price": 1000.0,
                }
            ]
        )
        with pytest.raises(UpstoxApiError, match="UDAPI1095"):
            await client.margin(
                [
                    {
                        "instrument_key": record["instrument_key"],
                        "quantity": lot + 1,  # not a whole lot
                        "transaction_type": "BUY",
                        "product": "I",
                    }
                ]
            )
    (leg,) = answer["margins"]
    # the simulator's assumed margins: SPAN 15 % + exposure 5 % of lot x Rs 1,000
    assert leg["span_margin"] == pytest.approx(lot * 150.0)
    assert leg["total_margin"] == pytest.approx(lot * 200.0)
    assert answer["required_margin"] == answer["final_margin"] == pytest.approx(lot * 200.0)


async def test_live_futures_come_from_the_instrument_file_with_upstoxs_margins(
    sim: UpstoxSimulator, tmp_path: Path
) -> None:
    settings = Settings(_env_file=None, DATA_DIR=tmp_path)
    migrate.upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    try:
        with session_scope(sessions) as session:
            await refresh_universe(session, settings, now=NOW, source=SAMPLE)
        with session_scope(sessions) as session:
            tmpv = SymbolRepository(session).get_by_symbol("TMPV", segment="NSE_EQ").instrument
            SymbolRepository(session).set_last_prices({tmpv.instrument_key: 35_165}, NOW)
        futures = fno_contracts(sessions, [tmpv], InstrumentKind.FUTURE)
        # the expiries are the instrument file's: January's on Monday 25 January 2027
        assert sorted(f.expiry or "" for f, _ in futures) == [
            "2026-12-29",
            "2027-01-25",
            "2027-02-23",
        ]
        assert {price for _, price in futures} == {35_165}

        # The simulator answers for its own instrument keys: serve these futures.
        sim.rest.set_instruments(
            [
                {
                    "instrument_key": f.instrument_key,
                    "instrument_type": "FUT",
                    "lot_size": f.lot_size,
                    "trading_symbol": f.trading_symbol,
                }
                for f, _ in futures
            ]
        )
        limits = make_limits()
        risk = RiskManager(limits, OrderRateLimiter(10, 30), KillSwitch())
        book = ContractBook(
            [tmpv],
            trade=InstrumentKind.FUTURE,
            calendar=NseCalendar.default(),
            pricer=ChainPricer(),
            option_min_days_to_expiry=7,
            expiry_exit_sessions=1,
        )
        bot = SimpleNamespace(
            router=book,
            sessions=sessions,
            instruments={tmpv.instrument_key: tmpv},
            engine=SimpleNamespace(set_margins=risk.margin_fractions.update),
        )
        async with _client(sim) as client:
            keys = await load_live_futures(bot, client)  # type: ignore[arg-type]
    finally:
        engine.dispose()
    assert sorted(keys) == sorted(f.instrument_key for f, _ in futures)
    assert len(book.contracts_of(tmpv.instrument_key)) == 3
    # one lot at Rs 351.65: the simulator asks 20 % of it, so the fraction is 0.2 exactly
    assert set(risk.margin_fractions.values()) == {Decimal("0.2")}
    assert risk.margin_fraction(futures[0][0]) == Decimal("0.2")


async def test_a_failed_margin_call_raises_for_the_caller_to_keep_its_fraction(
    sim: UpstoxSimulator,
) -> None:
    record = _sim_future(sim)
    future = Instrument(
        instrument_key=record["instrument_key"],
        trading_symbol="X FUT",
        lot_size=int(record["lot_size"]),
        kind=InstrumentKind.FUTURE,
    )
    sim.rest.fail_next(FaultKind.EXPIRED_TOKEN, path="/v2/charges/margin")
    async with _client(sim) as client:
        with pytest.raises(UpstoxApiError):
            await future_margin_fractions(client, [(future, 100_000)])

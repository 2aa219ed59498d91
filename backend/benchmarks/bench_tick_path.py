"""The per-tick path: candle aggregation plus exit checks over 200 instruments with open positions.

Prints ticks per second through `Engine.on_tick` beside the rate of merely generating the same
ticks with the simulated market (the named baseline, measured in the same run), as a ratio, and
the peak memory of a full simulated session of the embedded bot (`upstox-bot run`) beside a bare
interpreter that imports the same package.

    python benchmarks/bench_tick_path.py [--ticks 1000000] [--instruments 200] [--no-session]

Target: at least 100,000 ticks per second on one core; under 300 MB resident for the embedded
bot over a whole session.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal

from upstox_bot.clock import NseCalendar
from upstox_bot.config import Settings
from upstox_bot.domain import IST, ClientOrderId, Direction, Instrument, Position
from upstox_bot.feed.sim import SimulatedMarket, load_universe
from upstox_bot.risk.checks import RiskManager
from upstox_bot.risk.kill_switch import KillSwitch
from upstox_bot.risk.rate_limit import OrderRateLimiter
from upstox_bot.runtime.components import charges_model, exit_rules, risk_limits, strategy
from upstox_bot.trading.engine import Engine, EngineConfig
from upstox_bot.trading.exits import ExitManager
from upstox_bot.trading.journal import MemoryJournal

DAY = date(2026, 11, 25)


def instruments(count: int) -> tuple[list[Instrument], dict[str, int]]:
    base = load_universe()
    out: list[Instrument] = []
    prices: dict[str, int] = {}
    for i in range(count):
        inst, price = base[i % len(base)]
        if i >= len(base):
            inst = replace(
                inst,
                instrument_key=f"NSE_EQ|BENCH{i:04d}",
                trading_symbol=f"{inst.trading_symbol}{i}",
            )
        out.append(replace(inst, lot_size=1))
        prices[inst.instrument_key] = price
    return out, prices


def market(insts: list[Instrument], prices: dict[str, int]) -> SimulatedMarket:
    return SimulatedMarket(insts, prices, seed=7, trading_date=DAY, calendar=NseCalendar.default())


class _Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def now_ms(self) -> int:
        return self.ms

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.ms / 1000, tz=IST)


def build_engine(insts: list[Instrument], prices: dict[str, int], start_ms: int) -> Engine:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    limits = risk_limits(settings)
    clock = _Clock(start_ms)
    engine = Engine(
        config=EngineConfig(account="bench", capital_paise=limits.capital_paise),
        instruments={i.instrument_key: i for i in insts},
        strategy=strategy(settings),
        risk=RiskManager(limits, OrderRateLimiter(10, 30), KillSwitch()),
        exits=ExitManager(
            replace(exit_rules(settings), stop_loss_pct=Decimal(90), take_profit_pct=Decimal(900))
        ),
        journal=MemoryJournal(),
        charges=charges_model(settings),
        clock=clock,
    )
    entry_at = datetime.fromtimestamp(start_ms / 1000, tz=IST)
    for inst in insts:
        price = prices[inst.instrument_key]
        stop, target = engine.exits.rules.levels(Direction.LONG, price)
        engine.restore_position(
            Position(
                instrument_key=inst.instrument_key,
                direction=Direction.LONG,
                quantity=1,
                lots=1,
                entry_price_paise=price,
                entry_at=entry_at,
                entry_order_id=ClientOrderId(f"bench-{inst.instrument_key}"),
                stop_paise=stop,
                target_paise=target,
                best_price_paise=price,
                last_price_paise=price,
            )
        )
    return engine


def bench_path(n_ticks: int, n_instruments: int) -> None:
    insts, prices = instruments(n_instruments)
    # Baseline: merely generating the ticks.
    t0 = time.perf_counter()
    ticks = []
    for i, tick in enumerate(market(insts, prices).iter_ticks()):
        if i >= n_ticks:
            break
        ticks.append(tick)
    gen_s = time.perf_counter() - t0
    engine = build_engine(insts, prices, ticks[0].ts_ms)
    on_tick = engine.on_tick
    clock = engine.clock
    t0 = time.perf_counter()
    for tick in ticks:
        clock.ms = tick.ts_ms  # type: ignore[attr-defined]
        on_tick(tick)
    path_s = time.perf_counter() - t0
    n = len(ticks)
    gen_rate, path_rate = n / gen_s, n / path_s
    candles = engine.aggregator.stats.candles
    print(
        f"ticks: {n:,} over {n_instruments} instruments, all with open positions; "
        f"{candles:,} candles closed"
    )
    print(f"baseline  generate ticks (SimulatedMarket): {gen_rate:12,.0f} ticks/s")
    print(f"ours      Engine.on_tick (candles + exits):  {path_rate:12,.0f} ticks/s")
    print(
        f"ratio     path / generation: {path_rate / gen_rate:.2f}  "
        f"(target: path >= 100,000 ticks/s: {'met' if path_rate >= 100_000 else 'MISSED'})"
    )


_REPORT_HWM = (
    "import atexit, sys\n"
    "def _hwm():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            sys.stderr.write('PEAK_RSS_KB ' + line.split()[1] + '\\n')\n"
    "atexit.register(_hwm)\n"
)


def peak_rss_mb(code: str, env: dict[str, str]) -> tuple[float, float]:
    """Peak resident memory (VmHWM, MB) of a fresh interpreter running `code`, and its wall time.

    The child reads its own high-water mark at exit: a parent's getrusage(RUSAGE_CHILDREN) would
    count the parent's pages copied at fork.
    """
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _REPORT_HWM + code],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    peaks = [
        line.split()[1] for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_KB ")
    ]
    if proc.returncode != 0 or not peaks:
        raise SystemExit(f"the child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return int(peaks[-1]) / 1024, wall


def bench_session_memory() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DATA_DIR": tmp, "LOG_LEVEL": "WARNING"}
        env.pop("DATABASE_URL", None)
        bare, _ = peak_rss_mb("import upstox_bot.runtime.embedded, upstox_bot.api.app", env)
        args = [
            "run",
            "--speed",
            "1000000",
            "--duration",
            "375",
            "--seed",
            "7",
            "--date",
            DAY.isoformat(),
            "--no-api",
            "--no-live",
        ]
        session, wall = peak_rss_mb(
            f"from upstox_bot.cli import app\napp({args!r}, prog_name='upstox-bot')", env
        )
    print(f"baseline  bare interpreter importing the bot: {bare:8.1f} MB peak RSS")
    print(
        f"ours      full simulated session (40 stocks, {wall:.1f} s wall): {session:8.1f} MB "
        f"peak RSS; ratio {session / bare:.2f} "
        f"(target < 300 MB: {'met' if session < 300 else 'MISSED'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=1_000_000)
    parser.add_argument("--instruments", type=int, default=200)
    parser.add_argument("--no-session", action="store_true", help="skip the memory run")
    args = parser.parse_args()
    bench_path(args.ticks, args.instruments)
    if not args.no_session:
        bench_session_memory()


if __name__ == "__main__":
    main()

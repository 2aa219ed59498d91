"""Run a backtest from a request: settings into rules (the composition root), data, the loop,
the summary. `run_backtest` is what a CLI command, a Celery task or a test calls."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from datetime import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from upstox_bot.backtest.data import DataError, Dataset, load_bars
from upstox_bot.backtest.metrics import summarise
from upstox_bot.backtest.models import CHARGES_MODELS, BacktestRequest, BacktestResult
from upstox_bot.backtest.rules import (
    BacktestExitRules,
    DatedCharges,
    DeliveryCharges,
    no_charges,
)
from upstox_bot.backtest.runner import Backtest, RunConfig
from upstox_bot.clock import SESSION_MS
from upstox_bot.config import Settings, get_settings
from upstox_bot.domain import rupees_to_paise
from upstox_bot.errors import ConfigError
from upstox_bot.feed.replay import DAILY_INTERVAL_S
from upstox_bot.runtime import components
from upstox_bot.signals import registry
from upstox_bot.trading.ports import ChargesModel

_TIMEFRAME = re.compile(r"^(\d+)\s*(m|min|minute|minutes|h|hour|hours|d|day|days)$")
DAILY_CANDLE_S = SESSION_MS // 1000  # a daily candle is the whole session


def parse_timeframe(text: str) -> int:
    """ "5m" -> 300, "1h" -> 3600, "1d" -> DAILY_INTERVAL_S.

    Raises:
        ConfigError: not a timeframe, or more than one day.
    """
    match = _TIMEFRAME.match(text.strip().lower())
    if not match:
        raise ConfigError(f"timeframe {text!r}: expected e.g. 1m, 5m, 15m, 1h or 1d")
    number, unit = int(match.group(1)), match.group(2)[0]
    if number <= 0:
        raise ConfigError(f"timeframe {text!r}: must be positive")
    if unit == "d":
        if number != 1:
            raise ConfigError(f"timeframe {text!r}: daily bars are 1d")
        return DAILY_INTERVAL_S
    seconds = number * (3600 if unit == "h" else 60)
    if seconds > SESSION_MS // 1000:
        raise ConfigError(f"timeframe {text!r}: longer than a session; use 1d")
    return seconds


def format_timeframe(interval_s: int) -> str:
    """DAILY_INTERVAL_S -> "1d", 3600 -> "1h", 300 -> "5m"."""
    if interval_s == DAILY_INTERVAL_S:
        return "1d"
    if interval_s % 3600 == 0:
        return f"{interval_s // 3600}h"
    return f"{interval_s // 60}m"


def _pct(name: str, value: Decimal | None, configured: Decimal) -> Decimal:
    if value is None:
        return configured
    if not value.is_finite() or value < 0 or value >= 100:
        raise ConfigError(f"{name}: {value} is not a percent in 0-100 (0 disables it)")
    return value


def build_config(
    request: BacktestRequest, settings: Settings, dataset: Dataset
) -> tuple[RunConfig, int]:
    """The loop's config from the request, filling gaps from settings; (config, timeframe s).

    Raises:
        ConfigError: an invalid option, or a timeframe the data cannot give.
    """
    data_s = dataset.interval_s
    timeframe_s = parse_timeframe(request.timeframe) if request.timeframe else data_s
    daily = timeframe_s == DAILY_INTERVAL_S
    if dataset.daily and not daily:
        raise ConfigError(f"timeframe {request.timeframe}: the data has daily bars only")
    if not daily and timeframe_s % data_s:
        raise ConfigError(
            f"timeframe {request.timeframe}: not a multiple of the data's "
            f"{format_timeframe(data_s)} bars"
        )
    if request.charges not in CHARGES_MODELS:
        raise ConfigError(f"charges {request.charges!r}: expected one of {CHARGES_MODELS}")
    if request.quantity is not None and request.quantity <= 0:
        raise ConfigError("quantity must be a positive number of shares")
    if request.capital_rupees is not None and request.capital_rupees <= 0:
        raise ConfigError("capital must be positive")
    if request.slippage_bps is not None and not 0 <= request.slippage_bps <= 500:
        raise ConfigError("slippage must be within 0-500 basis points")
    capital = rupees_to_paise(
        request.capital_rupees if request.capital_rupees is not None else settings.ACCOUNT_SIZE
    )
    limits = components.risk_limits(settings, capital_paise=capital)
    configured = components.exit_rules(settings)
    stop = _pct("stop loss", request.stop_loss_pct, configured.stop_loss_pct)
    target = _pct("take profit", request.take_profit_pct, configured.take_profit_pct)
    trail = _pct("trailing stop", request.trailing_stop_pct, configured.trailing_stop_pct)
    square_off: time | None = configured.square_off
    if daily:
        # A daily candle closes at 15:30: entries are decided then and positions are carried
        # overnight (no intraday square-off).
        limits = replace(limits, entry_start=time(0, 0), entry_end=time.max)
        square_off = None
    exits = BacktestExitRules(
        stop_loss_pct=stop,
        take_profit_pct=target,
        trailing_stop_pct=trail,
        square_off=square_off,
        stop_loss=stop != 0,
        take_profit=target != 0,
        trailing_stop=trail != 0,
    )
    charges: ChargesModel
    if request.charges == "none":
        charges = no_charges
    elif daily:
        charges = DatedCharges(DeliveryCharges(settings.BROKERAGE_PER_ORDER))
    else:
        charges = components.charges_model(settings, clamp_rates=True)
    config = RunConfig(
        capital_paise=capital,
        limits=limits,
        exits=exits,
        charges=charges,
        candle_interval_s=DAILY_CANDLE_S if daily else timeframe_s,
        signal_cooldown_s=settings.SIGNAL_COOLDOWN_MINUTES * 60,
        slippage_bps=(
            request.slippage_bps if request.slippage_bps is not None else settings.SLIPPAGE_BPS
        ),
        quantity=request.quantity,
        kill_switch_square_off=settings.KILL_SWITCH_SQUARE_OFF,
        limits_follow_capital=not settings.FIXED_RISK_CAPITAL,
    )
    return config, timeframe_s


def load_request_data(request: BacktestRequest) -> Dataset:
    """The bars a request names (its symbols and dates).

    Raises:
        DataError: unreadable data, or no bars in the range.
    """
    dataset = load_bars(
        Path(request.data),
        symbols=request.symbols or None,
        first=request.start,
        last=request.end,
        exact_prices=True,
    )
    if dataset.bar_count == 0:
        raise DataError(f"{request.data}: no bars between {request.start} and {request.end}")
    return dataset


def run_backtest(
    request: BacktestRequest,
    *,
    settings: Settings | None = None,
    dataset: Dataset | None = None,
    progress: Callable[[float], None] | None = None,
) -> BacktestResult:
    """Backtest a strategy over history with the live engine, risk rules, exits and charges.

    Args:
        request: what to run; unset options take the settings.
        settings: the configured rules; None reads them from the environment.
        dataset: bars already loaded (a grid shares them); None loads `request.data`.
        progress: called with the fraction done (0-1) now and then.

    Raises:
        ConfigError: an invalid option or strategy parameter.
        DataError: unreadable data or no bars in the range.
    """
    settings = settings or get_settings()
    dataset = dataset if dataset is not None else load_request_data(request)
    config, timeframe_s = build_config(request, settings, dataset)
    strategy = registry.create(
        request.strategy,
        request.params,
        strategies_dir=getattr(settings, "STRATEGIES_DIR", None),
    )
    output = Backtest(dataset, strategy, config).run(progress)
    summary = summarise(
        capital_paise=config.capital_paise,
        trades=output.trades,
        equity=output.equity,
        exposure=output.exposure,
    )
    params: dict[str, Any] = dict(strategy.params)
    return BacktestResult(
        strategy=strategy.name,
        params=params,
        timeframe=format_timeframe(timeframe_s),
        symbols=tuple(s.instrument.trading_symbol for s in dataset.series),
        bars=dataset.bar_count,
        skipped_bars=dataset.skipped_bars,
        trades=output.trades,
        open_positions=output.open_positions,
        summary=summary,
        equity=output.equity,
        unfilled_orders=output.unfilled_orders,
        request=request.to_dict(),
    )

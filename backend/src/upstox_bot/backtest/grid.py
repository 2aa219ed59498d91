"""Parameter grids: one backtest per combination, spread over processes, ranked by a metric."""

from __future__ import annotations

import itertools
import multiprocessing
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from upstox_bot.backtest.data import Dataset
from upstox_bot.backtest.models import BacktestRequest, Summary
from upstox_bot.backtest.service import load_request_data, run_backtest
from upstox_bot.config import Settings
from upstox_bot.errors import ConfigError

# metric -> (Summary attribute, higher is better)
RANK_METRICS: dict[str, tuple[str, bool]] = {
    "sharpe": ("sharpe", True),
    "sortino": ("sortino", True),
    "net_pnl": ("net_pnl_paise", True),
    "return": ("return_pct", True),
    "cagr": ("cagr_pct", True),
    "profit_factor": ("profit_factor", True),
    "win_rate": ("win_rate_pct", True),
    "max_drawdown": ("max_drawdown_pct", False),
    "trades": ("trade_count", True),
}
MAX_COMBINATIONS = 10_000


def _number(text: str, spec: str) -> int | Decimal:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ConfigError(f"grid {spec!r}: {text!r} is not a number") from None
    if not value.is_finite():
        raise ConfigError(f"grid {spec!r}: {text!r} is not a number")
    return value


def parse_grid(specs: Sequence[str]) -> dict[str, list[Any]]:
    """Parse `name=start:stop:step` (stop included), `name=a,b,c` or `name=value` specs.

    Raises:
        ConfigError: a malformed spec, an empty or endless range, or a repeated name.
    """
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = name.strip()
        if not sep or not name or not values.strip():
            raise ConfigError(f"grid {spec!r}: expected name=start:stop:step or name=a,b,c")
        if name in grid:
            raise ConfigError(f"grid {spec!r}: {name} is given twice")
        parts = values.split(":")
        if len(parts) in (2, 3):
            start = _number(parts[0], spec)
            stop = _number(parts[1], spec)
            step = _number(parts[2], spec) if len(parts) == 3 else 1
            if step <= 0:
                raise ConfigError(f"grid {spec!r}: the step must be positive")
            if stop < start:
                raise ConfigError(f"grid {spec!r}: stop is below start")
            count = int((Decimal(stop) - Decimal(start)) / Decimal(step)) + 1
            if count > MAX_COMBINATIONS:
                raise ConfigError(f"grid {spec!r}: {count} values is too many")
            grid[name] = [start + i * step for i in range(count)]
        elif len(parts) == 1:
            grid[name] = [_number(v, spec) for v in values.split(",")]
        else:
            raise ConfigError(f"grid {spec!r}: expected name=start:stop:step or name=a,b,c")
    return grid


def combinations(grid: Mapping[str, Sequence[Any]]) -> Iterator[dict[str, Any]]:
    """Every combination of the grid's values, the first name varying slowest."""
    names = list(grid)
    for values in itertools.product(*(grid[n] for n in names)):
        yield {
            n: (float(v) if isinstance(v, Decimal) else v)
            for n, v in zip(names, values, strict=True)
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class GridRun:
    """One combination's outcome: its summary, or the error that stopped it."""

    params: Mapping[str, Any]
    summary: Summary | None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": dict(self.params),
            "summary": self.summary.to_dict() if self.summary else None,
            "error": self.error,
        }


def rank(runs: Sequence[GridRun], metric: str) -> list[GridRun]:
    """Best first by `metric`; runs without the metric (or failed) last, in grid order.

    Raises:
        ConfigError: an unknown metric.
    """
    if metric not in RANK_METRICS:
        raise ConfigError(f"rank {metric!r}: expected one of {', '.join(RANK_METRICS)}")
    attribute, higher = RANK_METRICS[metric]

    def key(run: GridRun) -> tuple[int, float]:
        value = getattr(run.summary, attribute) if run.summary else None
        if value is None:
            return (1, 0.0)
        return (0, -float(value) if higher else float(value))

    return sorted(runs, key=key)


_worker_dataset: Dataset | None = None
_worker_settings: Settings | None = None


def _init_worker(request: BacktestRequest, settings: Settings) -> None:
    global _worker_dataset, _worker_settings  # one dataset per worker process
    _worker_dataset = load_request_data(request)
    _worker_settings = settings


def _run_combination(request: BacktestRequest) -> Summary:
    return run_backtest(request, settings=_worker_settings, dataset=_worker_dataset).summary


def run_grid(
    base: BacktestRequest,
    grid: Mapping[str, Sequence[Any]],
    *,
    settings: Settings,
    metric: str = "sharpe",
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[GridRun]:
    """Backtest every combination of `grid` over `base` in worker processes; rank the runs.

    Each worker loads the data once. A combination that fails (e.g. fast >= slow) is reported
    with its error, not raised.

    Args:
        base: the request whose params the grid's values override.
        grid: parameter name -> values.
        settings: the configured rules, shared by every run.
        metric: the ranking metric (a key of RANK_METRICS).
        workers: processes; None uses the CPU count.
        progress: called with (done, total) after each combination.

    Raises:
        ConfigError: an unknown metric or too many combinations.
    """
    if metric not in RANK_METRICS:
        raise ConfigError(f"rank {metric!r}: expected one of {', '.join(RANK_METRICS)}")
    params = list(combinations(grid))
    if len(params) > MAX_COMBINATIONS:
        raise ConfigError(f"the grid has {len(params)} combinations, at most {MAX_COMBINATIONS}")
    requests = [replace(base, params={**base.params, **p}) for p in params]
    runs: list[GridRun | None] = [None] * len(requests)
    # "spawn", not the platform's "fork": forking a process that runs threads (an API server,
    # the alert dispatcher, a test client) can copy a held lock into the child, which then hangs.
    with ProcessPoolExecutor(
        max_workers=workers,
        initializer=_init_worker,
        initargs=(base, settings),
        mp_context=multiprocessing.get_context("spawn"),
    ) as pool:
        futures = {pool.submit(_run_combination, r): i for i, r in enumerate(requests)}
        for done, future in enumerate(as_completed(futures), start=1):
            i = futures[future]
            try:
                runs[i] = GridRun(params=params[i], summary=future.result())
            except (ConfigError, ValueError) as e:
                runs[i] = GridRun(params=params[i], summary=None, error=str(e))
            if progress is not None:
                progress(done, len(requests))
    return rank([r for r in runs if r is not None], metric)

"""Strategies (one trades at a time: the STRATEGY setting) and dry-run signal tests."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError

from upstox_bot.api.auth import TradeActor
from upstox_bot.api.deps import ControlDep, SessionDep, SettingsDep
from upstox_bot.api.queries import PathId
from upstox_bot.api.routers.market import find_symbol
from upstox_bot.api.routers.settings import change_settings
from upstox_bot.api.routing import GuardedRoute
from upstox_bot.api.schemas.common import ERRORS, ErrorBody
from upstox_bot.api.schemas.control import (
    ParamRead,
    SettingsPatch,
    SettingsPatchRead,
    StrategyParamsUpdate,
    StrategyRead,
)
from upstox_bot.api.schemas.market import SignalTestRead, SignalTestRequest, TestSignalRead
from upstox_bot.config import Settings
from upstox_bot.db.repositories.candles import CandleRepository
from upstox_bot.domain import (
    Candle,
    Direction,
    SignalType,
    datetime_to_ms,
    ms_to_datetime,
    paise_to_rupees,
    rupees_to_paise,
)
from upstox_bot.errors import ConfigError, Conflict, NotFound
from upstox_bot.signals import registry
from upstox_bot.signals.base import Strategy
from upstox_bot.signals.series import CandleSeries

router = APIRouter(tags=["strategies"], responses=ERRORS, route_class=GuardedRoute)


def _build(name: str, params: dict[str, Any] | None) -> Strategy:
    if name not in registry.available():
        raise NotFound(f"unknown strategy {name!r}; available: {', '.join(registry.available())}")
    return registry.create(name, params)


def strategy_read(name: str, settings: Settings) -> StrategyRead:
    """A strategy with its parameters (current values for the active one, defaults otherwise)."""
    active = name == settings.STRATEGY
    strategy = _build(name, settings.STRATEGY_PARAMS if active else None)
    described = strategy.describe()
    return StrategyRead(
        name=name,
        description=str(described["description"]),
        active=active,
        enabled=active,
        startup_candles=strategy.startup_candles,
        parameters=[ParamRead(**p) for p in described["parameters"]],
    )


@router.get("/strategies", response_model=list[StrategyRead])
def list_strategies(settings: SettingsDep) -> list[StrategyRead]:
    """The built-in strategies; `active` marks the one the bot trades."""
    return [strategy_read(name, settings) for name in sorted(registry.available())]


@router.get(
    "/strategies/{name}", response_model=StrategyRead, responses={404: {"model": ErrorBody}}
)
def read_strategy(name: PathId, settings: SettingsDep) -> StrategyRead:
    """One strategy with its parameters."""
    return strategy_read(name, settings)


@router.get(
    "/strategies/{name}/parameters",
    response_model=list[ParamRead],
    responses={404: {"model": ErrorBody}},
)
def read_parameters(name: PathId, settings: SettingsDep) -> list[ParamRead]:
    """A strategy's parameters: type, default, range and current value."""
    return strategy_read(name, settings).parameters


@router.post(
    "/strategies/{name}/enable",
    response_model=SettingsPatchRead,
    responses={404: {"model": ErrorBody}},
)
async def enable_strategy(
    name: PathId, request: Request, control: ControlDep, session: SessionDep, actor: TradeActor
) -> SettingsPatchRead:
    """Make this the strategy the bot trades (its default parameters), live and audited."""
    _build(name, None)
    settings: Settings = request.app.state.settings
    if name == settings.STRATEGY:
        return SettingsPatchRead(changes=[], forced=False)
    patch = SettingsPatch(changes={"STRATEGY": name, "STRATEGY_PARAMS": {}})
    return await change_settings(request, control, session, actor, patch)


@router.post(
    "/strategies/{name}/disable",
    response_model=StrategyRead,
    responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
def disable_strategy(name: PathId, settings: SettingsDep, actor: TradeActor) -> StrategyRead:
    """Disable a strategy. The active one cannot be: enable another (or turn the kill switch
    on to stop new entries); any other is already disabled."""
    read = strategy_read(name, settings)
    if read.active:
        raise Conflict(
            f"{name} is the active strategy: enable another one, or turn the kill switch on "
            "to stop new entries"
        )
    return read


@router.put(
    "/strategies/{name}/parameters",
    response_model=SettingsPatchRead,
    responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
async def update_parameters(
    name: PathId,
    body: StrategyParamsUpdate,
    request: Request,
    control: ControlDep,
    session: SessionDep,
    actor: TradeActor,
) -> SettingsPatchRead:
    """Set the active strategy's parameters (validated by building the strategy; 422 names
    the parameter), live and audited."""
    _build(name, None)
    settings: Settings = request.app.state.settings
    if name != settings.STRATEGY:
        raise Conflict(f"{name} is not the active strategy: enable it first")
    patch = SettingsPatch(changes={"STRATEGY_PARAMS": body.params})
    return await change_settings(request, control, session, actor, patch)


# --- signal test -------------------------------------------------------------------------------


def _posted_candles(body: SignalTestRequest) -> list[Candle]:
    return [
        Candle(
            instrument_key=body.instrument_key,
            interval_s=body.interval_s,
            start_ms=datetime_to_ms(c.start_at),
            open_paise=rupees_to_paise(c.open),
            high_paise=rupees_to_paise(c.high),
            low_paise=rupees_to_paise(c.low),
            close_paise=rupees_to_paise(c.close),
            volume=c.volume,
        )
        for c in body.candles or ()
    ]


def run_signal_test(strategy: Strategy, candles: Sequence[Candle]) -> list[TestSignalRead]:
    """Feed closed candles to the strategy, oldest first, following the position its own
    signals would open and close; return what it said. Nothing is traded or stored."""
    if not candles:
        return []
    first = candles[0]
    capacity = max(300, strategy.startup_candles + 1)
    series = CandleSeries(first.instrument_key, first.interval_s, capacity)
    position: Direction | None = None
    said: list[TestSignalRead] = []
    for candle in candles:
        series.append(candle)
        if len(series) < strategy.startup_candles:
            continue
        for s in strategy.evaluate(series, position=position, now=ms_to_datetime(candle.end_ms)):
            said.append(
                TestSignalRead(
                    candle_start_at=candle.start_at,
                    type=s.type,
                    strength=min(1.0, max(0.0, s.strength)),
                    reason=s.reason,
                    price=paise_to_rupees(candle.close_paise),
                    indicators={
                        k: (None if not math.isfinite(v) else v) for k, v in s.indicators.items()
                    },
                )
            )
            if s.type.is_entry and position is None:
                position = s.type.direction
            elif s.type in (SignalType.EXIT_LONG, SignalType.EXIT_SHORT) and (
                position is s.type.direction
            ):
                position = None
    return said


@router.post(
    "/signals/test",
    response_model=SignalTestRead,
    responses={404: {"model": ErrorBody}},
)
async def test_signals(
    body: SignalTestRequest, session: SessionDep, settings: SettingsDep
) -> SignalTestRead:
    """Run a strategy over posted candles (or the stored candles of a symbol) and return the
    signals it would raise. Read scope: nothing is traded or stored."""
    name = body.strategy or settings.STRATEGY
    params = body.params
    if params is None:
        params = settings.STRATEGY_PARAMS if name == settings.STRATEGY else {}
    try:
        strategy = _build(name, params)
    except ConfigError as exc:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", "params"), "msg": str(exc), "input": params}]
        ) from None

    def load() -> tuple[str, list[Candle]]:
        if body.candles is not None:
            return body.instrument_key, _posted_candles(body)
        key = find_symbol(session, body.instrument_key).instrument.instrument_key
        return key, CandleRepository(session).latest(key, body.interval_s, body.limit)

    key, candles = await run_in_threadpool(load)
    signals = await run_in_threadpool(run_signal_test, strategy, candles)
    return SignalTestRead(
        strategy=name,
        params=dict(strategy.params),
        instrument_key=key,
        candles=len(candles),
        startup_candles=strategy.startup_candles,
        signals=signals,
    )

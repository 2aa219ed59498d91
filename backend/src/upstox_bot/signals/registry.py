"""The registry of strategies: built-ins by name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from upstox_bot.errors import ConfigError
from upstox_bot.signals.base import Strategy
from upstox_bot.signals.strategies.ema_rsi import EmaRsiStrategy

BUILTIN: dict[str, type[Strategy]] = {cls.name: cls for cls in (EmaRsiStrategy,)}


def available() -> dict[str, type[Strategy]]:
    """Every strategy that can be built by name."""
    return dict(BUILTIN)


def create(name: str, params: Mapping[str, Any] | None = None) -> Strategy:
    """Build the named strategy with its parameters.

    Raises:
        ConfigError: unknown name or invalid parameter.
    """
    try:
        cls = BUILTIN[name]
    except KeyError:
        raise ConfigError(
            f"unknown strategy {name!r}; available: {', '.join(sorted(BUILTIN))}"
        ) from None
    return cls(**dict(params or {}))

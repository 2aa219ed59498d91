"""The registry of strategies: the built-ins by name, plus a trader's own from a folder."""

from __future__ import annotations

import importlib.util
import inspect
import logging
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from upstox_bot.errors import ConfigError
from upstox_bot.signals.base import Param, Strategy
from upstox_bot.signals.strategies.ema_rsi import EmaRsiStrategy
from upstox_bot.signals.strategies.orb import OpeningRangeBreakoutStrategy
from upstox_bot.signals.strategies.sma_crossover import SmaCrossoverStrategy
from upstox_bot.signals.strategies.supertrend import SupertrendStrategy
from upstox_bot.signals.strategies.vwap_volume import VwapVolumeStrategy

log = logging.getLogger(__name__)

BUILTIN: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        EmaRsiStrategy,
        SmaCrossoverStrategy,
        OpeningRangeBreakoutStrategy,
        VwapVolumeStrategy,
        SupertrendStrategy,
    )
}

_MODULE_PREFIX = "upstox_bot_user_strategies"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True, slots=True)
class FolderStrategies:
    """What a strategies folder yielded: the strategies by name, and one error per bad file."""

    strategies: dict[str, type[Strategy]] = field(default_factory=dict)
    errors: tuple[ConfigError, ...] = ()


def load_folder(folder: Path) -> FolderStrategies:
    """Import every `*.py` file of `folder` (not its subfolders) and collect its strategies.

    A strategy is a concrete `Strategy` subclass defined in the file with a `name` of lowercase
    letters, digits and underscores. Files whose name starts with "_" are skipped. A file that
    fails to import, defines no strategy, or reuses a name already taken (by a built-in or an
    earlier file, in file-name order) yields a `ConfigError` naming the file, and its strategies
    are left out; the other files load regardless.

    The files run as Python code with the bot's rights: keep the folder the trader's own.

    Raises:
        ConfigError: `folder` is not a directory.
    """
    if not folder.is_dir():
        raise ConfigError(f"STRATEGIES_DIR {folder} is not a directory")
    found: dict[str, type[Strategy]] = {}
    errors: list[ConfigError] = []
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            classes = _strategies_of(path)
            for cls in classes:
                if cls.name in BUILTIN or cls.name in found:
                    raise ConfigError(
                        f"strategy file {path}: strategy name {cls.name!r} is already taken"
                    )
        except ConfigError as e:
            log.warning("strategy.file_error", extra={"path": str(path), "error": str(e)})
            errors.append(e)
            continue
        found.update((cls.name, cls) for cls in classes)
    return FolderStrategies(strategies=found, errors=tuple(errors))


def _strategies_of(path: Path) -> list[type[Strategy]]:
    module_name = f"{_MODULE_PREFIX}.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"strategy file {path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    # Registered while it runs so that dataclasses and pickling inside the file can find it.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        # The trader's file may raise anything on import; report it against the file.
        sys.modules.pop(module_name, None)
        where = f" line {e.lineno}" if isinstance(e, SyntaxError) and e.lineno else ""
        detail = f": {e}" if str(e) else ""
        raise ConfigError(f"strategy file {path}{where}: {type(e).__name__}{detail}") from e
    classes = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, Strategy)
        and obj.__module__ == module_name
        and not inspect.isabstract(obj)
    ]
    if not classes:
        raise ConfigError(f"strategy file {path}: defines no concrete Strategy subclass")
    for cls in classes:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(
                f"strategy file {path}: {cls.__name__}.name must be lowercase letters, digits "
                f"and underscores, got {name!r}"
            )
        params = getattr(cls, "parameters", ())
        if not isinstance(params, tuple) or not all(isinstance(p, Param) for p in params):
            raise ConfigError(f"strategy file {path}: {cls.__name__}.parameters must be Params")
    return classes


def available(strategies_dir: Path | None = None) -> dict[str, type[Strategy]]:
    """Every strategy that can be built by name: the built-ins and the folder's good files.

    Bad files of the folder are logged and left out; `load_folder` returns their errors.

    Raises:
        ConfigError: `strategies_dir` is set but not a directory.
    """
    found = dict(BUILTIN)
    if strategies_dir is not None:
        found.update(load_folder(strategies_dir).strategies)
    return found


def create(
    name: str, params: Mapping[str, Any] | None = None, *, strategies_dir: Path | None = None
) -> Strategy:
    """Build the named strategy with its parameters.

    Args:
        name: a built-in's name or the name of a strategy in `strategies_dir`.
        params: parameter values by name; missing ones take their defaults.
        strategies_dir: the trader's strategies folder (STRATEGIES_DIR), if any.

    Raises:
        ConfigError: unknown name (the message lists the folder's bad files, one of which may
            hold it), invalid parameter, or a folder that is not a directory.
    """
    found = dict(BUILTIN)
    errors: tuple[ConfigError, ...] = ()
    if strategies_dir is not None and name not in BUILTIN:
        loaded = load_folder(strategies_dir)
        found.update(loaded.strategies)
        errors = loaded.errors
    cls = found.get(name)
    if cls is None:
        message = f"unknown strategy {name!r}; available: {', '.join(sorted(found))}"
        if errors:
            message += "; files that failed to load: " + "; ".join(str(e) for e in errors)
        raise ConfigError(message)
    return cls(**dict(params or {}))

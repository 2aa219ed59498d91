"""Whether the engine's hot path runs compiled: the build's mypyc modules, or their sources.

The build (setup.py) compiles a fixed group of modules with mypyc and records the hash of each
source in `_compiled.json`. A compiled module sits beside its source and Python imports it
first, so an edited source would silently run its stale build. Here, at the package's import,
the sources are hashed against that record: when one differs, or when UPSTOX_BOT_INTERPRETED
is set (to anything but 0), every module of the group is imported from its source instead (the
group calls across its modules natively: it runs compiled or interpreted as a whole). A stale
build also warns, naming the changed files; `./setup.sh` rebuilds.

This module is never compiled itself.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

ENV = "UPSTOX_BOT_INTERPRETED"
_ROOT = Path(__file__).parent
_MANIFEST = _ROOT / "_compiled.json"


class StaleBuildWarning(RuntimeWarning):
    """A compiled module's source changed after the build: the sources run instead."""


class _SourceFinder:
    """Finds the modules of the compiled group as their .py files (a sys.meta_path finder)."""

    def __init__(self, sources: Mapping[str, Path]) -> None:
        self.sources = dict(sources)

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        source = self.sources.get(name)
        if source is None:
            return None
        return importlib.util.spec_from_file_location(name, source)


def _source_of(module: str) -> Path:
    return _ROOT.joinpath(*module.split(".")[1:]).with_suffix(".py")


def select() -> tuple[str, ...]:
    """Decide once, before any module of the group is imported; returns the modules that
    run interpreted although a build of them exists (none when the build is current)."""
    if any(isinstance(f, _SourceFinder) for f in sys.meta_path):
        return tuple(next(f for f in sys.meta_path if isinstance(f, _SourceFinder)).sources)
    try:
        recorded: dict[str, str] = json.loads(_MANIFEST.read_text())
    except (OSError, ValueError):
        return ()  # no build: the sources are all there is
    sources = {module: _source_of(module) for module in recorded}
    changed = []
    for module, digest in recorded.items():
        try:
            data = sources[module].read_bytes()
        except OSError:
            continue
        if hashlib.sha256(data).hexdigest() != digest:
            changed.append(module)
    forced = os.environ.get(ENV, "") not in ("", "0")
    if not (forced or changed):
        return ()
    sys.meta_path.insert(0, _SourceFinder(sources))
    if changed and not forced:
        warnings.warn(
            f"upstox-bot: {', '.join(changed)} changed since the build; the compiled "
            "modules run interpreted until ./setup.sh rebuilds them",
            StaleBuildWarning,
            stacklevel=2,
        )
    return tuple(sources)


def compiled(module: ModuleType) -> bool:
    """Whether a module was loaded from a compiled extension rather than its source."""
    return not str(getattr(module, "__file__", "")).endswith(".py")

"""The engine's state is its own: no module outside it assigns to it or mutates its
collections; it is reconfigured, restored and read through the engine's own methods."""

from __future__ import annotations

import re
from pathlib import Path

import upstox_bot

SRC = Path(upstox_bot.__file__).parent
OWN = {SRC / "trading" / "engine.py"}
# `engine.x = ...`, `engine.x.y = ...`, `engine.x[k] = ...`, `engine.x += ...`, and the
# mutating calls of its collections, on any name ending in "engine" (self.engine, bot.engine).
ASSIGN = re.compile(r"\bengine\.[A-Za-z_][\w.]*(\[[^\]]*\])?\s*(?:\+|-|\*)?=(?!=)")
MUTATE = re.compile(
    r"\bengine\.[A-Za-z_][\w.]*\.(?:update|clear|pop|popitem|setdefault|append|extend|"
    r"remove|discard|add)\("
)


def test_no_module_writes_into_the_engine() -> None:
    offences = []
    for path in sorted(SRC.rglob("*.py")):
        if path in OWN:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if ASSIGN.search(code) or MUTATE.search(code):
                offences.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert not offences, "write through the engine's methods:\n" + "\n".join(offences)


def test_the_guard_catches_a_write() -> None:
    assert ASSIGN.search("bot.engine.risk.limits = limits")
    assert ASSIGN.search("engine.positions[key] = position")
    assert MUTATE.search("engine.last_price.update(prices)")
    assert not ASSIGN.search("if engine.positions == other:")

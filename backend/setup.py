"""Build of the compiled modules; everything else about the package is in pyproject.toml.

Two kinds of compiled code, both built from this repository and both with an interpreted twin:

- `upstox_bot.upstox._v3_decoder`, a C extension over the Python C API: it decodes Upstox Market
  Data Feed V3 frames into domain Ticks, the hot path of `feed_protocol.decode_frame`. The
  pure-Python decoder stays the reference and the fallback if the module is absent.
- The engine's hot path (`COMPILED` below), compiled from its own typed Python source by mypyc:
  the same code, run as C. It is what makes a backtest over years of minutes take seconds.
  mypyc compiles a copy of the sources (native_sources.py) in which the dataclasses' `__init__`
  is written out, so that it compiles too, and the built-in strategies are open to interpreted
  subclasses; the sources declare neither.
  `_compiled.json`, written here, records the hash of each compiled source; at import
  (`upstox_bot._native`) the package runs all of them interpreted when one has changed since
  the build, or when UPSTOX_BOT_INTERPRETED=1.

The build needs a C compiler and the Python headers.
"""

import hashlib
import json
import sys
from pathlib import Path

from mypyc.build import mypycify
from setuptools import Extension, setup

sys.path.insert(0, str(Path(__file__).parent))

from native_sources import write_tree

SRC = Path(__file__).parent / "src"
# What mypyc compiles: a copy of the sources with what compiling them needs added
# (native_sources.py: the dataclasses' constructors written out, the built-in strategies
# open to interpreted subclasses).
EXPANDED = Path("build") / "expanded-src"

# Modules compiled together (one mypyc group: they call each other natively, so they run
# compiled or interpreted all at once). Interpreted code cannot subclass a compiled class, so
# the classes here have no interpreted subclass, but for the built-in strategies, which the
# build marks `mypyc_attr(allow_interpreted_subclasses=True)` for file strategies to extend.
COMPILED = (
    "upstox_bot/clock.py",
    "upstox_bot/domain.py",
    "upstox_bot/feed/candles.py",
    "upstox_bot/feed/replay.py",
    "upstox_bot/signals/series.py",
    "upstox_bot/signals/indicators.py",
    "upstox_bot/signals/strategies/ema_rsi.py",
    "upstox_bot/signals/strategies/orb.py",
    "upstox_bot/signals/strategies/sma_crossover.py",
    "upstox_bot/signals/strategies/supertrend.py",
    "upstox_bot/signals/strategies/vwap_volume.py",
    "upstox_bot/trading/engine.py",
    "upstox_bot/trading/brokers/paper.py",
    "upstox_bot/trading/execution.py",
    "upstox_bot/trading/kernel.py",
    "upstox_bot/trading/exits.py",
    "upstox_bot/trading/journal.py",
    "upstox_bot/trading/order_state.py",
    "upstox_bot/trading/routing.py",
    "upstox_bot/trading/charges.py",
    "upstox_bot/risk/checks.py",
    "upstox_bot/risk/sizing.py",
    "upstox_bot/risk/limits.py",
    "upstox_bot/risk/kill_switch.py",
    "upstox_bot/backtest/fastpath.py",
    "upstox_bot/backtest/rules.py",
    "upstox_bot/backtest/runner.py",
)


def _write_manifest() -> None:
    sources = {
        path.removesuffix(".py").replace("/", "."): hashlib.sha256(
            (SRC / path).read_bytes()
        ).hexdigest()
        for path in COMPILED
    }
    text = json.dumps(sources, indent=1, sort_keys=True) + "\n"
    manifest = SRC / "upstox_bot" / "_compiled.json"
    if not manifest.exists() or manifest.read_text() != text:
        manifest.write_text(text)


def _compiled_group() -> list[Extension]:
    write_tree(SRC, EXPANDED, COMPILED)
    extensions = mypycify(
        [
            # The build environment holds only the build requirements (numpy among them, for
            # its types): other third-party types are Any there, and the project's mypy
            # settings (checked by `mypy src`) do not apply to compiling.
            "--config-file=",
            "--ignore-missing-imports",
            "--follow-imports=silent",
            *(str(EXPANDED / path) for path in COMPILED),
        ],
        group_name="upstox_bot",
    )
    for extension in extensions:
        # Floats as the interpreter computes them: no fused multiply-add contraction (GCC
        # contracts by default where the target has FMA, on aarch64 say).
        extension.extra_compile_args = [*extension.extra_compile_args, "-ffp-contract=off"]
    return extensions


_write_manifest()
setup(
    ext_modules=[
        Extension(
            "upstox_bot.upstox._v3_decoder",
            sources=["src/upstox_bot/upstox/_v3_decoder.c"],
            # Price rounding must compute rupees * 100 exactly as Python does: no fused
            # multiply-add contraction.
            extra_compile_args=["-O2", "-ffp-contract=off"],
        ),
        *_compiled_group(),
    ]
)

"""upstox-bot: automated trading of NSE F&O stocks on Upstox."""

from upstox_bot import _native

__version__ = "0.1.0"

# Before any module of the compiled group is imported: their sources, if the build is stale.
INTERPRETED = _native.select()

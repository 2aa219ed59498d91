"""upstox-bot: automated trading of NSE F&O stocks on Upstox."""

__version__ = "0.1.0"

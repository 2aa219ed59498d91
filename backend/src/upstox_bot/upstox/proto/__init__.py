"""Generated protobuf classes of the Upstox Market Data Feed V3 (see README.md to regenerate)."""

"""Test support: builders and the local Upstox simulator."""

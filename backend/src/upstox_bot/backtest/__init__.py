"""Backtests: the live engine driven over historical bars on a simulated clock."""

"""Alerts to the trader: the alert (`model`), one channel's delivery, the dispatcher, the rules.

The channels, and the dispatcher built from the settings, are in `monitoring.notifiers`.
"""

"""Repositories: map rows to domain objects; they flush, never commit (the caller does)."""

from upstox_bot.db.repositories.accounts import AccountRecord, AccountRepository
from upstox_bot.db.repositories.api_keys import ApiKeyRecord, ApiKeyRepository
from upstox_bot.db.repositories.audit import AuditRepository
from upstox_bot.db.repositories.candles import CandleRepository
from upstox_bot.db.repositories.journal import SqlJournal
from upstox_bot.db.repositories.orders import OrderRepository
from upstox_bot.db.repositories.positions import PositionRecord, PositionRepository
from upstox_bot.db.repositories.rate_limits import RateLimitLogRepository
from upstox_bot.db.repositories.settings_overrides import (
    SettingOverride,
    SettingsOverrideRepository,
)
from upstox_bot.db.repositories.signals import SignalRecord, SignalRepository
from upstox_bot.db.repositories.symbols import SymbolRecord, SymbolRepository
from upstox_bot.db.repositories.ticks import TickRepository
from upstox_bot.db.repositories.trades import TradeRepository

__all__ = [
    "AccountRecord",
    "AccountRepository",
    "ApiKeyRecord",
    "ApiKeyRepository",
    "AuditRepository",
    "CandleRepository",
    "OrderRepository",
    "PositionRecord",
    "PositionRepository",
    "RateLimitLogRepository",
    "SettingOverride",
    "SettingsOverrideRepository",
    "SignalRecord",
    "SignalRepository",
    "SqlJournal",
    "SymbolRecord",
    "SymbolRepository",
    "TickRepository",
    "TradeRepository",
]

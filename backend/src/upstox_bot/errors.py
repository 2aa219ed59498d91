"""The error tree of upstox-bot. Each class's docstring tells the caller what to do with it."""

from __future__ import annotations


class UpstoxBotError(Exception):
    """Base of every error the bot raises on purpose."""


class ConfigError(UpstoxBotError):
    """A setting is invalid or unsafe: refuse to start and print the message."""


class NotFound(UpstoxBotError):
    """The requested entity does not exist: answer 404, do not retry."""


class Conflict(UpstoxBotError):
    """The request conflicts with the current state (duplicate, wrong state): answer 409."""


class InvalidTransition(Conflict):
    """An order state change that the transition table forbids: a bug or a stale update; log it."""


class BrokerError(UpstoxBotError):
    """The broker failed an operation."""


class BrokerUnavailable(BrokerError):
    """Transient failure (timeout, 5xx, 429): retry reads; look an order up before placing again."""


class OrderRejected(BrokerError):
    """The broker refused the order: record the rejection, never retry it blindly."""


class OrdersBlocked(BrokerError):
    """The broker refuses every order write of the account for a cause outside the order (the
    token, the registered static IP, the algo registration): nothing was placed. Hold exits and
    send them once the cause is cleared, pause entries, and tell the trader the cause.

    Attributes:
        cause: what blocks the orders (``trading.order_gate.BlockCause`` values).
    """

    def __init__(self, message: str, *, cause: str) -> None:
        super().__init__(message)
        self.cause = cause


class FeedError(UpstoxBotError):
    """The market data feed failed."""


class MalformedFrame(FeedError):
    """A feed frame could not be decoded: count it, log it, skip it."""

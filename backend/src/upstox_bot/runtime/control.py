"""Controls: the commands a trader or an operator sends to a running account, and the one port
they go through.

The API (and the CLI, beat and Telegram) never reach into a harness: they build a `Command`
and send it through a `ControlPort`. The account's kernel applies it between two market events,
audits it once with who and why, commits, and answers with a `CommandResult`. The embedded
harness's port hands the command to its own loop (`LocalControl`); the distributed harness's
port puts it on the account's control stream in Redis, which the worker holding the account
reads (`worker/control.py`). Either way the command takes effect within a second.

What the kernel last committed is readable through the port too (`KernelView`): the API shows
live positions and figures from it, in both harnesses.
"""

from __future__ import annotations

import asyncio
import threading
import time as walltime
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Protocol

from upstox_bot.domain import AccountSnapshot, ClientOrderId, Direction, Position
from upstox_bot.errors import Conflict, NotFound, UpstoxBotError

COMMAND_TIMEOUT_S = 15.0  # how long a sender waits for the kernel's answer (a busy host is slow)


class CommandKind(StrEnum):
    KILL_SWITCH = "kill_switch"  # args: active (bool)
    CLOSE_POSITION = "close_position"  # args: instrument_key
    CANCEL_ORDER = "cancel_order"  # args: client_order_id
    MODIFY_ORDER = "modify_order"  # args: client_order_id, price_paise, quantity, trigger
    MANUAL_ENTRY = "manual_entry"  # args: instrument_key, direction
    SETTINGS = "settings"  # args: changes {setting: value}, already validated and stored
    SQUARE_OFF = "square_off"  # exit every open position (beat, before the close)
    SESSION = "session"  # args: action ("pause_at" with at_ms, "resume", "stop")


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """One control, as sent: what, by whom, why, with its arguments (JSON data)."""

    kind: CommandKind
    by: str
    reason: str = ""
    args: Mapping[str, Any] = field(default_factory=dict)
    command_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "by": self.by,
            "reason": self.reason,
            "args": dict(self.args),
            "command_id": self.command_id,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Command:
        return cls(
            kind=CommandKind(str(data["kind"])),
            by=str(data["by"]),
            reason=str(data.get("reason") or ""),
            args=dict(data.get("args") or {}),
            command_id=str(data["command_id"]),
        )


class CommandStatus(StrEnum):
    DONE = "done"  # applied
    REQUESTED = "requested"  # sent on to the broker; its confirmation comes later
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    REFUSED = "refused"  # a risk rule refused it (a manual entry)
    INVALID = "invalid"


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandResult:
    """The kernel's answer: how it went, a sentence for a human, and data for the caller."""

    status: CommandStatus
    detail: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status.value, "detail": self.detail, "data": dict(self.data)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CommandResult:
        return cls(
            status=CommandStatus(str(data["status"])),
            detail=str(data.get("detail") or ""),
            data=dict(data.get("data") or {}),
        )

    def raise_for_status(self) -> CommandResult:
        """This result, or the error it stands for.

        Raises:
            NotFound, Conflict, CommandRefused, CommandInvalid: what the kernel answered.
        """
        if self.status is CommandStatus.NOT_FOUND:
            raise NotFound(self.detail)
        if self.status is CommandStatus.CONFLICT:
            raise Conflict(self.detail)
        if self.status is CommandStatus.REFUSED:
            raise CommandRefused(self.detail)
        if self.status is CommandStatus.INVALID:
            raise CommandInvalid(self.detail)
        return self


class CommandRefused(Conflict):
    """A risk rule refused the command (a manual entry); the detail names the rule."""

    code = "risk_refused"


class CommandInvalid(UpstoxBotError):
    """The command cannot be applied as given (the detail says why)."""

    code = "invalid_command"


class NoKernel(Conflict):
    """No kernel holds the account right now (the bot is not running, or a worker is taking
    it over): the command was not applied."""

    code = "bot_not_running"


class NoAnswer(UpstoxBotError):
    """The kernel did not answer in time (busy, or taken over mid-command): the command may
    still be applied; look at the audit log before sending it again."""

    code = "bot_not_answering"


@dataclass(frozen=True, slots=True, kw_only=True)
class KillSwitchView:
    active: bool
    reason: str
    changed_at: datetime | None
    changed_by: str


@dataclass(frozen=True, slots=True, kw_only=True)
class KernelView:
    """What a running kernel last committed, for readers outside it (the API)."""

    at: datetime  # market time
    account: AccountSnapshot
    positions: tuple[Position, ...]
    symbols: Mapping[str, str]  # trading symbol by instrument key (what the kernel trades)
    kill_switch: KillSwitchView
    open_positions: int  # positions, and entries on their way, counted against the limit
    exits_waiting: int  # positions exiting or queued to exit
    orders_in_flight: tuple[str, ...]  # client order ids not yet terminal
    last_prices: Mapping[str, int]  # paise
    limits: Mapping[str, Any]  # the risk limits in force (JSON data)
    orders_last_minute: int
    seconds_until_next_order: float
    entries_paused: str | None
    market: str  # "running", "paused", "finished"


@dataclass(slots=True)
class LiveStats:
    """What the console and /health show about the running loop."""

    ticks: int = 0
    started_wall: float = field(default_factory=walltime.monotonic)
    recent: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=40))
    market_now: datetime | None = None
    trading_date: date | None = None
    finished: bool = False
    last_tick_wall: float | None = None  # monotonic time the last tick was processed
    # wall seconds from the tick that closed a candle to its entry orders being sent
    candle_to_order_s: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    tick_errors: int = 0  # live feed: ticks whose processing failed (logged, skipped)
    timer_errors: int = 0  # live loop: timer steps that failed (logged, tried again)

    def ticks_per_second(self) -> float:
        if len(self.recent) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.recent[0], self.recent[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


class ControlPort(Protocol):
    """Where controls go and where the running kernel's view comes from."""

    async def send(
        self, command: Command, *, timeout_s: float = COMMAND_TIMEOUT_S
    ) -> CommandResult:
        """Apply the command in the account's kernel and return its answer.

        Raises:
            NoKernel: no kernel holds the account (nothing was applied).
        """
        ...

    def view(self) -> KernelView | None:
        """The running kernel's last committed view, or None when none runs."""
        ...


# --- the embedded harness's port ----------------------------------------------------------------


Applier = Callable[[Command], CommandResult]


class LocalControl:
    """The port of a kernel running in this process, on its own event loop.

    A command is handed to the kernel's loop and applied there between two market events; the
    caller (on any thread or loop) awaits the answer.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._apply: Applier | None = None
        self._view: KernelView | None = None
        self._lock = threading.Lock()

    def attach(self, loop: asyncio.AbstractEventLoop, apply: Applier) -> None:
        """The kernel is running on `loop`; commands go to `apply` there."""
        with self._lock:
            self._loop, self._apply = loop, apply

    def detach(self) -> None:
        with self._lock:
            self._loop = self._apply = None
            self._view = None

    def publish(self, view: KernelView) -> None:
        """The kernel's newest committed view (called by the kernel after each commit)."""
        self._view = view

    def view(self) -> KernelView | None:
        return self._view

    async def send(
        self, command: Command, *, timeout_s: float = COMMAND_TIMEOUT_S
    ) -> CommandResult:
        with self._lock:
            loop, apply = self._loop, self._apply
        if loop is None or apply is None:
            raise NoKernel("the bot is not running here: start it with `upstox-bot run`")
        if loop.is_closed():
            # The market loop has ended and nothing else moves the kernel: apply it here.
            with self._lock:
                return apply(command)
        future = asyncio.run_coroutine_threadsafe(_call(apply, command), loop)
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)


async def _call(apply: Applier, command: Command) -> CommandResult:
    return apply(command)


# --- the view as JSON (the distributed harness keeps it in Redis) -------------------------------


def view_to_json(view: KernelView) -> dict[str, Any]:
    """A view as JSON data (paise, ISO times)."""
    account = view.account
    return {
        "at": view.at.isoformat(),
        "account": {
            "trading_date": account.trading_date,
            "capital_paise": account.capital_paise,
            "realised_pnl_paise": account.realised_pnl_paise,
            "unrealised_pnl_paise": account.unrealised_pnl_paise,
            "charges_paise": account.charges_paise,
            "open_positions": account.open_positions,
            "trades": account.trades,
            "orders": account.orders,
            "loss_limit_paise": account.loss_limit_paise,
            "loss_limit_hit": account.loss_limit_hit,
            "kill_switch": account.kill_switch,
        },
        "positions": [_position_to_json(p) for p in view.positions],
        "symbols": dict(view.symbols),
        "kill_switch": {
            "active": view.kill_switch.active,
            "reason": view.kill_switch.reason,
            "changed_at": None
            if view.kill_switch.changed_at is None
            else view.kill_switch.changed_at.isoformat(),
            "changed_by": view.kill_switch.changed_by,
        },
        "open_positions": view.open_positions,
        "exits_waiting": view.exits_waiting,
        "orders_in_flight": list(view.orders_in_flight),
        "last_prices": dict(view.last_prices),
        "limits": dict(view.limits),
        "orders_last_minute": view.orders_last_minute,
        "seconds_until_next_order": view.seconds_until_next_order,
        "entries_paused": view.entries_paused,
        "market": view.market,
    }


def view_from_json(data: Mapping[str, Any]) -> KernelView:
    """The view `view_to_json` wrote."""
    switch = data["kill_switch"]
    return KernelView(
        at=datetime.fromisoformat(data["at"]),
        account=AccountSnapshot(**data["account"]),
        positions=tuple(_position_from_json(p) for p in data["positions"]),
        symbols=dict(data["symbols"]),
        kill_switch=KillSwitchView(
            active=bool(switch["active"]),
            reason=str(switch["reason"]),
            changed_at=None
            if switch["changed_at"] is None
            else datetime.fromisoformat(switch["changed_at"]),
            changed_by=str(switch["changed_by"]),
        ),
        open_positions=int(data["open_positions"]),
        exits_waiting=int(data["exits_waiting"]),
        orders_in_flight=tuple(data["orders_in_flight"]),
        last_prices={str(k): int(v) for k, v in dict(data["last_prices"]).items()},
        limits=dict(data["limits"]),
        orders_last_minute=int(data["orders_last_minute"]),
        seconds_until_next_order=float(data["seconds_until_next_order"]),
        entries_paused=data.get("entries_paused"),
        market=str(data["market"]),
    )


def _position_to_json(p: Position) -> dict[str, Any]:
    return {
        "instrument_key": p.instrument_key,
        "direction": p.direction.value,
        "quantity": p.quantity,
        "lots": p.lots,
        "entry_price_paise": p.entry_price_paise,
        "entry_at": p.entry_at.isoformat(),
        "entry_order_id": p.entry_order_id,
        "stop_paise": p.stop_paise,
        "target_paise": p.target_paise,
        "trailing_active": p.trailing_active,
        "best_price_paise": p.best_price_paise,
        "trail_stop_paise": p.trail_stop_paise,
        "last_price_paise": p.last_price_paise,
        "entry_charges_paise": p.entry_charges_paise,
        "strategy": p.strategy,
        "exit_pending": p.exit_pending,
    }


def _position_from_json(d: Mapping[str, Any]) -> Position:
    return Position(
        instrument_key=str(d["instrument_key"]),
        direction=Direction(str(d["direction"])),
        quantity=int(d["quantity"]),
        lots=int(d["lots"]),
        entry_price_paise=int(d["entry_price_paise"]),
        entry_at=datetime.fromisoformat(d["entry_at"]),
        entry_order_id=ClientOrderId(str(d["entry_order_id"])),
        stop_paise=int(d["stop_paise"]),
        target_paise=int(d["target_paise"]),
        trailing_active=bool(d["trailing_active"]),
        best_price_paise=int(d["best_price_paise"]),
        trail_stop_paise=None if d["trail_stop_paise"] is None else int(d["trail_stop_paise"]),
        last_price_paise=int(d["last_price_paise"]),
        entry_charges_paise=int(d["entry_charges_paise"]),
        strategy=str(d["strategy"]),
        exit_pending=bool(d["exit_pending"]),
    )

"""The account kernel: one account's trading core, built once from Settings for every harness.

Every harness (embedded, distributed, replay) runs an account through an `AccountKernel`. It
builds the engine, the risk manager, the exits, the broker, the durable order executor and the
alerts from `Settings` and a few ports (the store, the order-rate window, the paper book, the
event sink, the alert sink), and offers what a harness needs: step a tick, fire a timer, apply
a control, commit, recover. A harness keeps only its transport: where the market's ticks come
from, how it is paced, and where it keeps its place in the stream (`position`).
"""

from __future__ import annotations

import copy
import logging
import time as walltime
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy.orm import Session

from upstox_bot.clock import MarketClock, NseCalendar
from upstox_bot.config import Settings
from upstox_bot.db.models import AccountMode
from upstox_bot.db.repositories.accounts import AccountRepository
from upstox_bot.db.repositories.checkpoints import Checkpoint
from upstox_bot.db.repositories.settings_overrides import (
    LIVE_ENGINE,
    LIVE_EXITS,
    LIVE_RISK,
    LIVE_STRATEGY,
    setting_changed,
)
from upstox_bot.db.repositories.trades import TradeRepository
from upstox_bot.domain import (
    IST,
    AuditRecord,
    Direction,
    ExitReason,
    Instrument,
    InstrumentKind,
    Order,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    RiskDecision,
    Signal,
    SignalId,
    SignalStatus,
    SignalType,
    Tick,
    datetime_to_ms,
    rupees_to_paise,
)
from upstox_bot.errors import Conflict, NotFound
from upstox_bot.monitoring.alerts.dispatcher import AlertDispatcher
from upstox_bot.monitoring.alerts.rules import end_of_day_summary
from upstox_bot.risk.checks import RiskManager
from upstox_bot.risk.kill_switch import KillSwitch
from upstox_bot.risk.rate_limit import OrderRateLimiter
from upstox_bot.runtime import components
from upstox_bot.runtime.control import (
    Command,
    CommandKind,
    CommandResult,
    CommandStatus,
    KernelView,
    KillSwitchView,
)
from upstox_bot.runtime.live_switch import check_live_start
from upstox_bot.runtime.store import AccountStore
from upstox_bot.trading.brokers.paper import PaperBroker
from upstox_bot.trading.brokers.persistent import PaperBook, PersistentPaperBroker
from upstox_bot.trading.engine import Engine, EngineConfig, derive_id
from upstox_bot.trading.execution import OrderExecutor
from upstox_bot.trading.exits import ExitManager
from upstox_bot.trading.journal import BufferedJournal
from upstox_bot.trading.kernel import TradingCore
from upstox_bot.trading.ports import Broker, CancelOutcome, OrderChange
from upstox_bot.trading.routing import ContractBook

log = logging.getLogger(__name__)

MANUAL_STRATEGY = "manual"

Ops = Sequence[tuple[str, tuple[Any, ...]]]
_A = TypeVar("_A")


class EventSink(Protocol):
    """Where a kernel's committed facts go live (the API's stream): never before the commit."""

    def committed(self, ops: Ops, view: KernelView) -> None:
        """`ops` were just committed (journal calls as (name, args)); `view` is the state."""
        ...


class SessionHook(Protocol):
    """The harness's answer to session controls (pause the simulated market, resume, stop)."""

    def __call__(self, command: Command) -> CommandResult: ...


@dataclass(slots=True, kw_only=True)
class KernelPorts:
    """What a harness plugs into its kernel.

    Args:
        store: the account's records, checkpoint and recovery reader.
        rate_limiter: the order-rate window (in memory, or shared through Redis).
        paper_book: durable storage of the paper broker's book (Redis); None keeps it in
            memory.
        live_broker: the broker to trade through instead of the paper broker (Upstox).
        events: where committed facts are published.
        alerts: where alerts go (the same rules in every harness).
        after_place: called right after the broker accepted an order (fault injection).
    """

    store: AccountStore
    rate_limiter: OrderRateLimiter
    paper_book: PaperBook | None = None
    live_broker: Broker | None = None
    events: EventSink | None = None
    alerts: AlertDispatcher | None = None
    after_place: Callable[[Order], None] | None = None


@dataclass(slots=True)
class RecoveryReport:
    positions: list[str] = field(default_factory=list)
    orders_in_flight: list[str] = field(default_factory=list)
    queued_exits: list[str] = field(default_factory=list)
    realised_paise: int = 0
    trading_date: date | None = None

    def summary(self) -> str:
        return (
            f"{len(self.positions)} open position(s), {len(self.orders_in_flight)} order(s) in "
            f"flight, {len(self.queued_exits)} queued exit(s), realised {self.realised_paise} "
            f"paise on {self.trading_date}"
        )


class AccountKernel:
    """One account's engine, broker, executor and alerts, driven by a harness.

    Args:
        settings: the effective settings (stored overrides applied).
        harness: whose checkpoint this kernel keeps ("embedded", "distributed").
        instruments: the stocks the strategy watches, by instrument key.
        clock: the market clock the harness moves.
        ports: see `KernelPorts`.
        router: what is traded on a signal (F&O contracts); None trades the stock.
        calendar: the NSE calendar: no entry on a date it does not know.
        position: the harness's place in its market stream, saved with every commit.
        fenced: commits are fenced by this instance's token (a shared account: the
            distributed harness), so that a holder that lost the account cannot commit.
        on_session: the harness's handler of session controls.
        force_live_reason: why to trade live before the paper period is over (audited).

    Raises:
        ConfigError: the live switches are set without the paper period or a reason.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        harness: str,
        instruments: Mapping[str, Instrument],
        clock: MarketClock,
        ports: KernelPorts,
        router: ContractBook | None = None,
        calendar: NseCalendar | None = None,
        position: Callable[[], Mapping[str, Any]] | None = None,
        fenced: bool = False,
        on_session: SessionHook | None = None,
        force_live_reason: str | None = None,
    ) -> None:
        self.settings = settings
        self.account = settings.ACCOUNT_NAME
        self.harness = harness
        self.clock = clock
        self.ports = ports
        self.store = ports.store
        self.instruments = dict(instruments)
        self.symbols = {k: i.trading_symbol for k, i in self.instruments.items()}
        self.position = position or dict
        self.on_session = on_session
        self.holder = uuid.uuid4().hex if fenced else None
        self.number = 0  # commits this instance made (fencing)
        self.journal = BufferedJournal()
        self.ticks: list[Tick] = []  # sampled ticks to store with the next commit
        self._extra: list[Callable[[Session], None]] = []  # writes for the next commit
        self.market = "running"
        # The paper period, whatever set the live switches (runtime/live_switch.py).
        self.live_start = check_live_start(
            settings, ports.store.sessions, force_reason=force_live_reason
        )
        if self.live_start is not None:
            forced = self.live_start.forced_reason is not None
            self.journal.audit(
                AuditRecord(
                    event="live.forced" if forced else "live.started",
                    entity="account",
                    entity_id=self.account,
                    at=datetime.now(UTC),
                    data=self.live_start.audit_data(),
                    actor="startup",
                )
            )
        starting = rupees_to_paise(settings.ACCOUNT_SIZE)
        # What an earlier instance wrote ahead of its orders and did not settle (it died in
        # between) goes into the tables before anything is read from them.
        self.store.settle_pending()
        record = self.store.prepare(
            self.instruments.values(),
            starting_capital_paise=starting,
            mode=AccountMode.PAPER if settings.PAPER_TRADING else AccountMode.LIVE,
        )
        self.starting_capital_paise = record.starting_capital_paise
        follow = not settings.FIXED_RISK_CAPITAL
        capital = (
            self.store.capital_on(self.today(), record.starting_capital_paise)
            if follow
            else record.starting_capital_paise
        )
        limits = components.risk_limits(settings, capital_paise=capital)
        kill = KillSwitch(active=record.kill_switch, reason=record.kill_switch_reason)
        self.engine = Engine(
            config=EngineConfig(
                account=self.account,
                capital_paise=capital,
                candle_interval_s=settings.CANDLE_INTERVAL_MINUTES * 60,
                signal_cooldown_s=settings.SIGNAL_COOLDOWN_MINUTES * 60,
                kill_switch_square_off=settings.KILL_SWITCH_SQUARE_OFF,
                limits_follow_capital=follow,
            ),
            instruments=self.instruments,
            strategy=components.strategy(settings),
            risk=RiskManager(limits, ports.rate_limiter, kill, calendar=calendar),
            exits=ExitManager(components.exit_rules(settings)),
            journal=self.journal,
            charges=components.charges_model(settings),
            clock=clock,
            router=router,
        )
        self.engine.ban(self.store.banned())
        self.router = router
        self.paper: PaperBroker | PersistentPaperBroker | None = None
        fills_of = None
        if ports.live_broker is not None:
            self.broker: Broker = ports.live_broker
        elif ports.paper_book is not None:
            persistent = PersistentPaperBroker(
                book=ports.paper_book,
                clock=clock,
                slippage_bps=settings.SLIPPAGE_BPS,
                tick_size_paise=self.tick_size_paise,
            )
            self.broker = self.paper = persistent
            fills_of = persistent.fills_of
        else:
            paper = PaperBroker(
                clock=clock,
                slippage_bps=settings.SLIPPAGE_BPS,
                tick_size_paise=self.tick_size_paise,
            )
            self.broker = self.paper = paper
        self._unpublished: list[tuple[str, tuple[Any, ...]]] = []  # committed, not published
        # Written ahead of a market event's orders, not yet in their tables (`_write_ahead`).
        self._ahead: list[tuple[int, Ops, list[Tick]]] = []
        self._in_market_event = False
        # When (epoch s) the latest orders were durable and handed to the broker: the end of
        # the candle-to-order latency the harnesses measure.
        self.handed_at = 0.0
        self.executor = OrderExecutor(
            engine=self.engine,
            broker=self.broker,
            journal=self.journal,
            commit=self._write_ahead,
            fills_of=fills_of,
            after_place=ports.after_place,
        )
        self.core = TradingCore(
            engine=self.engine, executor=self.executor, clock=clock, paper=self.paper
        )
        # Deadlines, re-pricing, held exits and modifies of working orders (trading/desk.py).
        self.desk = components.order_desk(
            settings,
            engine=self.engine,
            executor=self.executor,
            tick_size_paise=self.tick_size_paise,
        )

    # --- helpers ------------------------------------------------------------------------------

    def today(self) -> date:
        """The IST date of market time."""
        return self.clock.now().astimezone(IST).date()

    def tick_size_paise(self, key: str) -> int:
        contract = self.router.instrument_or_none(key) if self.router is not None else None
        if contract is not None:
            return contract.tick_size_paise
        return self.instruments[key].tick_size_paise

    def _kind_of(self, key: str) -> InstrumentKind:
        instrument = self.instruments.get(key) or (
            self.router.instrument_or_none(key) if self.router is not None else None
        )
        return instrument.kind if instrument is not None else InstrumentKind.EQUITY

    def use_broker(self, broker: Broker, *, lookup_window_ms: int = 0) -> None:
        """Trade through `broker` from now on (the live broker, once its gates are passed).

        Args:
            lookup_window_ms: how long its book may take to show an order sent (an order not
                found sooner is looked up again, never sent twice).
        """
        self.broker = broker
        self.executor.broker = broker
        self.executor.lookup_window_ms = lookup_window_ms
        self.paper = None
        self.core.paper = None

    # --- market events ------------------------------------------------------------------------

    def step(self, tick: Tick) -> list[OrderIntent]:
        """Apply one tick (clock, paper fills, engine, orders); returns the intents sent."""
        return self._market_event(self.core.step_tick, tick)

    def timer(self, now_ms: int) -> list[OrderIntent]:
        """Move market time without a trade, and tend the working orders (deadlines,
        re-pricing); returns the intents sent."""

        def fire(now_ms: int) -> list[OrderIntent]:
            intents = self.core.fire_timer(now_ms)
            self.desk.tend()
            return intents

        return self._market_event(fire, now_ms)

    def _market_event(
        self, apply: Callable[[_A], list[OrderIntent]], event: _A
    ) -> list[OrderIntent]:
        """Apply a market event, its orders written ahead (`_write_ahead`); once they are out,
        settle what was written ahead of them and publish it."""
        self.handed_at = 0.0
        self._in_market_event = True
        try:
            intents = apply(event)
        finally:
            self._in_market_event = False
        if self._ahead:
            self._settle()
        if self._unpublished:
            self.publish()
        return intents

    def close_session(self, close_ms: int, *, full_day: bool) -> None:
        """End the session at `close_ms`: the last timer, the day's figures, a commit and, for
        a whole day, the end-of-day summary alert."""
        self._market_event(self.core.fire_timer, close_ms)
        self.journal.account(self.engine.snapshot())
        self.commit()
        alerts = self.ports.alerts
        if full_day and alerts is not None:
            day = self.engine.trading_date
            trades = self.store.run(
                lambda session: TradeRepository(session, self.account).find(
                    start_date=day, end_date=day, limit=100_000
                )
            )
            alerts.send(end_of_day_summary(self.engine.snapshot(), trades))

    # --- committing ---------------------------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(
            trading_date=self.engine.trading_date,
            market_at=self.clock.now(),
            position={**self.position(), "market": self.engine.market_state()},
            holder=self.holder,
            number=self.number + 1,
        )

    def commit(self) -> None:
        """Make everything recorded so far durable with the checkpoint, then publish it and
        alert on it. Waits out an unavailable database (the store's retry policy).

        Raises:
            FencedOut: another holder took the account over (fenced kernels).
        """
        self._write()
        self.publish()

    def _write(self) -> None:
        """The durable half of `commit`; what it wrote is published by `publish`."""
        if self._ahead:
            self._settle()  # first: the tables take the records in the order they were made
        checkpoint = self.checkpoint()
        extra, self._extra = self._extra, []
        ticks, self.ticks = self.ticks, []
        try:
            count = self.store.commit(self.journal, checkpoint, ticks=ticks, extra=extra)
        except BaseException:
            self._extra = extra + self._extra
            self.ticks = ticks + self.ticks
            raise
        self.number = checkpoint.number
        self._unpublished.extend(self.journal.ops(count))
        self.journal.forget(count)

    def _write_ahead(self) -> None:
        """What the executor calls before it sends orders: make everything recorded so far
        durable. Within a market event it is written ahead (`AccountStore.write_ahead`: one
        encoded row beside the checkpoint, a fraction of the cost of writing every record
        into its table) and settled into the tables once the event's orders are out
        (`_market_event`); a process that dies in between leaves it for the next start
        to settle (`AccountStore.settle_pending`). Elsewhere (controls, recovery, the desk
        outside an event), and while a control's own writes wait for the next commit
        (`_extra`), it is `_write`.
        """
        if not self._in_market_event or self._extra:
            self._write()
            self.handed_at = walltime.time()
            return
        checkpoint = self.checkpoint()
        count = len(self.journal)
        ops = self.journal.ops(count)
        ticks, self.ticks = self.ticks, []
        try:
            ident = self.store.write_ahead(ops, ticks, checkpoint)
        except BaseException:
            self.ticks = ticks + self.ticks
            raise
        self.number = checkpoint.number
        self._ahead.append((ident, ops, ticks))
        self._unpublished.extend(ops)
        self.journal.forget(count)
        self.handed_at = walltime.time()

    def _settle(self) -> None:
        """Move what was written ahead into its tables (`AccountStore.settle`).

        Raises:
            FencedOut: another holder took the account over and settled it.
        """
        self.store.settle(self._ahead)
        self._ahead = []

    def publish(self) -> None:
        """Publish what was committed (events, the view) and alert on it."""
        ops, self._unpublished = self._unpublished, []
        view = self.view()
        if self.ports.events is not None:
            self.ports.events.committed(ops, view)
        alerts = self.ports.alerts
        if alerts is not None:
            for name, args in ops:
                if name == "audit":
                    alerts.on_audit(args[0])

    def view(self) -> KernelView:
        engine = self.engine
        risk = engine.risk
        switch = risk.kill_switch
        limits = risk.limits
        now_ms = self.clock.now_ms()
        check = risk.rate_limiter.check(now_ms)
        return KernelView(
            at=self.clock.now(),
            account=engine.snapshot(),
            positions=tuple(copy.copy(p) for p in engine.positions.values()),
            symbols=self.symbols,
            kill_switch=KillSwitchView(
                active=switch.active,
                reason=switch.reason,
                changed_at=switch.changed_at,
                changed_by=switch.changed_by,
            ),
            open_positions=engine.open_position_count,
            exits_waiting=sum(1 for p in engine.positions.values() if p.exit_pending)
            + len(engine.exit_queue),
            orders_in_flight=tuple(engine.orders),
            last_prices=dict(engine.last_price),
            limits={
                "capital_paise": limits.capital_paise,
                "max_open_positions": limits.max_open_positions,
                "daily_loss_limit_paise": limits.daily_loss_limit_paise,
                "max_orders_per_minute": limits.max_orders_per_minute,
                "min_order_interval_s": limits.min_order_interval_s,
                "entry_start": limits.entry_start.isoformat(),
                "entry_end": limits.entry_end.isoformat(),
                "allow_short": limits.allow_short,
            },
            orders_last_minute=risk.rate_limiter.sent_in_window(now_ms),
            seconds_until_next_order=check.wait_ms / 1000,
            entries_paused=risk.entries_paused,
            market=self.market,
        )

    # --- recovery -----------------------------------------------------------------------------

    def recover(self, checkpoint: Checkpoint | None) -> RecoveryReport:
        """Rebuild the engine from its checkpoint and the store before it acts again, then
        settle the orders left in flight through the broker (by their tags) and commit.

        Call it with the clock at the restart point: the checkpoint's market time, or (live) now.
        The checkpoint holds the market state only memory had (the candles being built, last
        prices); the store holds the rest (positions, orders, the day's figures and windows).
        """
        engine = self.engine
        if checkpoint is not None:
            self.clock.advance_to(datetime_to_ms(checkpoint.market_at))
            self.number = checkpoint.number if checkpoint.holder == self.holder else 0
        day = self.today()
        capital = (
            self.store.capital_on(day, self.starting_capital_paise)
            if engine.config.limits_follow_capital
            else self.starting_capital_paise
        )
        state = self.store.read_state(
            trading_date=day,
            now=self.clock.now(),
            capital_paise=capital,
            instruments=engine.instruments,
            candle_interval_s=engine.config.candle_interval_s,
            series_capacity=engine.config.series_capacity,
            rate_horizon_s=max(60, engine.risk.limits.min_order_interval_s),
            last_prices={},
        )
        if checkpoint is not None and "market" in checkpoint.position:
            state.market = checkpoint.position["market"]
        engine.restore(state)
        notes = self.store.contract_notes(day)
        if notes:
            components.restore_contract_notes(
                engine.charges,
                day,
                [(key, self._kind_of(key), booked, orders) for key, booked, orders in notes],
            )
        report = RecoveryReport(
            positions=[p.instrument_key for p in state.positions],
            orders_in_flight=[o.client_order_id for o in state.unfinished_orders],
            queued_exits=list(engine.exit_queue),
            realised_paise=state.realised_paise,
            trading_date=day,
        )
        if isinstance(self.paper, PaperBroker):
            # The in-memory paper book died with the process: the orders it had accepted and
            # not filled go back into this one's book (they fill on their next trade).
            for order in engine.orders.values():
                if order.status is OrderStatus.OPEN:
                    self.paper.place(order)
        for order in list(engine.orders.values()):
            self.executor.resolve(order)
        self.commit()
        if report.positions or report.orders_in_flight or report.realised_paise:
            log.warning("recovery.resumed", extra={"summary": report.summary()})
        return report

    # --- controls -----------------------------------------------------------------------------

    def apply(self, command: Command) -> CommandResult:
        """Apply a control between two market events, commit, and answer. Never raises for a
        command that cannot be applied: the answer says why."""
        try:
            result = self._apply(command)
        except NotFound as exc:
            result = CommandResult(status=CommandStatus.NOT_FOUND, detail=str(exc))
        except Conflict as exc:
            result = CommandResult(status=CommandStatus.CONFLICT, detail=str(exc))
        except (ValueError, KeyError) as exc:
            result = CommandResult(status=CommandStatus.INVALID, detail=str(exc))
        self.commit()
        log.info(
            "control.applied",
            extra={"kind": command.kind.value, "by": command.by, "status": result.status.value},
        )
        return result

    def _apply(self, command: Command) -> CommandResult:
        kind, args = command.kind, command.args
        if kind is CommandKind.KILL_SWITCH:
            return self._kill_switch(bool(args["active"]), command)
        if kind is CommandKind.CLOSE_POSITION:
            return self._close(str(args["instrument_key"]), ExitReason.MANUAL, command)
        if kind is CommandKind.SQUARE_OFF:
            keys = list(self.engine.positions)
            for key in keys:
                self._close(key, ExitReason.SQUARE_OFF, command)
            return CommandResult(
                status=CommandStatus.DONE,
                detail=f"{len(keys)} position(s) exiting",
                data={"instrument_keys": keys},
            )
        if kind is CommandKind.CANCEL_ORDER:
            return self._cancel(str(args["client_order_id"]), command)
        if kind is CommandKind.MODIFY_ORDER:
            return self._modify(command)
        if kind is CommandKind.MANUAL_ENTRY:
            return self._manual_entry(
                str(args["instrument_key"]), Direction(str(args["direction"])), command
            )
        if kind is CommandKind.SETTINGS:
            return self._settings(
                dict(args["changes"]), dict(args.get("applied") or {}), command.by
            )
        if kind is CommandKind.SESSION:
            if self.on_session is None:
                raise Conflict("this harness has no session to control")
            return self.on_session(command)
        raise ValueError(f"unknown command {kind}")  # pragma: no cover

    def instrument_key(self, key_or_symbol: str) -> str:
        """The instrument key of a key or a trading symbol the kernel trades (the key given
        when it is neither)."""
        if key_or_symbol in self.instruments or key_or_symbol in self.engine.positions:
            return key_or_symbol
        for key, symbol in self.symbols.items():
            if symbol == key_or_symbol:
                return key
        if self.router is not None:
            for key in self.engine.positions:
                contract = self.router.instrument_or_none(key)
                if contract is not None and contract.trading_symbol == key_or_symbol:
                    return key
        return key_or_symbol

    def _kill_switch(self, active: bool, command: Command) -> CommandResult:
        engine = self.engine
        engine.set_kill_switch(active, reason=command.reason, by=command.by)
        switch = engine.risk.kill_switch
        at = switch.changed_at or datetime.now(UTC)

        def store(session: Session) -> None:
            AccountRepository(session).set_kill_switch(
                self.account, on=active, reason=command.reason or None, at=at
            )

        self._extra.append(store)
        self.core.fire_timer(self.clock.now_ms())
        closing = sum(1 for p in engine.positions.values() if p.exit_pending) + len(
            engine.exit_queue
        )
        return CommandResult(
            status=CommandStatus.DONE,
            detail=f"kill switch {'on' if active else 'off'}",
            data={
                "active": switch.active,
                "reason": switch.reason,
                "changed_at": at.isoformat(),
                "changed_by": switch.changed_by,
                "positions_closing": closing,
            },
        )

    def _close(self, key_or_symbol: str, reason: ExitReason, command: Command) -> CommandResult:
        key = self.instrument_key(key_or_symbol)
        self.engine.request_exit(key, reason)
        self.journal.audit(
            AuditRecord(
                event="position.close_requested",
                entity="position",
                entity_id=key,
                at=self.clock.now(),
                data={
                    "reason": reason.value,
                    **({"why": command.reason} if command.reason else {}),
                },
                actor=command.by,
            )
        )
        self.core.fire_timer(self.clock.now_ms())
        return CommandResult(
            status=CommandStatus.DONE,
            detail=f"exit of {key} queued at market",
            data={"instrument_key": key},
        )

    def _cancel(self, client_order_id: str, command: Command) -> CommandResult:
        engine = self.engine
        order = engine.orders.get(client_order_id)
        if order is None:
            raise NotFound(f"no working order {client_order_id!r}")
        if order.purpose is OrderPurpose.EXIT:
            raise Conflict("an exit order is not cancelled: a stop must never be lost")
        request_cancel = getattr(self.broker, "request_cancel", None)
        if request_cancel is not None:
            outcome: CancelOutcome = request_cancel(client_order_id, by=command.by)
            if outcome is CancelOutcome.NOT_WORKING:
                raise Conflict(f"order {client_order_id!r} is no longer working (filled or closed)")
            if outcome is CancelOutcome.REQUESTED:
                return CommandResult(
                    status=CommandStatus.REQUESTED,
                    detail=f"cancel of order {client_order_id} sent to the broker by "
                    f"{command.by}; it is cancelled when the broker confirms",
                )
        else:
            cancel = getattr(self.broker, "cancel", None)
            if cancel is None:
                raise Conflict(f"the {type(self.broker).__name__} cannot cancel orders")
            if not cancel(client_order_id):
                raise Conflict(f"order {client_order_id!r} is no longer working (filled or closed)")
        engine.on_order_cancelled(client_order_id, by=command.by)
        return CommandResult(
            status=CommandStatus.DONE,
            detail=f"order {client_order_id} cancelled by {command.by}",
        )

    def _modify(self, command: Command) -> CommandResult:
        args = command.args
        client_order_id = str(args["client_order_id"])

        def paise(name: str) -> int | None:
            value = args.get(name)
            return None if value is None else int(value)

        change = OrderChange(
            price_paise=paise("price_paise"),
            quantity=paise("quantity"),
            trigger_price_paise=paise("trigger_price_paise"),
        )
        done = self.desk.modify(client_order_id, change, by=command.by, reason=command.reason)
        if done:
            return CommandResult(
                status=CommandStatus.DONE,
                detail=f"order {client_order_id} modified by {command.by}",
            )
        return CommandResult(
            status=CommandStatus.REQUESTED,
            detail=f"modify of order {client_order_id} sent to the broker by {command.by}; "
            "the order changes when the broker confirms",
        )

    def _manual_entry(
        self, key_or_symbol: str, direction: Direction, command: Command
    ) -> CommandResult:
        engine = self.engine
        key = self.instrument_key(key_or_symbol)
        if key not in engine.instruments:
            raise NotFound(f"the bot does not trade {key_or_symbol!r}")
        now = self.clock.now()
        now_ms = self.clock.now_ms()
        price = engine.last_price.get(key, 0)
        signal_type = (
            SignalType.ENTRY_LONG if direction is Direction.LONG else SignalType.ENTRY_SHORT
        )
        signal = Signal(
            signal_id=SignalId(derive_id("sg", self.account, "manual", key, now_ms)),
            instrument_key=key,
            strategy=MANUAL_STRATEGY,
            type=signal_type,
            strength=1.0,
            reason=f"{command.reason} ({command.by})",
            price_paise=price,
            candle_start_ms=now_ms,
            created_at=now,
        )
        self.journal.signal(signal, SignalStatus.NEW)
        self.journal.audit(
            AuditRecord(
                event="order.manual_requested",
                entity="signal",
                entity_id=signal.signal_id,
                at=now,
                data={
                    "instrument_key": key,
                    "direction": direction.value,
                    "reason": command.reason,
                },
                actor=command.by,
            )
        )
        mark = len(self.journal)
        intent = engine.request_entry(signal)
        if intent is None:
            decision = self._decision_of(signal.signal_id, mark)
            rule = decision.rule.value if decision is not None and decision.rule else "risk"
            why = decision.reason if decision is not None else "refused by the risk checks"
            return CommandResult(
                status=CommandStatus.REFUSED, detail=f"{rule}: {why}", data={"rule": rule}
            )
        stop, target = engine.exits.rules.levels(direction, price)
        self.core.execute([intent])
        return CommandResult(
            status=CommandStatus.DONE,
            detail=f"entry in {key} sent",
            data={
                "client_order_id": intent.client_order_id,
                "instrument_key": intent.instrument_key,
                "direction": direction.value,
                "quantity": intent.quantity,
                "price_paise": price,
                "stop_paise": stop,
                "target_paise": target,
            },
        )

    def _decision_of(self, signal_id: str, since: int) -> RiskDecision | None:
        for name, args in reversed(self.journal.ops(len(self.journal))[since:]):
            if name == "risk_decision" and args[0].signal_id == signal_id:
                decision: RiskDecision = args[0]
                return decision
        return None

    def _settings(
        self, changes: Mapping[str, Any], applied: Mapping[str, str], by: str
    ) -> CommandResult:
        """Apply changed settings (validated and stored by the sender) to the running engine,
        and audit each change once, at market time, with who made it: the live ones now, the
        others (`applied` says "restart") on the next start."""
        new = Settings.model_validate({**self.settings.model_dump(), **changes})
        keys = [k for k in changes if getattr(new, k) != getattr(self.settings, k)]
        live = {k for k in keys if applied.get(k, "live") == "live"}
        at = self.clock.now()
        for key in keys:
            self.journal.audit(
                setting_changed(key, self.settings, new, applied.get(key, "live"), actor=by, at=at)
            )
        engine = self.engine
        engine.reconfigure(
            limits=components.risk_limits(new, capital_paise=engine.capital_paise)
            if live & LIVE_RISK
            else None,
            exit_rules=components.exit_rules(new) if live & LIVE_EXITS else None,
            signal_cooldown_s=new.SIGNAL_COOLDOWN_MINUTES * 60 if live & LIVE_ENGINE else None,
            kill_switch_square_off=new.KILL_SWITCH_SQUARE_OFF if live & LIVE_ENGINE else None,
            strategy=components.strategy(new) if live & LIVE_STRATEGY else None,
            charges=components.charges_model(new) if "BROKERAGE_PER_ORDER" in live else None,
        )
        self.settings = Settings.model_validate(
            {**self.settings.model_dump(), **{k: changes[k] for k in live}}
        )
        return CommandResult(
            status=CommandStatus.DONE,
            detail=f"applied {', '.join(sorted(live)) or 'nothing new'}",
            data={"applied": sorted(live)},
        )

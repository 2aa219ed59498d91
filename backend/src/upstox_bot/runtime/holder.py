"""The account's kernel in the distributed harness: one long-lived holder per account.

The worker that takes the account's lease (a Redis lease, renewed while held) builds the
account's kernel (runtime/kernel.py) from the store and its checkpoint, and then consumes, in
one loop, until the session ends or it loses the lease:

- the tick batches the feed shards store in Redis, in order per shard, woken by a note on the
  account's wake stream (no task hand-off per batch: a tick reaches the engine milliseconds
  after the feed stored it);
- the controls on the account's control stream (kill switch, close, cancel, settings, ...),
  applied between two batches and answered within a second;
- with live trading, the Upstox broker's order updates, its reconciliation and the engine's
  once-a-second timer.

Every commit carries the checkpoint: each shard's cursor (batch, tick), the control stream's
position and the market state. Commits are fenced by the holder's token, so a holder that lost
the account (paused past its lease) can never commit again. After a crash the next holder
restores exactly the committed state and resumes after the last committed tick and command:
nothing is applied twice, nothing is lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time as walltime
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import redis

from upstox_bot import live_events
from upstox_bot.clock import MarketClock
from upstox_bot.config import MarketSource
from upstox_bot.db.repositories.checkpoints import FencedOut
from upstox_bot.db.repositories.settings_overrides import settings_with_overrides
from upstox_bot.db.session import session_scope
from upstox_bot.domain import Order, Tick, datetime_to_ms
from upstox_bot.live_events import account_payload, candle_payload, order_payload, signal_payload
from upstox_bot.monitoring.alerts.dispatcher import AlertDispatcher
from upstox_bot.monitoring.notifiers import dispatcher_from_settings
from upstox_bot.runtime.control import (
    Command,
    CommandResult,
    CommandStatus,
    KernelView,
)
from upstox_bot.runtime.kernel import AccountKernel, KernelPorts, Ops
from upstox_bot.runtime.store import AccountStore, RetryPolicy
from upstox_bot.worker import events
from upstox_bot.worker.control import ControlInbox, store_view
from upstox_bot.worker.state import (
    Keys,
    RedisOrderRateLimiter,
    RedisPaperBook,
    decode_tick,
    position_to_dict,
)

log = logging.getLogger(__name__)

HOLDER_HARNESS = "distributed"
WAIT_S = 1.0  # the longest the holder sleeps without a note (then it looks anyway)
LIVE_TIMER_S = 1.0
RECONCILE_S = 60.0
LATENCY_SAMPLES = 1000
DB_WAIT_S = 600.0  # how long a commit waits for PostgreSQL before the holder gives up


class HolderLost(Exception):
    """The holder lost the account's lease before it started."""


class RedisSink:
    """Publishes a holder's committed facts: events for the API's stream, the positions
    snapshot, the cursors the feeds watch, the view, the latencies."""

    def __init__(self, holder: AccountHolder) -> None:
        self.holder = holder

    def committed(self, ops: Ops, view: KernelView) -> None:
        holder = self.holder
        client = holder.redis
        symbols = view.symbols
        published: list[events.Event] = []
        positions_changed = False
        for name, args in ops:
            if name == "candle":
                candle = args[0]
                published.append(
                    (
                        live_events.CANDLES,
                        candle_payload(candle, symbols.get(candle.instrument_key)),
                    )
                )
            elif name == "signal":
                published.append((live_events.SIGNALS, signal_payload(args[0], args[1])))
            elif name == "signal_status":
                published.append(
                    (live_events.SIGNALS, {"signal_id": args[0], "status": args[1].value})
                )
            elif name == "order":
                published.append((live_events.ORDERS, order_payload(args[0])))
            elif name == "account":
                published.append((live_events.ACCOUNT, account_payload(args[0])))
            elif name.startswith("position"):
                positions_changed = True
        try:
            if positions_changed:
                snapshot = [position_to_dict(p) for p in view.positions]
                published.append((live_events.POSITIONS, snapshot))
                pipe = client.pipeline(transaction=True)
                pipe.delete(Keys.positions(holder.account))
                if snapshot:
                    pipe.hset(
                        Keys.positions(holder.account),
                        mapping={p["instrument_key"]: json.dumps(p) for p in snapshot},
                    )
                pipe.execute()
            mirror: dict[str, str] = {
                "token": holder.kernel.holder or "",
                "clock_ms": str(holder.clock.now_ms()),
                **{f"cursor:{k}": f"{s}:{i}" for k, (s, i) in holder.cursors.items()},
            }
            client.hset(Keys.engine(holder.account), mapping=mirror)  # type: ignore[arg-type]
            if holder.latencies:
                samples, holder.latencies = holder.latencies, []
                pipe = client.pipeline(transaction=False)
                pipe.lpush(Keys.latencies(holder.account), *(f"{x:.6f}" for x in samples))
                pipe.ltrim(Keys.latencies(holder.account), 0, LATENCY_SAMPLES - 1)
                pipe.execute()
        except redis.RedisError:
            log.warning("holder.mirror_failed", extra={"account": holder.account})
        store_view(client, holder.account, view)
        events.publish(client, published)


class AccountHolder:
    """One account's kernel in the worker holding the account's lease (see the module).

    Args:
        resources: the worker process's settings, database sessions and Redis client.
        account: the account's name.
        lost: True once the account's lease is lost (checked between batches).
        after_place: called right after the broker accepted an order (fault injection).
    """

    def __init__(
        self,
        resources: Any,
        account: str,
        *,
        lost: Callable[[], bool],
        after_place: Callable[[Order], None] | None = None,
    ) -> None:
        from upstox_bot.runtime.distributed.resources import account_instruments, calendar_of

        # Settings changed through the API (PATCH /api/v1/settings) outlive a restart of the
        # holder, as of the embedded bot; one that no longer builds is skipped, audited and
        # alerted, and never stops the start.
        with session_scope(resources.sessions) as session:
            settings, skipped = settings_with_overrides(
                session, resources.settings, at=datetime.now(UTC)
            )
        self.resources = resources
        self.settings = settings
        self.account = account
        self.redis: redis.Redis = resources.redis
        self.lost = lost
        self.cursors: dict[str, tuple[int, int]] = {}
        self.latencies: list[float] = []  # wall seconds, tick to order handed to the broker
        self.calendar = calendar_of(settings, resources.sessions)
        self.alerts: AlertDispatcher = dispatcher_from_settings(settings)
        self.alerts.start()
        for record in skipped:
            self.alerts.on_audit(record)
        self.store = AccountStore(
            resources.sessions,
            account,
            harness=HOLDER_HARNESS,
            retry=RetryPolicy(deadline_s=DB_WAIT_S, on_wait=self._db_waiting, stop=lost),
        )
        self.checkpoint = self.store.checkpoint()
        self.live_market = settings.MARKET is MarketSource.UPSTOX
        start_ms = self._start_ms(lost)
        self.clock = MarketClock(start_ms)
        live_orders = self.live_market and settings.live_trading
        self.kernel = AccountKernel(
            settings,
            harness=HOLDER_HARNESS,
            instruments=account_instruments(resources),
            clock=self.clock,
            ports=KernelPorts(
                store=self.store,
                rate_limiter=RedisOrderRateLimiter(
                    settings.MAX_ORDERS_PER_MINUTE,
                    settings.MIN_ORDER_INTERVAL_SECONDS,
                    client=self.redis,
                    account=account,
                ),
                # With live orders the Upstox broker is plugged in just below.
                paper_book=None if live_orders else RedisPaperBook(self.redis, account),
                events=RedisSink(self),
                alerts=self.alerts,
                after_place=after_place,
            ),
            calendar=self.calendar,
            position=self._position,
            fenced=True,
            on_session=self._on_session,
        )
        self.live: LiveTrading | None = None
        if self.live_market:
            from upstox_bot.runtime.live_market import LiveTrading

            self.live = LiveTrading(self.kernel, settings, resources.sessions, self.alerts)
        position = self.checkpoint.position if self.checkpoint is not None else {}
        self.cursors = {
            str(k): (int(v[0]), int(v[1])) for k, v in dict(position.get("cursors") or {}).items()
        }
        self.inbox = ControlInbox(self.redis, account, str(position.get("control") or "0-0"))
        self._retired: set[str] = set()  # shards played, applied and unregistered
        self._wake_id = "$"
        self._last_timer = 0.0
        self._last_reconcile = walltime.monotonic()

    # --- building -------------------------------------------------------------------------------

    def _start_ms(self, lost: Callable[[], bool]) -> int:
        """Market time to start at: the checkpoint's; for an account that never ran, now on
        the live market, else the open of its first simulated session (waited for: a holder
        may start before the feed has cut its first batch)."""
        if self.checkpoint is not None:
            return datetime_to_ms(self.checkpoint.market_at)
        if self.live_market:
            return int(walltime.time() * 1000)
        while not lost():
            opens = [
                int(raw)
                for raw in (
                    self.redis.hget(Keys.feed_state(shard), "open_ms") for shard in self.shards()
                )
                if raw is not None
            ]
            if opens:
                return min(opens)
            self.redis.xread({Keys.wake(self.account): "$"}, block=int(WAIT_S * 1000))
        raise HolderLost(self.account)

    def _position(self) -> dict[str, Any]:
        return {
            "cursors": {k: list(v) for k, v in self.cursors.items() if k not in self._retired},
            "control": self.inbox.last_id,
        }

    def _db_waiting(self, error: Exception) -> None:
        from upstox_bot.monitoring.alerts.model import AlertKind

        self.alerts.notify(
            AlertKind.DATABASE_UNAVAILABLE,
            f"PostgreSQL cannot be written ({str(error)[:160]}): the account's trading waits "
            "until it can (nothing is lost; no order is sent before it is on record).",
        )

    def shards(self) -> list[str]:
        """The account's registered shards (sessions being played or held)."""
        from upstox_bot.runtime.distributed.shards import FeedSpec

        registry = cast(dict[bytes, bytes], self.redis.hgetall(Keys.shards))
        out = []
        for shard, raw in registry.items():
            spec = FeedSpec.from_json(json.loads(raw))
            if spec.account == self.account:
                out.append(shard.decode())
        return sorted(out)

    # --- the loop -----------------------------------------------------------------------------

    def run(self) -> str:
        """Hold the account until its session ends ("done"), the lease is lost ("lost") or
        another holder committed for it ("fenced")."""
        kernel = self.kernel
        try:
            if self.live_market:
                self.clock.advance_to(int(walltime.time() * 1000))
            kernel.recover(self.checkpoint)
            if self.live is not None:
                self.live.adopt()  # orders left working are followed on the portfolio stream
            log.info(
                "holder.started",
                extra={
                    "account": self.account,
                    "restored": self.checkpoint is not None,
                    "positions": len(kernel.engine.positions),
                },
            )
            while True:
                if self.lost():
                    log.error("holder.lease_lost", extra={"account": self.account})
                    return "lost"
                self._wait()
                self._apply_controls()
                applied = self._drain()
                if self.live_market:
                    self._live_duties()
                self._note_pause()
                if applied:
                    kernel.commit()
                else:
                    store_view(self.redis, self.account, kernel.view())
                if self._finished():
                    kernel.commit()
                    return "done"
        except FencedOut:
            log.error("holder.fenced_out", extra={"account": self.account})
            return "fenced"
        finally:
            if self.live is not None:
                self.live.stop()
            self.alerts.close()

    def _wait(self) -> None:
        """Sleep until a batch note or a command arrives (at most WAIT_S)."""
        timeout_ms = int((LIVE_TIMER_S if self.live_market else WAIT_S) * 1000)
        try:
            found = self.redis.xread(
                {Keys.wake(self.account): self._wake_id, Keys.controls(self.account): "$"},
                block=timeout_ms,
                count=1000,
            )
        except redis.RedisError:
            log.warning("holder.redis_unavailable", extra={"account": self.account})
            walltime.sleep(0.2)
            return
        for stream, entries in cast(list[tuple[bytes, list[tuple[bytes, Any]]]], found or []):
            if stream.decode() == Keys.wake(self.account) and entries:
                self._wake_id = entries[-1][0].decode()

    def _apply_controls(self) -> None:
        for ident, command in self.inbox.pending():
            # Its position first: every commit the command makes (before an order is sent,
            # and when it is done) then says it was applied, and a successor never applies
            # a committed command again.
            self.inbox.last_id = ident
            result = self.kernel.apply(command)
            self.inbox.reply(command, result)

    def _live_shards(self) -> list[str]:
        """The shards to drain: those registered, and those with a cursor that have not been
        seen finished (a Redis that lost its data may not list them until their feed
        registers them again)."""
        shards = set(self.shards())
        shards.update(k for k in self.cursors if k not in self._retired)
        return sorted(shards)

    def _drain(self) -> bool:
        """Apply every stored batch of every shard from its cursor; True if any was."""
        applied = False
        for shard in self._live_shards():
            while not self.lost():
                seq, index = self.cursors.get(shard, (1, 0))
                raw = cast(bytes | None, self.redis.get(Keys.batch(self.account, shard, seq)))
                if raw is None:
                    break
                self.apply_batch(shard, json.loads(raw), index)
                applied = True
        return applied

    def apply_batch(self, shard: str, batch: Mapping[str, Any], start: int) -> None:
        """Apply one batch from tick `start`, as the embedded loop applies the same ticks."""
        kernel = self.kernel
        seq = int(batch["seq"])
        rows: Sequence[Mapping[str, Any]] = batch["ticks"]
        # Entries paused for the token or Upstox's refusals: the holder's own LiveTrading decides
        # (it sees both); the feed's "entries_paused" is only its view, for the status page.
        pace = batch.get("pace")  # [wall epoch s, market epoch ms, speed]: when ticks were due
        cut_at = batch.get("cut_at")
        open_ms = batch.get("open_ms")
        if start == 0 and open_ms is not None:
            self.cursors[shard] = (seq, 0)
            kernel.timer(int(open_ms))
        for index in range(start, len(rows)):
            tick = decode_tick(rows[index])
            # The tick is done once its orders are on record (they commit inside the step).
            self.cursors[shard] = (seq, index + 1)
            intents = kernel.step(tick)
            if kernel.handed_at and any(i.signal_id for i in intents):
                self.latencies.append(kernel.handed_at - _due(tick, pace, cut_at))
        timer_ms = batch.get("timer_ms")
        if timer_ms is not None:  # live batches carry the engine's once-a-second timer
            kernel.timer(int(timer_ms))
        close_ms = batch.get("close_ms")
        self.cursors[shard] = (seq + 1, 0)
        if close_ms is not None:
            kernel.close_session(int(close_ms), full_day=bool(batch.get("full_day", True)))

    def _note_pause(self) -> None:
        """Show the market as paused once every shard waits at the pause and all it sent
        before is applied (a paused simulated session: controls then act at a known time)."""
        from upstox_bot.runtime.distributed.shards import feed_progress

        pause_at = self.redis.get(Keys.session_pause(self.account))
        if pause_at is None:
            if self.kernel.market == "paused":
                self.kernel.market = "running"
            return
        shards = self._live_shards()
        for shard in shards:
            progress = feed_progress(self.redis, self.account, shard)
            holding = progress.extra.get("paused") == "1" and progress.extra.get(
                "paused_for"
            ) == str(int(pause_at))  # at this pause, not at one a resume just lifted
            if not holding and progress.last_seq is None:
                return
            if self.cursors.get(shard, (1, 0))[0] < progress.next_seq:
                return
        if shards and self.kernel.market != "paused":
            self.kernel.market = "paused"
            self.kernel.commit()

    def _finished(self) -> bool:
        """Whether every registered shard of the account played its last batch and it was
        applied (then the holder lets the account go until the next session)."""
        from upstox_bot.runtime.distributed.shards import feed_progress

        shards = self._live_shards()
        done = True
        for shard in shards:
            progress = feed_progress(self.redis, self.account, shard)
            finished = (
                progress.last_seq is not None
                and self.cursors.get(shard, (1, 0))[0] > progress.last_seq
            )
            if not finished:
                done = False
            elif shard not in self.shards():
                # Played to its end, applied, and unregistered: its cursor is not needed.
                self._retired.add(shard)
        if not shards:
            return not self.live_market
        return done

    def _live_duties(self) -> None:
        live = self.live
        if live is None:
            return
        now = walltime.monotonic()
        if now - self._last_timer < LIVE_TIMER_S:
            return
        self._last_timer = now
        from upstox_bot.runtime.live_market import reconcile_live

        self.clock.advance_to(int(walltime.time() * 1000))
        live.second(self.clock.now_ms())
        self.kernel.commit()
        if live.broker is not None and now - self._last_reconcile >= RECONCILE_S:
            self._last_reconcile = now
            # The reads run on the broker's own loop; this thread only waits for them.
            asyncio.run(reconcile_live(self.kernel, live.broker, self.alerts, datetime.now(UTC)))

    # --- session controls -------------------------------------------------------------------------

    def _on_session(self, command: Command) -> CommandResult:
        from upstox_bot.runtime.distributed.shards import request_stop

        action = str(command.args.get("action", ""))
        key = Keys.session_pause(self.account)
        if action == "pause_at":
            at_ms = int(command.args["at_ms"])
            self.redis.set(key, at_ms)
            return CommandResult(status=CommandStatus.DONE, detail=f"the feeds pause at {at_ms}")
        if action == "resume":
            # Resume, and pause again at the next time given (if any).
            until = command.args.get("pause_at")
            if until is None:
                self.redis.delete(key)
            else:
                self.redis.set(key, int(until))
            self.kernel.market = "running"
            return CommandResult(status=CommandStatus.DONE, detail="the feeds resume")
        if action == "stop":
            for shard in self.shards():
                request_stop(self.redis, shard)
            return CommandResult(status=CommandStatus.DONE, detail="the session stops")
        raise ValueError(f"unknown session action {action!r}: pause_at, resume or stop")


def _due(tick: Tick, pace: Sequence[float] | None, cut_at: float | None) -> float:
    """The wall time (epoch s) the tick reached the feed: its paced time, else the batch's cut."""
    if pace is not None:
        wall0, market0, speed = float(pace[0]), float(pace[1]), float(pace[2])
        return wall0 + (tick.ts_ms - market0) / 1000 / speed
    return float(cut_at) if cut_at is not None else walltime.time()

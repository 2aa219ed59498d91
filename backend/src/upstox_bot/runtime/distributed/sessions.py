"""The distributed harness's sessions: starting one (beat, CLI, API), keeping its feeds up."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import cast

import redis
from sqlalchemy.orm import Session, sessionmaker

from upstox_bot.config import Settings
from upstox_bot.domain import IST, ms_to_datetime
from upstox_bot.errors import ConfigError
from upstox_bot.runtime.distributed.live_feed import LIVE_MODE, LiveFeedShard
from upstox_bot.runtime.distributed.resources import (
    Resources,
    account_instruments,
    calendar_of,
    sim_universe,
)
from upstox_bot.runtime.distributed.shards import (
    FEED_LEASE_MS,
    MARKET_UPSTOX,
    SESSION_MINUTES,
    Enqueue,
    FeedSpec,
    ensure_holder,
    feed_progress,
)
from upstox_bot.runtime.distributed.sim_feed import FeedShard
from upstox_bot.upstox.feed_protocol import plan_shards
from upstox_bot.worker.state import Keys


def run_feed_shard(resources: Resources, spec: FeedSpec, enqueue: Enqueue) -> str:
    """Play a simulated shard or hold a live one, as its market says."""
    if spec.live:
        return LiveFeedShard(resources, spec, enqueue).run()
    return FeedShard(resources, spec, enqueue).run()


# --- session control (beat, CLI, tests) ---------------------------------------------------------


def start_session(client: redis.Redis, enqueue: Enqueue, specs: Sequence[FeedSpec]) -> None:
    """Register a session's shards (the supervisor restarts a shard whose feed task died) and
    enqueue a feed task for each."""
    for spec in specs:
        client.hset(Keys.shards, spec.shard, json.dumps(spec.to_json()))
        enqueue("feed.run_shard", (spec.to_json(),))


def supervise_feeds(client: redis.Redis, enqueue: Enqueue) -> list[str]:
    """Enqueue a feed task for every registered shard that is unfinished and unleased, and a
    holder for every account with such a shard and no holder.

    A shard whose feed worker died loses its lease within FEED_LEASE_MS, an account whose
    holder died within the holder's lease; the next supervision starts a new task that resumes
    from the shard's progress or the account's checkpoint. Returns the shards started.
    """
    started = []
    registry = cast(dict[bytes, bytes], client.hgetall(Keys.shards))
    for shard_b, raw in registry.items():
        spec = FeedSpec.from_json(json.loads(raw))
        progress = feed_progress(client, spec.account, spec.shard)
        if progress.finished:
            client.hdel(Keys.shards, shard_b)
            continue
        # The account's holder too: a worker killed while holding it loses its lease.
        ensure_holder(client, enqueue, spec.account)
        if client.exists(Keys.feed_lease(spec.shard)):
            continue
        if client.set(Keys.feed_launch(spec.shard), "1", nx=True, px=FEED_LEASE_MS * 2):
            enqueue("feed.run_shard", (spec.to_json(),))
            started.append(spec.shard)
    return started


def upstox_session_specs(
    resources: Resources, trading_date: date, *, end_ms: int | None = None
) -> list[FeedSpec]:
    """The live shards of one session: the ranked universe over as few V3 connections as the
    plan's limits allow (`plan_shards`), one feed task each.

    Raises:
        ConfigError: the universe was never refreshed, or it exceeds the plan's limits.
    """
    settings = resources.settings
    keys = list(account_instruments(resources))
    return [
        FeedSpec(
            account=settings.ACCOUNT_NAME,
            shard=f"{trading_date.isoformat()}-live-{n}",
            trading_date=trading_date,
            seed=0,
            minutes=375,
            instrument_keys=tuple(part),
            market=MARKET_UPSTOX,
            end_ms=end_ms,
        )
        for n, part in enumerate(plan_shards(keys, LIVE_MODE))
    ]


def sim_session_specs(
    settings: Settings,
    trading_date: date,
    *,
    shards: int = 1,
    minutes: float = 375,
    speed: float | None = None,
    seed: int | None = None,
    session_id: str | None = None,
) -> list[FeedSpec]:
    """The shards of one simulated session of the account (instruments dealt round-robin).

    Args:
        speed: simulated seconds per wall second (None: as fast as the holder applies).
        seed: the market's seed (default SIM_SEED).
        session_id: makes the shards' names unique to this start (a session started by hand;
            the day's scheduled session is named by its date alone).
    """
    instruments, _ = sim_universe(settings)
    keys = list(instruments)
    seed = settings.SIM_SEED if seed is None else seed
    prefix = trading_date.isoformat() if session_id is None else f"{trading_date}-{session_id}"
    if shards == 1:
        parts: list[tuple[str, ...]] = [()]
    else:
        parts = [tuple(keys[i::shards]) for i in range(shards)]
    return [
        FeedSpec(
            account=settings.ACCOUNT_NAME,
            shard=f"{prefix}-{n}",
            trading_date=trading_date,
            seed=seed,
            minutes=minutes,
            instrument_keys=part,
            speed=speed,
        )
        for n, part in enumerate(parts)
    ]


def now_ist() -> datetime:
    """Wall-clock time in Asia/Kolkata (beat tasks run on the real clock)."""
    return datetime.now(IST)


def market_ms_to_ist(ms: int) -> datetime:
    return ms_to_datetime(ms).astimezone(IST)


# --- starting a session (CLI, API, beat) --------------------------------------------------------


def running_shards(client: redis.Redis, account: str) -> list[str]:
    """The account's registered shards that have not finished."""
    registry = cast(dict[bytes, bytes], client.hgetall(Keys.shards))
    out = []
    for shard, raw in registry.items():
        spec = FeedSpec.from_json(json.loads(raw))
        if spec.account == account and not feed_progress(client, account, spec.shard).finished:
            out.append(shard.decode())
    return sorted(out)


def start_sim_session(
    settings: Settings,
    client: redis.Redis,
    enqueue: Enqueue,
    *,
    trading_date: date | None = None,
    speed: float | None = None,
    seed: int | None = None,
    minutes: float = 375,
    shards: int = 1,
    sessions: sessionmaker[Session] | None = None,
) -> list[FeedSpec]:
    """Start a simulated session of the account on the workers, at any hour.

    Args:
        trading_date: the session to simulate; default today, or the next trading day.
        speed: simulated seconds per wall second (None: as fast as the account applies them).
        sessions: the database, to refuse a date before the account's last session.

    Raises:
        Conflict: a session of the account is still running, or it traded a later date.
        ConfigError: the date is not a trading day, or the arguments are out of range.
    """
    from upstox_bot.errors import Conflict

    if speed is not None and not 0 < speed <= 1_000_000:
        raise ConfigError(f"speed must be within (0, 1000000], got {speed}")
    if not 0 < minutes <= SESSION_MINUTES:
        raise ConfigError(f"minutes must be within (0, {SESSION_MINUTES}], got {minutes}")
    if not 1 <= shards <= 16:
        raise ConfigError(f"shards must be within 1-16, got {shards}")
    calendar = calendar_of(settings)
    day = trading_date or datetime.now(IST).date()
    if trading_date is None and not calendar.is_trading_day(day):
        day = calendar.next_trading_day(day)
    if not calendar.is_trading_day(day):
        raise ConfigError(f"{day.isoformat()} is not an NSE trading day")
    if sessions is not None:
        from upstox_bot.runtime.store import AccountStore

        checkpoint = AccountStore(
            sessions, settings.ACCOUNT_NAME, harness="distributed"
        ).checkpoint()
        if checkpoint is not None and checkpoint.trading_date > day:
            raise Conflict(
                f"account {settings.ACCOUNT_NAME!r} has traded up to "
                f"{checkpoint.trading_date.isoformat()}: a session on {day.isoformat()} would "
                "run its clock backwards; use a later date or another ACCOUNT_NAME"
            )
    running = running_shards(client, settings.ACCOUNT_NAME)
    if running:
        raise Conflict(
            f"a session of account {settings.ACCOUNT_NAME!r} is running ({', '.join(running)}): "
            "stop it first (`upstox-bot session stop`)"
        )
    specs = sim_session_specs(
        settings,
        day,
        shards=shards,
        minutes=minutes,
        speed=speed,
        seed=seed,
        session_id=uuid.uuid4().hex[:8],
    )
    client.delete(Keys.session_pause(settings.ACCOUNT_NAME))
    start_session(client, enqueue, specs)
    return specs

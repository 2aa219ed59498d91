"""The distributed harness's building blocks against the real Redis: leases, the paper book,
the shared rate windows, pub/sub events, the feed lease, the schedule and the health checks."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from tests.support.waiting import wait_until, wait_until_async
from upstox_bot import live_events
from upstox_bot.config import Settings
from upstox_bot.domain import (
    ClientOrderId,
    Order,
    OrderPurpose,
    OrderStatus,
    OrderType,
    Side,
    Tick,
)
from upstox_bot.runtime.distributed.resources import Resources
from upstox_bot.runtime.distributed.sessions import start_session, supervise_feeds
from upstox_bot.runtime.distributed.shards import FeedSpec
from upstox_bot.runtime.distributed.sim_feed import FeedShard
from upstox_bot.trading.brokers.persistent import PersistentPaperBroker
from upstox_bot.worker import events, queues
from upstox_bot.worker.beat import heartbeat_age_s, schedule
from upstox_bot.worker.locks import Lease, hold
from upstox_bot.worker.state import Keys, RedisOrderRateLimiter, RedisPaperBook

pytestmark = pytest.mark.integration


class _Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def now_ms(self) -> int:
        return self.ms

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.ms / 1000, tz=UTC)


def _order(tag: str, *, at: datetime) -> Order:
    return Order(
        client_order_id=ClientOrderId(tag),
        instrument_key="NSE_EQ|X",
        side=Side.BUY,
        quantity=10,
        lots=10,
        purpose=OrderPurpose.ENTRY,
        order_type=OrderType.MARKET,
        status=OrderStatus.SUBMITTING,
        created_at=at,
        updated_at=at,
    )


# --- leases -------------------------------------------------------------------------------------


def test_lease_is_held_by_one_owner_and_fenced(redis_client: redis.Redis) -> None:
    first = Lease(redis_client, "ub:lease:t", ttl_ms=5000, owner="a")
    second = Lease(redis_client, "ub:lease:t", ttl_ms=5000, owner="b")
    assert first.acquire()
    assert not second.acquire()
    assert first.held()
    assert not second.held()
    first.release()
    assert second.acquire()
    assert second.token is not None
    assert second.token > 1  # every claim draws a higher fencing token


def test_lease_of_a_dead_holder_is_taken_over_after_its_ttl(redis_client: redis.Redis) -> None:
    dead = Lease(redis_client, "ub:lease:t", ttl_ms=300, owner="dead")
    assert dead.acquire()  # and never renewed: its process died
    heir = Lease(redis_client, "ub:lease:t", ttl_ms=300, owner="heir")
    # Generous: how soon after the ttl the heir gets it depends on the machine, not the lease.
    assert heir.acquire_blocking(timeout_s=60)
    assert not dead.renew()
    assert dead.lost.is_set()


def test_renewal_keeps_a_lease_alive_and_retakes_it_after_redis_lost_it(
    redis_client: redis.Redis,
) -> None:
    with hold(redis_client, "ub:lease:t", ttl_ms=300, timeout_s=1) as lease:
        assert lease is not None
        first_expiry_ms = int(redis_client.pexpiretime("ub:lease:t"))
        wait_until(
            lambda: int(redis_client.pexpiretime("ub:lease:t")) > first_expiry_ms + 2 * 300,
            what="the renewal thread to keep the lease past twice its ttl",
        )
        assert lease.held()
        redis_client.delete("ub:lease:t")  # a Redis restart without persistence
        assert lease.renew()
        assert lease.held()
    assert redis_client.get("ub:lease:t") is None


def test_a_redelivered_feed_task_exits_while_the_lease_is_held(
    redis_client: redis.Redis, redis_url: str
) -> None:
    spec = FeedSpec(account="paper", shard="t", trading_date=date(2026, 11, 25), seed=7, minutes=1)
    holder = Lease(redis_client, Keys.feed_lease("t"), ttl_ms=5000)
    assert holder.acquire()
    sent: list[tuple[str, object]] = []
    resources = Resources(Settings(_env_file=None, REDIS_URL=redis_url))
    outcome = FeedShard(resources, spec, lambda name, args: sent.append((name, args))).run()
    assert outcome == "held"
    assert sent == []
    assert redis_client.get(Keys.batch("paper", "t", 1)) is None


# --- the paper book survives the process --------------------------------------------------------


def test_paper_broker_book_survives_a_new_instance(redis_client: redis.Redis) -> None:
    clock = _Clock(1_795_578_300_000)
    book = RedisPaperBook(redis_client, "paper")
    broker = PersistentPaperBroker(book=book, clock=clock, slippage_bps=Decimal(0))
    order = _order("ub-1", at=clock.now())
    assert broker.place(order) == ()
    # The worker dies here; a new one builds its broker from the same book.
    heir = PersistentPaperBroker(
        book=RedisPaperBook(redis_client, "paper"), clock=clock, slippage_bps=Decimal(0)
    )
    known = heir.find_by_tag("ub-1")
    assert known is not None
    assert known.status is OrderStatus.OPEN
    assert heir.place(_order("ub-1", at=clock.now())) == ()  # the same tag again: no new order
    assert heir.working_count == 1
    clock.ms += 1000
    fills = heir.on_tick(Tick(instrument_key="NSE_EQ|X", ts_ms=clock.ms, ltp_paise=10_000))
    assert [(f.client_order_id, f.quantity, f.price_paise) for f in fills] == [("ub-1", 10, 10_000)]
    assert heir.fills_of("ub-1") == fills
    again = heir.find_by_tag("ub-1")
    assert again is not None
    assert again.status is OrderStatus.FILLED
    assert RedisPaperBook(redis_client, "paper").working() == []


def test_rate_windows_are_shared_between_engines(redis_client: redis.Redis) -> None:
    first = RedisOrderRateLimiter(10, 30, client=redis_client, account="paper")
    first.record(1_000_000)
    second = RedisOrderRateLimiter(10, 30, client=redis_client, account="paper")
    second.restore([])
    check = second.check(1_010_000)
    assert not check.allowed
    assert check.wait_ms == 20_000
    assert second.check(1_030_000).allowed


# --- live events --------------------------------------------------------------------------------


async def test_subscribers_receive_published_events(redis_url: str) -> None:
    received: list[tuple[str, object]] = []

    async def listen() -> None:
        async for channel, data in events.subscribe_events(redis_url, [live_events.ORDERS]):
            received.append((channel, data))
            return

    task = asyncio.create_task(listen())
    with redis.Redis.from_url(redis_url) as publisher:

        def heard() -> bool:
            # Redis drops what is published before the subscription: publish until it is heard.
            if not received:
                events.publish(publisher, [(live_events.ORDERS, {"client_order_id": "ub-1"})])
            return bool(received)

        await wait_until_async(heard, what="the subscriber to hear an event", every_s=0.05)
    await task
    assert received == [("orders", {"client_order_id": "ub-1"})]


async def test_subscribing_to_an_unknown_channel_is_refused(redis_url: str) -> None:
    with pytest.raises(ValueError, match="nope"):
        async for _ in events.subscribe_events(redis_url, ["nope"]):
            pass


# --- schedule, queues, health -------------------------------------------------------------------


def test_every_scheduled_task_goes_to_a_known_queue() -> None:
    entries = schedule(Settings(_env_file=None))
    names = {entry["task"] for entry in entries.values()}
    assert {
        "default.refresh_universe",
        "default.watch_token",
        "orders.square_off",
        "default.daily_reset",
        "default.start_session",
        "default.end_of_day",
        "default.supervise_feeds",
    } <= names
    assert all(queues.route(name) == name.split(".")[0] for name in names)
    assert queues.parse_queues("all") == list(queues.QUEUES)
    with pytest.raises(ValueError, match="unknown queues"):
        queues.parse_queues("orders,bogus")


def test_beat_health_check_follows_the_heartbeat(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    env = {**os.environ, "REDIS_URL": redis_url, "LOG_LEVEL": "WARNING"}
    cmd = [sys.executable, "-m", "upstox_bot.cli", "beat", "--check"]
    assert heartbeat_age_s(redis_client) is None
    assert subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True).returncode == 1
    redis_client.set(Keys.beat_heartbeat, datetime.now(UTC).isoformat())
    assert subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True).returncode == 0


def test_supervisor_restarts_only_an_unleased_unfinished_shard(
    redis_client: redis.Redis, redis_url: str
) -> None:
    spec = FeedSpec(account="paper", shard="t", trading_date=date(2026, 11, 25), seed=7, minutes=1)
    sent: list[tuple[str, object]] = []
    start_session(redis_client, lambda name, args: sent.append((name, args)), [spec])
    assert sent == [("feed.run_shard", (spec.to_json(),))]
    sent.clear()
    holder = Lease(redis_client, Keys.feed_lease("t"), ttl_ms=200)
    assert holder.acquire()  # a feed task is playing the shard
    assert supervise_feeds(redis_client, lambda name, args: sent.append((name, args))) == []
    # The account had no holder: the supervisor starts one (once, while it starts).
    assert sent == [("orders.hold_account", ("paper",))]
    sent.clear()
    wait_until(
        lambda: not redis_client.exists(Keys.feed_lease("t")), what="the dead feed's lease to lapse"
    )
    assert supervise_feeds(redis_client, lambda name, args: sent.append((name, args))) == ["t"]
    assert supervise_feeds(redis_client, lambda name, args: sent.append((name, args))) == []
    feeds = [name for name, _args in sent if name == "feed.run_shard"]
    assert len(feeds) == 1  # the launch is not repeated while the new task starts
    redis_client.hset(Keys.feed_state("t"), "last_seq", 3)
    redis_client.hset(Keys.engine("paper"), "cursor:t", "4:0")  # the engine applied all 3 batches
    redis_client.delete(Keys.feed_launch("t"))
    assert supervise_feeds(redis_client, lambda name, args: sent.append((name, args))) == []
    assert redis_client.hlen(Keys.shards) == 0

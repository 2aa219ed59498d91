"""The distributed harness on the live Upstox feed: real Celery worker processes on the real Redis
and PostgreSQL hold the shard's Market Data Feed V3 connection to the protocol simulator; its
ticks reach the engine and PostgreSQL, a SIGKILLed feed worker's shard is taken over by another
feed worker, and a refused token pauses entries without killing anything."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import text

from tests.support.cluster import ACCOUNT, CLI, Cluster
from tests.support.cluster import db_session as _session
from tests.support.servers import RedisServer
from tests.support.upstox_sim import UpstoxSimulator, upstox_simulator
from tests.support.waiting import wait_until
from upstox_bot import live_events
from upstox_bot.config import Settings
from upstox_bot.db import migrate
from upstox_bot.domain import IST
from upstox_bot.runtime.distributed.live_feed import LiveFeedShard
from upstox_bot.runtime.distributed.resources import Resources
from upstox_bot.runtime.distributed.sessions import start_session
from upstox_bot.runtime.distributed.shards import (
    MARKET_UPSTOX,
    FeedSpec,
    feed_progress,
    request_stop,
)
from upstox_bot.runtime.live_market import universe_instruments
from upstox_bot.worker import events
from upstox_bot.worker.state import Keys

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SAMPLE = resources.files("upstox_bot.data").joinpath("upstox_instruments_sample.json.gz")
SHARD = "live-0"
KEYS = 4  # instruments in the shard

sim = pytest.fixture(upstox_simulator)


class Market:
    """Pushes a trade of every instrument every 50 ms, at prices around `base` rupees."""

    def __init__(self, sim: UpstoxSimulator, keys: list[str]) -> None:
        assert sim.feed is not None
        self.feed = sim.feed
        self.keys = keys
        self.base = 1000.0
        self.pushed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        step = 0
        while not self._stop.wait(0.05):
            step += 1
            offset = (step % 20) * 0.05
            prices = {k: round(self.base + offset + n, 2) for n, k in enumerate(self.keys)}
            self.pushed += self.feed.push_prices(prices, ltq=5)

    def __enter__(self) -> Market:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _refresh_universe(cluster: Cluster) -> list[str]:
    result = subprocess.run(
        [*CLI, "universe", "refresh", "--file", str(SAMPLE)],
        env=cluster.env,
        cwd=cluster.workdir,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    settings = Settings(DATABASE_URL=cluster.pg_url, REDIS_URL=cluster.redis_url)
    return [i.instrument_key for i in universe_instruments(Resources(settings).sessions, KEYS)]


def _serve_at_upstox(sim: UpstoxSimulator, keys: list[str]) -> None:
    """The simulator answers for its own instrument master: add the universe's records (from the
    same sample file the universe was refreshed from), so Upstox accepts orders for them."""
    with gzip.open(str(SAMPLE), "rt") as stream:
        records = {r["instrument_key"]: r for r in json.load(stream)}
    known = {r["instrument_key"] for r in sim.rest.instruments}
    added = [records[key] for key in keys if key not in known]
    sim.rest.set_instruments([*sim.rest.instruments, *added])


def _live_spec(keys: list[str], *, minutes: float = 15) -> FeedSpec:
    now = datetime.now(UTC)
    return FeedSpec(
        account=ACCOUNT,
        shard=SHARD,
        trading_date=now.astimezone(IST).date(),
        seed=0,
        minutes=375,
        instrument_keys=tuple(keys),
        market=MARKET_UPSTOX,
        end_ms=int((now + timedelta(minutes=minutes)).timestamp() * 1000),
    )


def _stored_ticks(cluster: Cluster, at_least_paise: int) -> int:
    with _session(cluster.pg_url) as session:
        return int(
            session.execute(
                text("SELECT count(*) FROM ticks WHERE ltp_paise >= :p"), {"p": at_least_paise}
            ).scalar_one()
        )


def _state(cluster: Cluster) -> dict[str, str]:
    try:
        return feed_progress(cluster.redis, ACCOUNT, SHARD).extra
    except redis.RedisError:
        return {}


def _holder_pid(cluster: Cluster) -> int | None:
    """The pid of the feed task holding the shard, while that process lives."""
    raw = cluster.redis.get(Keys.feed_lease(SHARD))
    if raw is None:
        return None
    value = raw.decode() if isinstance(raw, bytes) else str(raw)
    pid = int(value.split(":")[-2])  # "<host>:<pid>:<fencing token>"
    try:
        os.getpgid(pid)
    except ProcessLookupError:
        return None  # a lease left by a task that ended: it expires
    return pid


@pytest.fixture
def live_cluster(
    cluster_factory: Callable[..., Cluster], sim: UpstoxSimulator
) -> tuple[Cluster, list[str]]:
    cluster = cluster_factory(
        MARKET="upstox",
        UPSTOX_API_BASE_URL=sim.base_url,
        UPSTOX_ACCESS_TOKEN=sim.rest.issue_token(),
        TICK_STORE_INTERVAL_SECONDS="1",
        SIM_SYMBOLS=str(KEYS),
    )
    keys = _refresh_universe(cluster)
    assert len(keys) == KEYS
    return cluster, keys


def test_live_feed_in_workers_is_taken_over_when_its_worker_is_killed(
    live_cluster: tuple[Cluster, list[str]], sim: UpstoxSimulator
) -> None:
    cluster, keys = live_cluster
    feeds = {"feed-a": cluster.start_worker("feed-a", "feed")}
    feeds["feed-b"] = cluster.start_worker("feed-b", "feed")
    cluster.start_worker("orders", "orders")
    cluster.start_worker("misc", "ingest,default")
    cluster.start_beat()  # supervises the feeds every 2 s
    cluster.wait_ready("feed-a", "feed-b", "orders", "misc")
    assert sim.feed is not None
    with Market(sim, keys) as market:
        start_session(cluster.redis, cluster.enqueue, [_live_spec(keys)])
        # Ticks of the first holder reach the engine and PostgreSQL.
        wait_until(
            lambda: _stored_ticks(cluster, 100_000) > 0, what="ticks stored", details=cluster.logs
        )
        first = wait_until(lambda: _holder_pid(cluster), what="the shard's feed task")
        wait_until(
            lambda: cluster.applied(SHARD) > 0, what="the engine applying", details=cluster.logs
        )
        # The feed task runs in a pool process of one of the workers (its process group).
        (doomed,) = [n for n, p in feeds.items() if p.pid == os.getpgid(first)]
        cluster.kill(doomed)  # the worker and its pool, as a machine dying
        market.base = 2000.0  # what is traded after the kill is told apart in the store
        (survivor,) = [p for n, p in feeds.items() if n != doomed]

        def taken_over() -> bool:
            pid = _holder_pid(cluster)
            return pid is not None and os.getpgid(pid) == survivor.pid

        wait_until(taken_over, what="takeover", details=cluster.logs)
        wait_until(
            lambda: _stored_ticks(cluster, 200_000) > 0,
            what="ticks after the takeover",
            details=cluster.logs,
        )
        state = _state(cluster)
        assert state["takeovers"] == "1"
        assert int(state["last_gap_ms"]) >= 0
        assert sim.feed.connections_opened >= 2  # the new holder connected and subscribed
        resubscribed = {
            k
            for r in sim.feed.requests
            if r.accepted and r.message and r.connection_id > 1
            for k in r.message["data"]["instrumentKeys"]
        }
        assert resubscribed == set(keys)
        request_stop(cluster.redis, SHARD)
        wait_until(
            lambda: feed_progress(cluster.redis, ACCOUNT, SHARD).finished,
            what="the session end",
            details=cluster.logs,
        )
    progress = feed_progress(cluster.redis, ACCOUNT, SHARD)
    assert progress.applied_seq == progress.last_seq  # every batch applied, none skipped
    with _session(cluster.pg_url) as session:
        checkpoints = session.execute(
            text("SELECT count(*) FROM checkpoints WHERE harness = 'distributed'")
        ).scalar_one()
    assert checkpoints == 1, "the account's holder keeps its checkpoint in the checkpoints table"


def test_live_feed_refused_token_pauses_entries_alerts_and_keeps_running(
    new_postgres_url: Callable[[], str], sim: UpstoxSimulator, redis_server: RedisServer
) -> None:
    pg_url = new_postgres_url()
    migrate.upgrade(pg_url)
    settings = Settings(
        DATABASE_URL=pg_url,
        REDIS_URL=f"{redis_server.url}/0",
        ACCOUNT_NAME=ACCOUNT,
        MARKET="upstox",
        UPSTOX_API_BASE_URL=sim.base_url,
        UPSTOX_ACCESS_TOKEN="a-token-upstox-refuses",
        ALERT_CHANNELS=[],
    )
    res = Resources(settings)
    sent: list[tuple[str, Any]] = []
    watcher = res.redis.pubsub()  # type: ignore[no-untyped-call]
    watcher.subscribe(events.redis_channel(live_events.ACCOUNT))
    shard = LiveFeedShard(
        res, _live_spec(["NSE_EQ|INE002A01018"]), lambda n, a: sent.append((n, a))
    )
    outcome: list[str] = []
    runner = threading.Thread(target=lambda: outcome.append(shard.run()), daemon=True)
    runner.start()
    feed = sim.feed
    assert feed is not None
    wait_until(lambda: feed.authorize_refusals >= 1, what="a refused authorize")

    def paused() -> bool:
        return feed_progress(res.redis, ACCOUNT, SHARD).extra.get("entries_paused") == "expired"

    wait_until(paused, what="entries paused")
    alerts: list[dict[str, Any]] = []

    def alerted() -> bool:
        message = watcher.get_message(timeout=0.5)
        if message and message["type"] == "message":
            data = json.loads(message["data"])["data"]
            if data.get("alert") == "token_expired":
                alerts.append(data)
        return bool(alerts)

    wait_until(alerted, what="the expired token's alert")
    assert runner.is_alive(), "the feed keeps holding its shard"
    seq = feed_progress(res.redis, ACCOUNT, SHARD).next_seq - 1
    batch = json.loads(res.redis.get(Keys.batch(ACCOUNT, SHARD, seq)) or b"{}")
    assert batch["entries_paused"] == "expired"
    assert ("ingest.ticks", (ACCOUNT, SHARD, seq)) in sent
    notes = res.redis.xrange(Keys.wake(ACCOUNT)) or []
    told = [fields[b"seq"] for _id, fields in notes if fields]
    assert str(seq).encode() in told, "the holder is told"
    refusals = feed.authorize_refusals
    request_stop(res.redis, SHARD)
    wait_until(
        lambda: feed_progress(res.redis, ACCOUNT, SHARD).last_seq is not None, what="the last batch"
    )
    last = feed_progress(res.redis, ACCOUNT, SHARD).last_seq
    assert last is not None
    res.redis.hset(Keys.engine(ACCOUNT), f"cursor:{SHARD}", f"{last + 1}:0")  # as if applied
    wait_until(lambda: outcome, what="the feed shard to end")
    assert outcome == ["done"]
    assert feed.authorize_refusals == refusals, "no retry with a refused token"
    watcher.close()


# --- live trading in the workers ----------------------------------------------------------------

PLACE = "/v3/order/place"
LIVE_SETTINGS = {
    "PAPER_TRADING": "false",
    "LIVE_TRADING_ENABLED": "true",
    "LIVE_TRADING_FORCE_REASON": "a rehearsal of the server deployment against the simulator",
    # a whole day's rules at any hour of the test (the live harness runs on the wall clock)
    "ENTRY_START_TIME": "00:00:00",
    "ENTRY_END_TIME": "23:58:00",
    "SQUARE_OFF_TIME": "23:59:59",
    "MIN_ORDER_INTERVAL_SECONDS": "0",
    "DAILY_LOSS_LIMIT": "50",  # the stop's loss must not end the day's entries
    "UPSTOX_TAG_LOOKUP_SECONDS": "3",
    "ALERT_CHANNELS": "webhook",
}


class Prices:
    """Trades every instrument on the simulator's feed every 50 ms at the prices set here, and
    Upstox's exchange at the same prices."""

    def __init__(self, sim: UpstoxSimulator, keys: list[str]) -> None:
        assert sim.feed is not None
        self.sim = sim
        self.feed = sim.feed
        self.prices = {key: 100.0 + 5 * n for n, key in enumerate(keys)}  # a lot under the cap
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Prices:
        for key, price in self.prices.items():
            self.move(key, price)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.feed.push_prices(dict(self.prices), ltq=5)

    def move(self, key: str, rupees: float) -> None:
        self.prices[key] = rupees
        self.feed.set_instrument(key, ltp=rupees, cp=rupees)
        self.sim.rest.set_price(key, f"{rupees:.2f}")


class Api:
    """`upstox-bot api` of the cluster (its controls reach the account's holder via Redis)."""

    def __init__(self, cluster: Cluster) -> None:
        from tests.support.servers import free_port

        self.cluster = cluster
        created = subprocess.run(
            [*CLI, "apikey", "create", "--name", "desk", "--scope", "trade", "--quiet"],
            env=cluster.env,
            cwd=cluster.workdir,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        key = created.stdout.strip().splitlines()[-1]
        port = free_port()
        with (cluster.workdir / "api.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [*CLI, "api", "--port", str(port)],
                env=cluster.env,
                cwd=cluster.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        cluster.procs["api"] = self.proc  # stopped with the cluster
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{port}/api/v1", headers={"X-API-Key": key}, timeout=30
        )
        wait_until(self._serving, what="the API", details=cluster.logs)

    def _serving(self) -> bool:
        try:
            return self.http.get("/risk").status_code == 200
        except httpx.HTTPError:
            return False

    def get(self, path: str, **params: Any) -> Any:
        answer = self.http.get(path, params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def held(self, key: str) -> int:
        return sum(p["quantity"] for p in self.get("/positions") if p["instrument_key"] == key)

    def enter(self, key: str, reason: str) -> str:
        answer = self.http.post("/trades", json={"instrument_key": key, "reason": reason})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["client_order_id"])


def test_the_workers_trade_live_and_a_killed_holder_never_sends_an_order_twice(
    cluster_factory: Callable[..., Cluster], sim: UpstoxSimulator
) -> None:
    from collections import Counter

    from tests.integration.test_alerts import Receiver
    from tests.support.upstox_sim import FaultKind

    receiver = Receiver()
    api: Api | None = None
    try:
        cluster = cluster_factory(
            MARKET="upstox",
            UPSTOX_API_BASE_URL=sim.base_url,
            UPSTOX_ACCESS_TOKEN=sim.rest.issue_token(),
            TICK_STORE_INTERVAL_SECONDS="1",
            SIM_SYMBOLS=str(KEYS),
            ALERT_WEBHOOK_URL=receiver.url,
            **LIVE_SETTINGS,
        )
        keys = _refresh_universe(cluster)
        _serve_at_upstox(sim, keys)
        first, second = keys[0], keys[1]
        cluster.start_worker("feed", "feed")
        cluster.start_worker("orders", "orders")
        cluster.start_worker("misc", "ingest,default")
        cluster.start_beat()  # its supervisor starts a holder again after a kill
        cluster.wait_ready("feed", "orders", "misc")
        with Prices(sim, keys) as prices:
            start_session(cluster.redis, cluster.enqueue, [_live_spec(keys, minutes=60)])
            api = Api(cluster)
            wait_until(
                lambda: cluster.applied(SHARD) > 0, what="ticks applied", details=cluster.logs
            )
            wait_until(lambda: api.get("/risk")["entries_paused"] is None, what="entries allowed")

            # An entry goes to Upstox and fills; its stop exit fills when the price falls.
            tag = api.enter(first, "first live trade from the workers")
            wait_until(
                lambda: api.held(first) > 0,
                what="the entry filled",
                details=lambda: f"alerts: {[r.body for r in receiver.requests]}",
            )
            (entry,) = sim.rest.orders_with_tag(tag)
            assert entry.status == "complete"
            stop = float(api.get("/positions")[0]["stop"])
            prices.move(first, round(stop - 2, 1))
            wait_until(
                lambda: api.held(first) == 0, what="the stop exit filled", details=cluster.logs
            )
            (trade,) = api.get("/trades")["items"]
            assert trade["exit_reason"] == "stop_loss"

            # The holder is killed while Upstox's answer to an order is on its way: the next
            # holder finds the order by its tag and never sends it again.
            before = len(sim.rest.requests_to(PLACE))
            sim.rest.fail_next(FaultKind.TIMEOUT, path=PLACE, delay_s=120.0, process=True)
            tag = api.enter(second, "the answer is lost")
            wait_until(lambda: bool(sim.rest.orders_with_tag(tag)), what="the order at Upstox")
            cluster.kill("orders")
            cluster.start_worker("orders-2", "orders")
            wait_until(
                lambda: api.held(second) > 0,
                what="the order found by the next holder",
                details=cluster.logs,
            )
            assert len(sim.rest.orders_with_tag(tag)) == 1
            assert len(sim.rest.requests_to(PLACE)) == before + 1

            # The kill switch closes the position through Upstox, and the trader is alerted.
            answer = api.http.post(
                "/risk/kill-switch", json={"active": True, "reason": "end of the drill"}
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["applied_to_running_bot"] is True
            wait_until(
                lambda: api.held(second) == 0,
                what="the kill switch's exit filled",
                details=cluster.logs,
            )
            wait_until(lambda: _alerted(receiver, "kill_switch_used"), what="the kill switch alert")
            request_stop(cluster.redis, SHARD)
            wait_until(
                lambda: feed_progress(cluster.redis, ACCOUNT, SHARD).finished,
                what="the session end",
                details=cluster.logs,
            )
        per_tag = Counter(o.tag for o in sim.rest.orders.values())
        assert len(per_tag) == 4, per_tag  # two entries, two exits
        assert set(per_tag.values()) == {1}, per_tag
        with _session(cluster.pg_url) as session:
            unfinished = session.execute(
                text("SELECT count(*) FROM orders WHERE status NOT IN ('filled', 'cancelled')")
            ).scalar_one()
            trades = session.execute(text("SELECT count(*) FROM trades")).scalar_one()
        assert unfinished == 0
        assert trades == 2
        assert all(p["quantity"] == 0 for p in sim.rest.positions())
    finally:
        if api is not None:
            api.http.close()
        receiver.close()


def _alerted(receiver: Any, kind: str) -> bool:
    for request in receiver.requests:
        body = json.loads(request.body or b"{}")
        if body.get("kind") == kind:
            return True
    return False


def test_the_scheduled_universe_refresh_downloads_and_stores_the_universe(
    cluster_factory: Callable[..., Cluster], sim: UpstoxSimulator
) -> None:
    # The beat's pre-open task, on a real worker: the instrument master from Upstox (here its
    # simulator), the F&O stocks stored, as `upstox-bot universe refresh` stores them.
    cluster = cluster_factory(
        UPSTOX_API_BASE_URL=sim.base_url, UPSTOX_ACCESS_TOKEN=sim.rest.issue_token()
    )
    cluster.start_worker("misc", "default")
    cluster.wait_ready("misc")
    cluster.enqueue("default.refresh_universe", [])

    def stored() -> int:
        with _session(cluster.pg_url) as session:
            return int(
                session.execute(text("SELECT count(*) FROM symbols WHERE is_active")).scalar_one()
            )

    wait_until(stored, what="the universe stored by the worker", details=cluster.logs)
    known = {r["instrument_key"] for r in sim.rest.instruments}
    with _session(cluster.pg_url) as session:
        keys = session.execute(text("SELECT instrument_key FROM symbols WHERE is_active")).scalars()
        assert set(keys) <= known

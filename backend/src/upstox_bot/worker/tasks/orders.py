"""Queue "orders": everything that moves an account, under the account's lock.

Each task takes the account lock (a Redis lease, renewed while held), gets the account's engine
(this process's if it wrote the newest checkpoint, else rebuilt from PostgreSQL), acts, and
commits. Any error drops this process's engine, so the next task starts from the database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from upstox_bot.domain import ExitReason
from upstox_bot.runtime.distributed import (
    AccountRuntime,
    account_runtime,
    drop_runtime,
    shard_open_ms,
)
from upstox_bot.worker.app import enqueue, resources, task
from upstox_bot.worker.locks import Lease, hold
from upstox_bot.worker.state import Keys

log = logging.getLogger(__name__)

LOCK_TTL_MS = 15_000
LOCK_WAIT_S = 30.0
DRAIN_BUDGET_S = 2.0  # then let other tasks of the account have the lock

_T = TypeVar("_T")


class AccountBusy(Exception):
    """The account lock could not be taken in time (another worker holds it): retry later."""


@contextmanager
def _account(account: str) -> Iterator[Lease]:
    res = resources()
    with hold(
        res.redis, Keys.account_lock(account), ttl_ms=LOCK_TTL_MS, timeout_s=LOCK_WAIT_S
    ) as lease:
        if lease is None:
            raise AccountBusy(account)
        try:
            yield lease
        except BaseException:
            drop_runtime(res, account)
            raise


def _with_runtime(
    account: str, act: Callable[[AccountRuntime], _T], *, default_clock_ms: int | None = None
) -> _T | None:
    with _account(account):
        runtime = account_runtime(resources(), account, default_clock_ms=default_clock_ms)
        if runtime is None:
            log.info("orders.no_engine", extra={"account": account})
            return None
        return act(runtime)


@task(
    "orders.apply_ticks",
    acks_late=True,
    autoretry_for=(AccountBusy,),
    retry_backoff=1,
    max_retries=20,
)
def apply_ticks(account: str, shard: str, seq: int) -> dict[str, Any]:
    """Apply the shard's batches to the account's engine, in order, from its checkpoint.

    `seq` only names the batch that caused the task: any delivery drains whatever is stored
    and not yet applied, so duplicated, late or lost deliveries change nothing.
    """
    res = resources()
    with _account(account) as lease:
        runtime = account_runtime(res, account, default_clock_ms=shard_open_ms(res.redis, shard))
        if runtime is None:
            return {"applied": False}
        more = runtime.drain(shard, budget_s=DRAIN_BUDGET_S, stop=lease.lost.is_set)
        cursor = runtime.cursors.get(shard)
    if more:
        enqueue("orders.apply_ticks", (account, shard, seq))
    return {"applied": True, "cursor": list(cursor) if cursor else None}


@task("orders.exit_position", acks_late=True, autoretry_for=(AccountBusy,), max_retries=20)
def exit_position(account: str, instrument_key: str, reason: str, by: str = "worker") -> bool:
    """Queue the exit of an open position (idempotent: a second request finds it exiting)."""
    result = _with_runtime(
        account, lambda rt: rt.request_exit(instrument_key, ExitReason(reason), by=by)
    )
    return bool(result)


@task("orders.set_kill_switch", acks_late=True, autoretry_for=(AccountBusy,), max_retries=20)
def set_kill_switch(account: str, active: bool, reason: str, by: str) -> bool:
    """Turn the account's kill switch on or off (on also squares off when configured)."""

    def act(rt: AccountRuntime) -> bool:
        rt.set_kill_switch(active, reason=reason, by=by)
        return True

    return bool(_with_runtime(account, act))


@task("orders.square_off", acks_late=True, autoretry_for=(AccountBusy,), max_retries=20)
def square_off(account: str) -> list[str]:
    """Exit every open position of the account (beat, before the close)."""

    def act(rt: AccountRuntime) -> list[str]:
        keys = list(rt.engine.positions)
        for key in keys:
            rt.request_exit(key, ExitReason.SQUARE_OFF, by="beat")
        return keys

    return _with_runtime(account, act) or []


@task("orders.reconcile", acks_late=True, autoretry_for=(AccountBusy,), max_retries=3)
def reconcile(account: str) -> dict[str, int]:
    """Compare the orders in flight with the broker by tag; settle what differs."""
    return _with_runtime(account, lambda rt: rt.reconcile()) or {"checked": 0, "settled": 0}

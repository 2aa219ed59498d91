"""Queue "orders": the account's kernel, held by one worker for as long as its session runs.

`orders.hold_account` takes the account's lease (a Redis lease, renewed while held) and runs the
account's holder (runtime/holder.py) until the session ends: the feed's tick batches and the
controls reach it through Redis streams, without a task per batch. A second delivery finds the
lease held and returns at once; beat's supervisor and every feed start one when the account has
none, so a worker that dies is replaced within the lease's time to live.

The other tasks here are beat's: they send their command through the account's control port,
like the API.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable

from upstox_bot.domain import Order
from upstox_bot.runtime.control import Command, CommandKind, CommandResult, NoKernel
from upstox_bot.runtime.holder import AccountHolder, HolderLost
from upstox_bot.worker.app import resources, task
from upstox_bot.worker.control import RedisControl
from upstox_bot.worker.locks import Lease
from upstox_bot.worker.state import Keys

log = logging.getLogger(__name__)

HOLD_TTL_MS = 5_000  # a dead holder's account is free again after this


@task("orders.hold_account", acks_late=True)
def hold_account(account: str) -> str:
    """Hold the account's kernel until its session ends; returns "done", "held" (another
    worker holds it), "lost" (its lease was lost) or "fenced" (another holder committed)."""
    res = resources()
    lease = Lease(
        res.redis,
        Keys.account_lock(account),
        ttl_ms=HOLD_TTL_MS,
        owner=f"{socket.gethostname()}:{os.getpid()}",
    )
    if not lease.acquire():
        return "held"
    lease.start_renewing()
    try:
        holder = AccountHolder(res, account, lost=lease.lost.is_set, after_place=fault_hook())
        outcome = holder.run()
    except HolderLost:
        outcome = "lost"
    finally:
        lease.release()
    log.info("holder.finished", extra={"account": account, "outcome": outcome})
    return outcome


def _send(account: str, command: Command) -> CommandResult | None:
    res = resources()
    assert res.settings.REDIS_URL is not None
    control = RedisControl(res.settings.REDIS_URL, account)
    try:
        return asyncio.run(control.send(command))
    except NoKernel:
        log.info("orders.no_kernel", extra={"account": account, "kind": command.kind.value})
        return None


@task("orders.square_off", acks_late=True)
def square_off(account: str) -> list[str]:
    """Exit every open position of the account (beat, at SQUARE_OFF_TIME)."""
    result = _send(account, Command(kind=CommandKind.SQUARE_OFF, by="beat"))
    return list(result.data.get("instrument_keys", [])) if result is not None else []


def fault_hook() -> Callable[[Order], None] | None:
    """Test-only fault injection: UPSTOX_BOT_FAULT=kill-after-place SIGKILLs the worker process
    right after the broker accepted an order, before the database records it as accepted."""
    if os.environ.get("UPSTOX_BOT_FAULT") != "kill-after-place":
        return None

    def kill(order: Order) -> None:
        import signal

        log.error("fault.kill_after_place", extra={"client_order_id": order.client_order_id})
        os.kill(os.getpid(), signal.SIGKILL)

    return kill

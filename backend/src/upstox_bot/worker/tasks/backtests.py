"""Backtests on the workers: `backtests.run` runs one stored backtest (queue "default")."""

from __future__ import annotations

from upstox_bot.backtest import jobs
from upstox_bot.worker import queues
from upstox_bot.worker.app import enqueue, resources, task


@task(jobs.TASK_NAME, queue=queues.DEFAULT, acks_late=True, ignore_result=True)
def run(backtest_id: str) -> str:
    """Run the stored backtest `backtest_id`; running it twice for the same id computes once.

    Returns:
        "done" or "failed" when this call ran it, "duplicate" when it was not pending.
    """
    res = resources()
    status = jobs.execute(res.sessions, backtest_id, res.settings)
    return status.value if status is not None else "duplicate"


def send(backtest_id: str) -> None:
    """Queue `backtests.run` for a stored backtest (on queue "default")."""
    enqueue(jobs.TASK_NAME, [backtest_id])


class CeleryDispatcher:
    """Sends backtests to the Celery workers (task "backtests.run", queue "default")."""

    def dispatch(self, backtest_id: str) -> None:
        """Queue the run of a stored backtest on the workers."""
        send(backtest_id)

"""Controls from the API: each route builds a kernel `Command` and sends it through the control
port (runtime/control.py), the same way in every harness."""

from __future__ import annotations

from upstox_bot.api.errors import BotNotRunning
from upstox_bot.runtime.control import (
    COMMAND_TIMEOUT_S,
    Command,
    CommandResult,
    ControlPort,
    NoAnswer,
    NoKernel,
)


async def send(control: ControlPort | None, command: Command, what: str) -> CommandResult:
    """Apply a control in the running kernel and return its answer.

    Raises:
        BotNotRunning: no kernel runs (the command was not applied).
        NoAnswer: the kernel did not answer in time (it may still apply it).
        NotFound, Conflict, CommandRefused, CommandInvalid: what the kernel answered.
    """
    if control is None:
        raise BotNotRunning(
            f"{what} needs the running bot: start it with `upstox-bot run` (or the workers "
            "with `upstox-bot session start`) and call its API"
        )
    try:
        result = await control.send(command, timeout_s=COMMAND_TIMEOUT_S)
    except NoKernel as exc:
        raise BotNotRunning(f"{what}: {exc}") from None
    except TimeoutError:
        raise NoAnswer(
            f"{what}: the bot did not answer within {COMMAND_TIMEOUT_S:g} s; it may still "
            "apply it (check /api/v1/audit)"
        ) from None
    return result.raise_for_status()

"""Types of the compiled Market Data Feed V3 decoder (`_v3_decoder.c`)."""

from collections.abc import Callable

from upstox_bot.domain import Tick

class WireError(Exception):
    """The bytes are not a well-formed FeedResponse."""

def decode(data: bytes, /) -> tuple[int, int, list[Tick]] | None: ...
def configure(
    tick_type: type[Tick],
    slots: tuple[object, ...] | None,
    make_tick: Callable[..., Tick],
    to_paise: Callable[[float], int],
    /,
) -> None: ...

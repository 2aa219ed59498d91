"""The route class of every API route: the key's scope is checked before the body is read, and
request bodies are parsed as strict JSON.

Strict JSON refuses at the edge what the rest of the API must never see: NaN and Infinity
(Python's parser takes them, JSON does not have them), numbers too large to be finite, text
that is not UTF-8, lone surrogates (escaped or encoded), and nesting deeper than Python's
parser can follow. Each answers 422 `json_invalid` naming the body. (Text fields that are
stored refuse NUL characters themselves, by their schema's pattern: PostgreSQL cannot store
them.)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from upstox_bot.api.auth import authenticated_key, require_trade

# An escape that may decode to a lone surrogate.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is too large to be a finite number")
    return value


def _has_surrogate(value: Any) -> bool:
    # Iterative: the parsed value may be nested as deep as the parser allows.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def strict_loads(body: bytes) -> Any:
    """Parse a request body as strict JSON.

    Raises:
        json.JSONDecodeError: not UTF-8, not JSON, NaN or Infinity, a number too large to be
            finite, a lone surrogate, or nested too deep.
    """
    try:
        text = body.decode("utf-8")  # strict: encoded surrogates and stray bytes are refused
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError("the body is not UTF-8 text", "", exc.start) from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # NaN, Infinity, 1e400, an integer of more than 4300 digits
        raise json.JSONDecodeError(str(exc), "", 0) from None
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", "", 0) from None
    if _SURROGATE_ESCAPE.search(body) and _has_surrogate(value):
        raise json.JSONDecodeError("a lone surrogate is not a character", "", 0)
    return value


class StrictJSONRequest(Request):
    """A request whose JSON body is parsed by `strict_loads`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_loads(await self.body())
        return self._json


def _calls(dependant: Dependant, target: Callable[..., Any]) -> bool:
    return any(d.call is target or _calls(d, target) for d in dependant.dependencies)


class GuardedRoute(APIRoute):
    """An APIRoute that checks the trade scope before the body is read (when the route needs
    it) and parses its body as strict JSON. Every router of the API uses it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        needs_trade = _calls(self.dependant, require_trade)

        async def guarded(request: Request) -> Response:
            key = authenticated_key(request)
            if needs_trade and key is not None:
                require_trade(key)  # 403 before a byte of the body is read
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return guarded

"""One Upstox websocket kept alive: authorize, connect, receive, reconnect with backoff.

The market data feed and the portfolio stream connect the same way: a REST authorize call with
the access token returns a single-use ``wss://`` URI, the client connects to it and receives
until the connection ends, then authorizes again and reconnects after an exponential, jittered
backoff (a connection that delivered something resets it). A refused token (401) is conclusive,
since the authorize call is a read: the client reports it, then either waits for another token
from its token source (the next login) and resumes with it, or stops with ``error`` set.

:class:`UpstoxWebSocket` is that lifecycle, written once; a stream subclasses it with what it
does on an open connection (``_session``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import httpx
from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from upstox_bot.errors import FeedError

log = logging.getLogger(__name__)

TokenSource = str | Callable[[], str | SecretStr | None]
RefusalHook = Callable[[str], Awaitable[None] | None]


class FeedUnauthorized(FeedError):
    """Upstox refused the access token (HTTP 401): refresh the token; retrying will not help."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Exponential reconnect backoff: initial * 2**attempt, capped at max, times 1 +/- jitter."""

    initial_s: float = 0.5
    max_s: float = 30.0
    jitter: float = 0.2  # fraction of the delay, both ways

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before reconnect attempt `attempt` (0 for the first)."""
        base = min(self.max_s, self.initial_s * (2.0 ** min(attempt, 32)))
        return max(0.0, base * (1.0 + self.jitter * rng.uniform(-1.0, 1.0)))


async def call_hook(hook: Callable[..., Awaitable[None] | None] | None, *args: Any) -> None:
    """Call a sync or async hook (nothing when None)."""
    if hook is None:
        return
    result = hook(*args)
    if inspect.isawaitable(result):
        await result


class UpstoxWebSocket:
    """The lifecycle of one Upstox websocket (see the module doc); use `async with` or
    `start()` / `close()`.

    A subclass names itself (``_event``: the prefix of its log events; ``_label``: how its
    errors name it; ``_task_name``: its asyncio task) and its authorize path, and implements
    ``_session``. Counters are plain
    attributes for metrics.
    """

    _event: ClassVar[str]
    _label: ClassVar[str]
    _task_name: ClassVar[str]
    _authorize_path: ClassVar[str]

    def __init__(
        self,
        *,
        api_base_url: str,
        access_token: TokenSource,
        authorize_params: Mapping[str, str] | None = None,
        on_unauthorized: RefusalHook | None = None,
        http_client: httpx.AsyncClient | None = None,
        backoff: Backoff | None = None,
        open_timeout_s: float = 10.0,
        max_reconnect_attempts: int | None = None,
        rng: random.Random | None = None,
        resume_on_new_token: bool = False,
        token_check_s: float = 2.0,
    ) -> None:
        """Configure the connection; nothing connects until `start()`.

        Args:
            api_base_url: Upstox REST base URL (setting UPSTOX_API_BASE_URL).
            access_token: the token, or a callable returning the current one (read on every
                authorize, so a refreshed token is picked up on reconnect).
            authorize_params: query parameters of the authorize call.
            on_unauthorized: called (sync or async) with the refused token when Upstox
                refuses it.
            http_client: client for the authorize call; one is created (and closed) if None.
            backoff: reconnect delays.
            open_timeout_s: timeout of the authorize call and of the websocket handshake.
            max_reconnect_attempts: give up (FeedError) after this many failed attempts in a row;
                None retries forever.
            rng: random source for the jitter.
            resume_on_new_token: when Upstox refuses the token, wait until `access_token`
                returns another one (the next login) and connect with it, instead of stopping;
                the client then never stops on its own.
            token_check_s: how often a refused client reads `access_token` for a new token.
        """
        self._base_url = api_base_url.rstrip("/")
        self._token = access_token
        self._authorize_params = dict(authorize_params or {})
        self._on_unauthorized = on_unauthorized
        self._http = http_client
        self._own_http = http_client is None
        self._backoff = backoff or Backoff()
        self._open_timeout_s = open_timeout_s
        self._max_attempts = max_reconnect_attempts
        self._rng = rng or random.Random()
        self._resume_on_new_token = resume_on_new_token
        self._token_check_s = token_check_s
        self._refused_token = ""  # the token of the last authorize (refused when it 401s)
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._connected = asyncio.Event()
        self.error: FeedError | None = None  # the fatal error that stopped the client, if any
        # counters
        self.connects = 0  # websocket connections opened
        self.reconnects = 0  # connection losses (drops, handshake failures, silence) retried
        self.unauthorized = 0  # times Upstox refused the token
        self.resumed = 0  # times a new token brought the client back after a refusal

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start connecting in the background; returns at once."""
        if self._task is not None:
            return
        self._closing.clear()
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._open_timeout_s)
        self._task = asyncio.create_task(self._run(), name=self._task_name)

    async def close(self) -> None:
        """Close the connection (code 1000) and stop reconnecting."""
        self._closing.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close(code=1000)
        if self._task is not None:
            # The loop may be anywhere (authorizing, connecting, backing off): stop it there.
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    @property
    def connected(self) -> bool:
        """Whether a websocket connection is open now."""
        return self._connected.is_set()

    @property
    def running(self) -> bool:
        """True until the client is closed or stopped on a fatal error."""
        return self._task is not None and not self._task.done()

    @property
    def refused_token(self) -> str:
        """The token of the last authorize call (the refused one, after a refusal)."""
        return self._refused_token

    async def wait_connected(self) -> None:
        """Wait until a connection is open (and, for the feed, its subscriptions were sent)."""
        await self._connected.wait()

    # what a stream does on an open connection

    async def _session(self, uri: str) -> bool:
        """Connect to `uri` and receive until the connection ends.

        Returns whether the connection was healthy (it delivered): that resets the backoff.
        """
        raise NotImplementedError

    def _stopped(self) -> None:
        """Called once when the loop ends (closed, or stopped on a fatal error)."""

    async def _connect(self, uri: str, **options: Any) -> ClientConnection:
        """Open the websocket (no proxy; `options` go to `websockets.connect`) and count it."""
        ws = await connect(uri, open_timeout=self._open_timeout_s, proxy=None, **options)
        self._ws = ws
        self.connects += 1
        return ws

    # the loop

    def _current_token(self) -> str:
        value = self._token() if callable(self._token) else self._token
        return (value.get_secret_value() if isinstance(value, SecretStr) else value) or ""

    async def _run(self) -> None:
        attempt = 0
        try:
            while not self._closing.is_set():
                delivered = False
                refused: str | None = None
                try:
                    delivered = await self._session(await self._authorize())
                except FeedUnauthorized as exc:
                    refused = self._refused_token
                    await self._report_refusal(exc, refused)
                except (
                    ConnectionClosed,
                    InvalidHandshake,
                    InvalidURI,
                    OSError,
                    TimeoutError,
                    httpx.HTTPError,
                    FeedError,
                ) as exc:
                    log.warning(
                        f"{self._event}.connection.lost",
                        extra={"error": f"{type(exc).__name__}: {exc}"},
                    )
                finally:
                    self._ws = None
                    self._connected.clear()
                if self._closing.is_set():
                    break
                if refused is not None:
                    await self._wait_for_new_token(refused)
                    attempt = 0
                    continue
                attempt = 0 if delivered else attempt + 1
                if self._max_attempts is not None and attempt > self._max_attempts:
                    raise FeedError(
                        f"{self._label}: gave up after {self._max_attempts} failed reconnects"
                    )
                self.reconnects += 1
                delay = self._backoff.delay(max(attempt - 1, 0), self._rng)
                log.info(
                    f"{self._event}.reconnect",
                    extra={"attempt": attempt, "delay_s": round(delay, 3)},
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), timeout=delay)
        except FeedError as exc:
            self.error = exc
            log.error(f"{self._event}.stopped", extra={"error": str(exc)})
        finally:
            self._stopped()

    async def _report_refusal(self, exc: FeedUnauthorized, refused: str) -> None:
        """Count and report the refusal; re-raise it unless the client waits for a new token."""
        self.unauthorized += 1
        log.error(f"{self._event}.unauthorized", extra={"error": str(exc)})
        try:
            await call_hook(self._on_unauthorized, refused)
        except Exception:  # the hook is the caller's: its failure must not stop the stream
            log.exception(f"{self._event}.unauthorized_hook.failed")
        if not self._resume_on_new_token:
            raise exc

    async def _wait_for_new_token(self, refused: str) -> None:
        """Wait until the token source gives a token other than the refused one."""
        log.warning(f"{self._event}.waiting_for_login")
        while not self._closing.is_set():
            token = self._current_token()
            if token and token != refused:
                self.resumed += 1
                log.info(f"{self._event}.token.renewed")
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=self._token_check_s)

    async def _authorize(self) -> str:
        token = self._current_token()
        self._refused_token = token
        if not token:
            raise FeedUnauthorized("no Upstox access token: log in first")
        http = self._http
        if http is None:  # start() creates it; close() may have just dropped it
            raise FeedError(f"{self._label} client is not started")
        response = await http.get(
            self._base_url + self._authorize_path,
            params=self._authorize_params or None,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=self._open_timeout_s,
        )
        if response.status_code == 401:
            raise FeedUnauthorized(
                f"{self._label} authorize refused the token: {_error_text(response)}"
            )
        if response.status_code != 200:
            raise FeedError(
                f"{self._label} authorize HTTP {response.status_code}: {_error_text(response)}"
            )
        try:
            data = response.json()["data"]
            uri = data.get("authorized_redirect_uri") or data.get("authorizedRedirectUri")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FeedError(f"{self._label} authorize: unexpected response body") from exc
        if not isinstance(uri, str) or not uri.startswith(("ws://", "wss://")):
            raise FeedError(f"{self._label} authorize: no websocket URI in the response ({uri!r})")
        return uri


def _error_text(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors") or []
        first = errors[0]
        code = first.get("error_code") or first.get("errorCode") or ""
        return f"{code} {first.get('message', '')}".strip()
    except (ValueError, AttributeError, IndexError, TypeError):
        return response.text[:200]

"""The local Upstox simulator as one FastAPI app, served by uvicorn on loopback in a thread."""

from __future__ import annotations

import importlib
import importlib.util
import socket
import threading
from decimal import Decimal
from types import ModuleType, TracebackType
from typing import Any

import uvicorn
from fastapi import FastAPI

from tests.support.waiting import wait_until

from . import portfolio, rest
from .rest import RestSimulator
from .scenario import Scenario

_FEED_MODULE = f"{__package__}.feed"


def _feed_module() -> ModuleType | None:
    # The feed half (websocket) lives in .feed; include it when it is present.
    if importlib.util.find_spec(_FEED_MODULE) is None:
        return None
    return importlib.import_module(_FEED_MODULE)


def build_app(rest_sim: RestSimulator, feed_sim: Any | None = None) -> FastAPI:
    """One app with the REST routes of ``rest_sim`` and, if present, the feed router.

    ``app.state.rest_sim`` and ``app.state.feed_sim`` hold the two state objects.
    """
    app = FastAPI(title="Upstox simulator", docs_url=None, redoc_url=None, openapi_url=None)
    rest.install(app, rest_sim)
    streams = portfolio.install(app, rest_sim)  # the portfolio stream watches the order book
    rest_sim.on_revoke.append(streams.close_for_revocation)
    feed = _feed_module()
    if feed is not None:
        feed_sim = feed_sim if feed_sim is not None else feed.FeedSimulator()
        _share_tokens(rest_sim, feed_sim)
        feed_sim.scenario = rest_sim.scenario
        rest_sim.on_revoke.append(feed_sim.close_for_revocation)
        app.state.feed_sim = feed_sim
        app.include_router(feed.router)
    return app


def _share_tokens(rest_sim: RestSimulator, feed_sim: Any) -> None:
    # A token from the REST login (or issue_token) also opens the feed, as at Upstox; the feed
    # half keeps accepting its own tokens too.
    feed_accepts = feed_sim.is_token_valid

    def is_token_valid(token: str) -> bool:
        return rest_sim.token_is_valid(token) or bool(feed_accepts(token))

    feed_sim.is_token_valid = is_token_valid


class UpstoxSimulator:
    """The Upstox simulator on ``http://127.0.0.1:<free port>``.

    Use ``with UpstoxSimulator() as sim:`` (or :meth:`start` / :meth:`stop`); point the client at
    :attr:`base_url`. :attr:`rest` is the REST state (orders, faults, tokens); :attr:`feed` the
    feed state when the feed half is installed; :attr:`scenario` how Upstox behaves (realistic
    by default; change its fields while the simulator runs to script a day).
    """

    def __init__(
        self,
        *,
        rest_sim: RestSimulator | None = None,
        feed_sim: Any | None = None,
        scenario: Scenario | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.rest = rest_sim or RestSimulator(scenario=scenario)
        self.app = build_app(self.rest, feed_sim)
        self.feed: Any | None = getattr(self.app.state, "feed_sim", None)
        self.portfolio: portfolio.PortfolioSimulator = self.app.state.portfolio_sim
        self._host = host
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def scenario(self) -> Scenario:
        """The behaviour both halves follow (shared, mutable)."""
        return self.rest.scenario

    def trade(self, instrument_key: str, rupees: float) -> None:
        """A trade at ``rupees``: the feed sends it and the exchange matches orders at it."""
        self.rest.set_price(instrument_key, Decimal(str(rupees)))
        if self.feed is not None:
            self.feed.push_ticks(instrument_key, [rupees])

    def revoke_tokens(self) -> None:
        """Revoke every token mid-day: 401 UDAPI100050 everywhere, websockets closed."""
        self.rest.revoke_tokens()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``; the simulator must be started."""
        if self._port is None:
            raise RuntimeError("the simulator is not running: call start()")
        return f"http://{self._host}:{self._port}"

    @property
    def ws_base_url(self) -> str:
        """``ws://127.0.0.1:<port>``; the simulator must be started."""
        return "ws" + self.base_url.removeprefix("http")

    def start(self, timeout_s: float = 10.0) -> UpstoxSimulator:
        """Serve the app in a daemon thread and return once it accepts connections."""
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, 0))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="off",
            ws="websockets-sansio",
            timeout_graceful_shutdown=3,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="upstox-sim", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        try:
            wait_until(
                lambda: server.started or not thread.is_alive(),
                what="the Upstox simulator to start",
                within_s=timeout_s,
                every_s=0.01,
            )
        finally:
            if not server.started:
                self.stop()
        if not server.started:
            raise RuntimeError("the Upstox simulator did not start (its thread ended)")
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout=10)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=5)
        self._port = None
        self.rest.close()

    def __enter__(self) -> UpstoxSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

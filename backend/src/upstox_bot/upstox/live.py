"""The Upstox pieces the live harness wires together: order gateway, reconciliation, tick source.

- :class:`UpstoxOrderGateway` implements ``trading.brokers.upstox.OrderGateway`` with the REST
  client (placement with its tag, market protection and X-Algo-Name, recovery by tag after a
  lost answer) and the portfolio stream (order updates). Wrap it in ``UpstoxBroker``. It tells
  an order refused for the account (errors.OrdersBlocked: static IP, algo name, a 401 on the
  order API while a read accepts the token, a token that is really dead) from an order refused
  for itself (OrderRejected), and checks a 401 on an order call with a read before it declares
  the token dead.
- :func:`reconcile` compares the database's unfinished orders and open positions with Upstox.
- :class:`UpstoxTickSource` streams domain ticks of many instruments from Market Data Feed V3,
  sharded over as many connections as the plan's limits need.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import TypeVar

from pydantic import SecretStr
from sqlalchemy.orm import Session

from upstox_bot.db.repositories.orders import OrderRepository
from upstox_bot.db.repositories.positions import PositionRepository
from upstox_bot.domain import Order, OrderType, Product, Tick
from upstox_bot.errors import BrokerUnavailable, OrderRejected, OrdersBlocked
from upstox_bot.trading.brokers.upstox import (
    ConnectHandler,
    ModifyTarget,
    ReportHandler,
    UpstoxBroker,
)
from upstox_bot.trading.brokers.upstox_book import (
    BrokerOrderReport,
    PositionReport,
    ReconciliationReport,
    reconcile_books,
)
from upstox_bot.trading.order_gate import BlockCause
from upstox_bot.upstox.client import OrderRequest, UpstoxClient
from upstox_bot.upstox.errors import (
    UpstoxApiError,
    UpstoxAuthError,
    UpstoxOrderRejected,
    UpstoxOrderStateUnknown,
    UpstoxUnavailable,
)
from upstox_bot.upstox.feed_protocol import (
    NORMAL_PLAN_LIMITS,
    DecodedFrame,
    FeedLimits,
    FeedMode,
    plan_shards,
)
from upstox_bot.upstox.market_feed import MarketDataFeedV3Client
from upstox_bot.upstox.models import OrderRecord, PositionRecord
from upstox_bot.upstox.portfolio_stream import PortfolioStreamClient, PortfolioUpdate

log = logging.getLogger(__name__)

T = TypeVar("T")

TokenSource = Callable[[], str | SecretStr | None]
AuthFailure = Callable[[str], None]
"""Called with a reason when Upstox refuses the token (wire to ``TokenGuard.report_rejected``)."""


# Order-write refusals that are about the account, not the order (API.md 8.4, 9.2): the next
# order would be refused the same way. UDAPI100074 (order APIs only 05:30-24:00) is not here:
# it refuses the order for its time, and the order is recorded as rejected.
BLOCKING_CODES: dict[str, BlockCause] = {
    "UDAPI1154": BlockCause.STATIC_IP,  # static IP not whitelisted (third-party)
    "UDAPI1156": BlockCause.ALGO,  # invalid algo name in X-Algo-Name (third-party)
    "UDAPI1179": BlockCause.ACCOUNT,  # static-IP configuration not permitted (third-party)
    "UDAPI1180": BlockCause.ACCOUNT,  # OAuth client inactive (third-party)
    "UDAPI1181": BlockCause.ACCOUNT,  # segment or app type issue (third-party)
    "UDAPI100049": BlockCause.ACCOUNT,  # API access restricted for this account (third-party)
}


def blocking_cause(exc: UpstoxApiError) -> BlockCause | None:
    """The account-level cause of an order-write refusal, or None for a refusal of the order.

    A 403 without a known code counts as a static-IP refusal: Upstox is reported to answer
    IP refusals with HTTP 403 (API.md 8.2, 8.4; the exact status is unconfirmed).
    """
    for code in exc.error_codes:
        cause = BLOCKING_CODES.get(code)
        if cause is not None:
            return cause
    if exc.status_code == 403:
        return BlockCause.STATIC_IP
    return None


def report_from_record(record: OrderRecord) -> BrokerOrderReport:
    """The broker-neutral report of an Upstox order record (order book or stream update)."""
    return BrokerOrderReport(
        tag=record.tag,
        broker_order_id=record.order_id,
        instrument_key=record.instrument_token,
        side=record.side,
        quantity=record.quantity,
        filled_quantity=record.filled_quantity,
        average_price_paise=record.average_price_paise or None,
        status=record.domain_status,
        message=record.status_message,
        at=record.exchange_at or record.order_at,
    )


def position_from_record(record: PositionRecord) -> PositionReport:
    """The net position of an Upstox position record."""
    return PositionReport(instrument_key=record.instrument_token, quantity=record.quantity)


class UpstoxOrderGateway:
    """Upstox behind the live broker's ``OrderGateway`` protocol.

    Args:
        client: the REST client, owned by the gateway from now on (closed by :meth:`close`;
            its limiter keeps order writes under 10/s, its placement policy sets market
            protection, its ``algo_name`` adds X-Algo-Name).
        access_token: the current token, for the portfolio stream's authorize call.
        api_base_url: ``UPSTOX_API_BASE_URL`` (the portfolio stream authorize host).
        product: Upstox product of every order (intraday by default).
        on_auth_failure: called when Upstox refuses the token (401) on any call.
        stream: follow the portfolio stream (False: order-book polls only).
    """

    def __init__(
        self,
        client: UpstoxClient,
        *,
        access_token: TokenSource,
        api_base_url: str,
        product: Product = Product.INTRADAY,
        on_auth_failure: AuthFailure | None = None,
        stream: bool = True,
    ) -> None:
        self._client = client
        self._token = access_token
        self._api_base_url = api_base_url
        self._product = product
        self._on_auth_failure = on_auth_failure
        self._stream_enabled = stream
        self._stream: PortfolioStreamClient | None = None

    def _auth_failed(self, exc: Exception) -> BrokerUnavailable:
        if self._on_auth_failure is not None:
            try:
                self._on_auth_failure(str(exc))
            except Exception:
                log.exception("upstox.auth_failure_hook.failed")
        error = BrokerUnavailable(f"Upstox refused the access token: {exc}; log in again")
        error.__cause__ = exc
        return error

    async def place(self, order: Order) -> Sequence[str]:
        """Place ``order`` with its client id as the Upstox tag.

        Raises:
            OrderRejected: Upstox refused the order itself (nothing placed).
            OrdersBlocked: Upstox refuses every order of the account (static IP, algo name,
                order API, a dead token): nothing placed.
            BrokerUnavailable: the outcome is unknown (answer lost; also when the token died
                while the lost order was looked up): look the tag up once a login is back.
        """
        priced = order.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT)
        try:
            request = OrderRequest(
                instrument_token=order.instrument_key,
                quantity=order.quantity,
                side=order.side,
                tag=str(order.client_order_id),
                product=self._product,
                order_type=order.order_type,
                price_paise=(order.limit_price_paise or 0) if priced else 0,
            )
        except ValueError as exc:
            raise OrderRejected(f"order {order.client_order_id} cannot be sent: {exc}") from exc
        try:
            placed = await self._write(self._client.place_order(request), "the order place call")
        except UpstoxOrderStateUnknown as exc:
            if exc.status_code == 401:
                await self._check_token(exc)
            raise BrokerUnavailable(f"order {order.client_order_id}: {exc}") from exc
        except (OrderRejected, BrokerUnavailable, OrdersBlocked):
            raise
        except UpstoxApiError as exc:  # any other answer: the outcome is not certain
            raise BrokerUnavailable(f"order {order.client_order_id}: {exc}") from exc
        return placed.order_ids

    async def cancel(self, broker_order_id: str) -> None:
        """Cancel one Upstox order (``DELETE /v3/order/cancel``); Upstox confirms on the stream.

        Raises:
            OrderRejected: Upstox refused: unknown order, or already complete/cancelled/rejected.
            OrdersBlocked: Upstox refuses order writes of the account (see :meth:`place`).
            BrokerUnavailable: no conclusive answer.
        """
        try:
            await self._write(self._client.cancel_order(broker_order_id), "the cancel call")
        except (OrderRejected, BrokerUnavailable, OrdersBlocked):
            raise
        except UpstoxApiError as exc:  # e.g. UDAPI100010 unknown order id: nothing to cancel
            raise OrderRejected(f"cancel of {broker_order_id}: {exc}") from exc

    async def modify(self, broker_order_id: str, target: ModifyTarget) -> None:
        """Change one Upstox order (``PUT /v3/order/modify``); Upstox confirms on the stream.

        Raises:
            OrderRejected: Upstox refused the change (finished order, invalid values).
            OrdersBlocked: Upstox refuses order writes of the account (see :meth:`place`).
            BrokerUnavailable: no conclusive answer (read the order to see if it took).
        """
        try:
            await self._write(
                self._client.modify_order(
                    broker_order_id,
                    order_type=target.order_type,
                    price_paise=target.price_paise,
                    trigger_price_paise=target.trigger_price_paise,
                    quantity=target.quantity,
                ),
                "the modify call",
            )
        except (OrderRejected, BrokerUnavailable, OrdersBlocked):
            raise
        except UpstoxApiError as exc:
            raise OrderRejected(f"modify of {broker_order_id}: {exc}") from exc

    async def _write(self, call: Awaitable[T], what: str) -> T:
        """An order write, its account-level refusals turned into OrdersBlocked."""
        try:
            return await call
        except UpstoxAuthError as exc:
            raise await self._check_token(exc, what) from exc
        except UpstoxOrderRejected as exc:
            cause = blocking_cause(exc)
            if cause is None:
                raise
            raise OrdersBlocked(f"Upstox refused {what}: {exc}", cause=cause.value) from exc

    async def _check_token(self, exc: UpstoxApiError, what: str = "a call") -> OrdersBlocked:
        """A 401 on an order call: ask a read (GET /v2/user/profile) whether the token works.

        Upstox has answered 401 on order APIs while read APIs accepted the same token (API.md
        13): only when the read is refused too is the token declared dead (and revoked).
        """
        try:
            await self._client.profile()
        except UpstoxAuthError as refused:
            self._auth_failed(refused)
            return OrdersBlocked(
                f"Upstox refused the access token ({exc}; a read confirmed it): log in again",
                cause=BlockCause.TOKEN.value,
            )
        except UpstoxApiError as check:
            return OrdersBlocked(
                f"Upstox answered 401 to {what} ({exc}) and the token could not be checked "
                f"({check})",
                cause=BlockCause.ORDER_API.value,
            )
        log.error("upstox.order_api.unauthorized", extra={"call": what})
        return OrdersBlocked(
            f"Upstox answered 401 to {what} ({exc}) while GET /v2/user/profile accepts the "
            "same token",
            cause=BlockCause.ORDER_API.value,
        )

    async def reports_for_tag(self, tag: str) -> Sequence[BrokerOrderReport]:
        """Today's Upstox orders carrying ``tag``."""
        records = await self._read(self._client.find_orders_by_tag(tag))
        return [report_from_record(r) for r in records]

    async def order_book(self) -> Sequence[BrokerOrderReport]:
        """Today's Upstox order book."""
        records = await self._read(self._client.order_book())
        return [report_from_record(r) for r in records]

    async def positions(self) -> Sequence[PositionReport]:
        """Upstox's short-term positions with a non-zero net quantity."""
        records = await self._read(self._client.positions())
        return [position_from_record(r) for r in records if r.quantity]

    async def _read(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except UpstoxAuthError as exc:
            raise self._auth_failed(exc) from exc
        except UpstoxUnavailable:
            raise
        except UpstoxApiError as exc:
            raise BrokerUnavailable(str(exc)) from exc

    async def start(self, on_report: ReportHandler, on_connect: ConnectHandler) -> None:
        """Start the portfolio stream (order and position updates)."""
        if not self._stream_enabled or self._stream is not None:
            return

        def on_update(update: PortfolioUpdate) -> None:
            if isinstance(update, OrderRecord):
                on_report(report_from_record(update))

        def on_unauthorized() -> None:
            stream = self._stream
            refused = stream.refused_token if stream is not None else None
            if refused is not None and _plain(self._token()) != refused:
                return  # a login replaced that token meanwhile: nothing to report
            self._auth_failed(UpstoxAuthError("portfolio stream refused the token"))

        self._stream = PortfolioStreamClient(
            api_base_url=self._api_base_url,
            access_token=self._token,
            on_update=on_update,
            on_connect=on_connect,
            on_unauthorized=on_unauthorized,
            resume_on_new_token=True,  # back by itself after the next login
        )
        await self._stream.start()

    async def close(self) -> None:
        """Stop the stream and close the REST client (its connections live on this loop)."""
        if self._stream is not None:
            await self._stream.close()
            self._stream = None
        await self._client.aclose()

    @property
    def stream(self) -> PortfolioStreamClient | None:
        """The portfolio stream client, once started."""
        return self._stream


def _plain(value: str | SecretStr | None) -> str:
    return (value.get_secret_value() if isinstance(value, SecretStr) else value) or ""


def reconcile(
    session: Session, broker: UpstoxBroker, *, account: str, now: datetime
) -> ReconciliationReport:
    """Compare the account's unfinished orders and open positions (database) with Upstox.

    Read-only: the report lists what differs; the caller acts (feed ``resolved`` orders'
    broker view to the executor, alert on position mismatches).

    Raises:
        BrokerUnavailable: Upstox could not be asked.
    """
    orders = OrderRepository(session, account).unfinished()
    positions = PositionRepository(session, account).open_positions()
    report = reconcile_books(
        bot_orders=orders,
        bot_positions=positions,
        broker_orders=broker.order_reports(),
        broker_positions=broker.position_reports(),
        at=now,
    )
    if not report.clean:
        log.warning(
            "reconcile.mismatch",
            extra={"orders": len(report.orders), "positions": len(report.positions)},
        )
    return report


class UpstoxTickSource:
    """Domain ticks of many instruments from Market Data Feed V3 (one async iterator).

    Instruments are split with ``plan_shards`` over as few connections as the plan needs; each
    connection reconnects and resubscribes on its own. Use ``async with`` and iterate
    :meth:`ticks`.

    Args:
        api_base_url: ``UPSTOX_API_BASE_URL``.
        access_token: the current token (read on every authorize).
        instrument_keys: what to subscribe (e.g. the universe's ranked equities).
        clock: the current aware time; ``is_market_open(at)`` says when silence means trouble.
        mode: subscription mode; ``full`` carries the day volume the candles need.
        queue_size: ticks buffered for a slow consumer (newer ones are dropped and counted).
        resume_on_new_token: a refused token makes each connection wait for the next login
            and resume, instead of stopping (the live harness).
        on_unauthorized: called with the refused token when Upstox refuses it.
    """

    def __init__(
        self,
        *,
        api_base_url: str,
        access_token: Callable[[], str],
        instrument_keys: Sequence[str],
        clock: Callable[[], datetime],
        is_market_open: Callable[[datetime], bool],
        mode: FeedMode = FeedMode.FULL,
        limits: FeedLimits = NORMAL_PLAN_LIMITS,
        queue_size: int = 100_000,
        resume_on_new_token: bool = False,
        on_unauthorized: Callable[[str], None] | None = None,
    ) -> None:
        self._shards = plan_shards(instrument_keys, mode, limits)
        self._mode = mode
        self._queue: asyncio.Queue[Tick] = asyncio.Queue(maxsize=queue_size)
        self.dropped = 0
        self.clients = [
            MarketDataFeedV3Client(
                api_base_url=api_base_url,
                access_token=access_token,
                clock=clock,
                is_market_open=is_market_open,
                on_frame=self._on_frame,
                limits=limits,
                resume_on_new_token=resume_on_new_token,
                on_unauthorized=on_unauthorized,
            )
            for _ in self._shards
        ]

    async def __aenter__(self) -> UpstoxTickSource:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect every shard and subscribe its instruments (returns at once)."""
        for client, keys in zip(self.clients, self._shards, strict=True):
            await client.subscribe(keys, self._mode)
            await client.start()

    async def close(self) -> None:
        """Close every connection."""
        await asyncio.gather(*(client.close() for client in self.clients))

    def _on_frame(self, frame: DecodedFrame) -> None:
        for tick in frame.ticks:
            try:
                self._queue.put_nowait(tick)
            except asyncio.QueueFull:
                self.dropped += 1

    async def ticks(self) -> AsyncIterator[Tick]:
        """Ticks from every shard, in arrival order, until cancelled."""
        while True:
            yield await self._queue.get()

"""Async client for the Upstox REST API: market data, instruments, orders, portfolio, charges.

Hosts (API.md 0.1, 9): ordinary calls go to ``api_base_url``; order writes (place, modify,
cancel) go to ``order_base_url``, Upstox's low-latency host ``https://api-hft.upstox.com``; the
instrument files come from ``assets_base_url`` (``https://assets.upstox.com``). When
``api_base_url`` is changed (e.g. to a simulator) and the other two are not given, they follow
``api_base_url``, so one setting (``UPSTOX_API_BASE_URL``) moves the whole client.

Retries: reads (GET) are retried with exponential back-off on timeouts, connection errors and 5xx,
a bounded number of times. A 429 pauses the endpoint (honouring ``Retry-After`` if Upstox ever
sends it, else back-off) and then retries, for every call: it slows the client instead of failing
it, up to a bounded budget.

Order placement is never retried blindly. After an ambiguous failure (timeout, connection error,
5xx, and also 429) the client waits ``settle_s``, searches today's order book for the order's tag
(the bot's client order id) and returns the orders found. It sends the order again only when the
search succeeded and found nothing, at most ``max_attempts`` placements in all. If the search
itself fails, it raises :class:`UpstoxOrderStateUnknown` and places nothing more.
"""

from __future__ import annotations

import asyncio
import gzip
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from pydantic import SecretStr

from upstox_bot.domain import OrderType, Product, Side, paise_to_rupees
from upstox_bot.upstox.errors import (
    UpstoxApiError,
    UpstoxAuthError,
    UpstoxOrderRejected,
    UpstoxOrderStateUnknown,
    UpstoxRateLimited,
    UpstoxServerError,
    UpstoxTimeout,
    UpstoxUnavailable,
    error_from_response,
)
from upstox_bot.upstox.models import (
    ORDER_TYPE_CODES,
    PRODUCT_CODES,
    SIDE_CODES,
    BrokerageCharges,
    CandleUnit,
    FullQuote,
    FundsAndMargin,
    HistoricalCandle,
    LtpQuote,
    OptionChainStrike,
    OrderRecord,
    PlacedOrder,
    PositionRecord,
    TradeRecord,
    Validity,
)
from upstox_bot.upstox.ratelimit import RateLimiter, Sleep

log = logging.getLogger(__name__)

DEFAULT_API_BASE_URL = "https://api.upstox.com"
DEFAULT_ORDER_BASE_URL = "https://api-hft.upstox.com"
DEFAULT_ASSETS_BASE_URL = "https://assets.upstox.com"
INSTRUMENTS_PATH = "/market-quote/instruments/exchange"
MAX_QUOTE_KEYS = 500
MAX_TAG_CHARS = 40

TokenValue = str | SecretStr
TokenProvider = Callable[[], TokenValue | Awaitable[TokenValue]]
"""Returns the current access token (plain or SecretStr), synchronously or as an awaitable."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Bounded retries.

    Attributes:
        attempts: total tries of a read after timeouts, connection errors or 5xx.
        rate_limited_attempts: total tries of any call answered 429.
        base_delay_s: first back-off; doubles each retry up to ``max_delay_s``.
        max_retry_after_s: cap on a server-sent ``Retry-After``.
    """

    attempts: int = 4
    rate_limited_attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    max_retry_after_s: float = 30.0

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        return float(min(self.max_delay_s, self.base_delay_s * 2 ** max(0, retry - 1)))


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacementPolicy:
    """How an order placement recovers from a lost answer (see the module doc).

    Attributes:
        max_attempts: most placements sent for one order after timeouts or 5xx.
        settle_s: wait after an ambiguous failure before searching the order book for the tag.
        market_protection: default ``market_protection`` for MARKET and SL-M orders: ``-1``
            lets Upstox choose, ``1``-``25`` is a percent band (API.md 5.2, 9.2).
    """

    max_attempts: int = 3
    settle_s: float = 2.0
    market_protection: float = -1


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRequest:
    """A new order for ``POST /v3/order/place``. Prices in paise; quantity in units (shares).

    ``tag`` is the bot's client order id: unique per order, at most 40 characters; the order
    book is searched by it after an ambiguous failure.
    """

    instrument_token: str
    quantity: int
    side: Side
    tag: str
    product: Product = Product.INTRADAY
    order_type: OrderType = OrderType.MARKET
    price_paise: int = 0
    trigger_price_paise: int = 0
    validity: Validity = Validity.DAY
    disclosed_quantity: int = 0
    market_protection: float | None = None  # None: the client's default for MARKET / SL-M
    slice: bool = True
    is_amo: bool = False

    def __post_init__(self) -> None:
        if self.quantity <= 0:
            raise ValueError("quantity must be positive")
        if not self.tag or len(self.tag) > MAX_TAG_CHARS:
            raise ValueError(f"tag must be 1..{MAX_TAG_CHARS} characters")
        if self.price_paise < 0 or self.trigger_price_paise < 0:
            raise ValueError("prices must not be negative")
        if self.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT) and self.price_paise <= 0:
            raise ValueError(f"{self.order_type} order needs a price")
        needs_trigger = (OrderType.STOP_LIMIT, OrderType.STOP_MARKET)
        if self.order_type in needs_trigger and self.trigger_price_paise <= 0:
            raise ValueError(f"{self.order_type} order needs a trigger price")
        if self.market_protection is not None and not -1 <= self.market_protection <= 25:
            raise ValueError("market_protection must be -1 or 0..25")

    def to_payload(self, *, default_market_protection: float) -> dict[str, Any]:
        """The JSON body of the v3 place call."""
        is_market = self.order_type in (OrderType.MARKET, OrderType.STOP_MARKET)
        payload: dict[str, Any] = {
            "instrument_token": self.instrument_token,
            "quantity": self.quantity,
            "product": PRODUCT_CODES[self.product],
            "validity": self.validity.value,
            "price": 0 if is_market else _rupees(self.price_paise),
            "tag": self.tag,
            "order_type": ORDER_TYPE_CODES[self.order_type],
            "transaction_type": SIDE_CODES[self.side],
            "disclosed_quantity": self.disclosed_quantity,
            "trigger_price": _rupees(self.trigger_price_paise),
            "is_amo": self.is_amo,
            "slice": self.slice,
        }
        if is_market:
            protection = self.market_protection
            payload["market_protection"] = (
                default_market_protection if protection is None else protection
            )
        return payload


def _rupees(paise: int) -> float:
    # JSON needs a number; two-decimal rupee values round-trip exactly through float repr.
    return float(paise_to_rupees(paise))


def _query(params: Mapping[str, Any]) -> str:
    # Upstox wants "|" and spaces percent-encoded (%7C, %20); commas separate keys in lists.
    clean = {k: v for k, v in params.items() if v is not None}
    return urlencode(clean, quote_via=quote, safe=",")


def _resolve(explicit: str | None, api_base_url: str, upstox_default: str) -> str:
    if explicit:
        return explicit.rstrip("/")
    if api_base_url.rstrip("/") == DEFAULT_API_BASE_URL:
        return upstox_default
    return api_base_url.rstrip("/")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class UpstoxClient:
    """Async Upstox REST client. Use as ``async with UpstoxClient(...) as client:``.

    Args:
        access_token: returns the current access token (called for every request, so a new
            login takes effect at once).
        api_base_url: ``UPSTOX_API_BASE_URL``; default ``https://api.upstox.com``.
        order_base_url: host for place/modify/cancel; default Upstox's HFT host, or
            ``api_base_url`` when that was changed.
        assets_base_url: host of the instrument files; default ``https://assets.upstox.com``, or
            ``api_base_url`` when that was changed.
        algo_name: the exchange-registered Algo Name, sent as ``X-Algo-Name`` on order writes.
        timeout: seconds per request; ``order_timeout`` for order writes (default the same);
            ``download_timeout`` for the instrument file.
        retry: back-off and retry budget; ``placement``: order placement recovery.
        limiter: the rate limiter; share one per user across clients.
        transport: an httpx transport (tests).
        sleep: the async sleep used for back-off (tests).
    """

    def __init__(
        self,
        *,
        access_token: TokenProvider,
        api_base_url: str = DEFAULT_API_BASE_URL,
        order_base_url: str | None = None,
        assets_base_url: str | None = None,
        algo_name: str | None = None,
        timeout: float = 10.0,
        order_timeout: float | None = None,
        download_timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        placement: PlacementPolicy | None = None,
        limiter: RateLimiter | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._token = access_token
        self.api_base_url = api_base_url.rstrip("/")
        self.order_base_url = _resolve(order_base_url, api_base_url, DEFAULT_ORDER_BASE_URL)
        self.assets_base_url = _resolve(assets_base_url, api_base_url, DEFAULT_ASSETS_BASE_URL)
        self._algo_name = algo_name or None
        self._timeout = timeout
        self._order_timeout = order_timeout if order_timeout is not None else timeout
        self._download_timeout = download_timeout
        self._retry = retry or RetryPolicy()
        self._placement = placement or PlacementPolicy()
        self._limiter = limiter or RateLimiter(sleep=sleep)
        self._sleep = sleep
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout)

    def __repr__(self) -> str:
        return f"UpstoxClient(api_base_url={self.api_base_url!r})"

    async def __aenter__(self) -> UpstoxClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # --- transport ------------------------------------------------------------------------

    async def _bearer(self) -> str:
        value = self._token()
        if inspect.isawaitable(value):
            value = await value
        plain = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not plain:
            raise UpstoxAuthError("no Upstox access token: log in first")
        return plain

    async def _headers(self, path: str, *, auth: bool, order_write: bool) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {await self._bearer()}"
        if path.startswith("/v2/"):
            headers["Api-Version"] = "2.0"  # harmless on v2 (API.md 0.2, 12)
        if order_write and self._algo_name:
            headers["X-Algo-Name"] = self._algo_name
        return headers

    async def _send_once(
        self,
        method: str,
        base: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        order_write: bool = False,
        timeout_s: float | None = None,
    ) -> Any:
        """One HTTP exchange; returns the decoded JSON body of a success, else raises."""
        context = f"{method} {path}"
        url = f"{base}{path}"
        if params:
            url = f"{url}?{_query(params)}"
        headers = await self._headers(path, auth=True, order_write=order_write)
        try:
            response = await self._http.request(
                method, url, headers=headers, json=body, timeout=timeout_s or self._timeout
            )
        except httpx.TimeoutException as exc:
            raise UpstoxTimeout(f"{context}: timed out") from exc
        except httpx.TransportError as exc:
            raise UpstoxTimeout(f"{context}: {type(exc).__name__}") from exc
        try:
            decoded: Any = response.json()
        except ValueError:
            decoded = None
        failed = not response.is_success or (
            isinstance(decoded, Mapping) and decoded.get("status") == "error"
        )
        if failed:
            status = response.status_code if not response.is_success else 400
            error = error_from_response(status, decoded, order_write=order_write, context=context)
            if isinstance(error, UpstoxRateLimited):
                error.retry_after_s = _retry_after(response)
            raise error
        if not isinstance(decoded, Mapping):
            raise UpstoxServerError(
                f"{context}: answer is not a JSON object", status_code=response.status_code
            )
        return decoded

    def _rate_limit_pause(self, exc: UpstoxRateLimited, count: int) -> float:
        pause = self._retry.backoff(count)
        if exc.retry_after_s is not None:
            pause = max(pause, min(exc.retry_after_s, self._retry.max_retry_after_s))
        return pause

    async def _call(
        self,
        method: str,
        path: str,
        *,
        endpoint: str | None = None,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        base: str | None = None,
        order_write: bool = False,
        retry_ambiguous: bool = True,
    ) -> Any:
        """Send with rate limiting, 429 pauses and (if ``retry_ambiguous``) bounded retries."""
        name = endpoint or f"{method} {path}"
        rate_limited = 0
        failures = 0
        while True:
            await self._limiter.acquire(name, order_write=order_write)
            try:
                return await self._send_once(
                    method,
                    base or self.api_base_url,
                    path,
                    params=params,
                    body=body,
                    order_write=order_write,
                    timeout_s=self._order_timeout if order_write else None,
                )
            except UpstoxRateLimited as exc:
                rate_limited += 1
                if rate_limited >= self._retry.rate_limited_attempts:
                    raise
                pause = self._rate_limit_pause(exc, rate_limited)
                self._limiter.penalize(name, pause)
                log.warning(
                    "upstox.rate_limited",
                    extra={"endpoint": name, "pause_s": pause, "count": rate_limited},
                )
            except (UpstoxTimeout, UpstoxServerError) as exc:
                failures += 1
                if not retry_ambiguous or failures >= self._retry.attempts:
                    raise
                pause = self._retry.backoff(failures)
                log.warning(
                    "upstox.retry",
                    extra={
                        "endpoint": name,
                        "error": type(exc).__name__,
                        "status": exc.status_code,
                        "attempt": failures,
                        "pause_s": pause,
                    },
                )
                await self._sleep(pause)

    async def _data(self, method: str, path: str, **kwargs: Any) -> Any:
        envelope = await self._call(method, path, **kwargs)
        return envelope.get("data")

    # --- instruments ----------------------------------------------------------------------

    async def download_instruments(self, exchange: str = "NSE") -> list[dict[str, Any]]:
        """Download and decode an instrument master file (API.md 2.1).

        Args:
            exchange: the file's name: ``NSE``, ``BSE``, ``MCX``, ``complete``, ``NSE_MIS``, ...

        Returns:
            The file's records, each a flat dict with the fields of API.md 2.2.

        Raises:
            UpstoxUnavailable: the download failed after retries, or the file is not a JSON array.
        """
        url = f"{self.assets_base_url}{INSTRUMENTS_PATH}/{quote(exchange, safe='')}.json.gz"
        failures = 0
        while True:
            try:
                response = await self._http.get(url, timeout=self._download_timeout)
            except httpx.TransportError as exc:
                error: UpstoxUnavailable = UpstoxTimeout(f"instrument file {exchange}: {exc!r}")
                error.__cause__ = exc
            else:
                if response.is_success:
                    return _decode_instruments(response.content, exchange)
                error = UpstoxServerError(
                    f"instrument file {exchange}: HTTP {response.status_code}",
                    status_code=response.status_code,
                )
                if response.status_code < 500 and response.status_code != 429:
                    raise error_from_response(
                        response.status_code, None, context=f"instrument file {exchange}"
                    )
            failures += 1
            if failures >= self._retry.attempts:
                raise error
            await self._sleep(self._retry.backoff(failures))

    # --- market data ----------------------------------------------------------------------

    async def historical_candles(
        self,
        instrument_key: str,
        unit: CandleUnit,
        interval: int,
        to_date: date,
        from_date: date | None = None,
    ) -> list[HistoricalCandle]:
        """V3 historical candles, oldest first (API.md 7.3; ``to_date`` inclusive, IST dates).

        Raises:
            ValueError: interval out of Upstox's range for the unit.
            UpstoxRequestError: Upstox refused the range (e.g. UDAPI1148 span too long).
        """
        _check_interval(unit, interval)
        path = (
            f"/v3/historical-candle/{quote(instrument_key, safe='')}/{unit.value}/{interval}"
            f"/{to_date.isoformat()}"
        )
        if from_date is not None:
            path += f"/{from_date.isoformat()}"
        data = await self._data("GET", path, endpoint="GET /v3/historical-candle")
        return _candles(data, instrument_key, unit.seconds * interval)

    async def intraday_candles(
        self, instrument_key: str, unit: CandleUnit, interval: int
    ) -> list[HistoricalCandle]:
        """Today's V3 candles, oldest first (units minutes, hours, days)."""
        if unit is CandleUnit.WEEKS:
            raise ValueError("intraday candles come in minutes, hours or days")
        _check_interval(unit, interval)
        path = (
            f"/v3/historical-candle/intraday/{quote(instrument_key, safe='')}"
            f"/{unit.value}/{interval}"
        )
        data = await self._data("GET", path, endpoint="GET /v3/historical-candle/intraday")
        return _candles(data, instrument_key, unit.seconds * interval)

    async def full_quotes(self, instrument_keys: Sequence[str]) -> dict[str, FullQuote]:
        """Full market quotes (``/v2/market-quote/quotes``), keyed by instrument key.

        Keys are sent 500 per call; keys Upstox does not know are missing from the result.
        """
        out: dict[str, FullQuote] = {}
        for chunk in _chunks(list(instrument_keys), MAX_QUOTE_KEYS):
            data = await self._data(
                "GET", "/v2/market-quote/quotes", params={"instrument_key": ",".join(chunk)}
            )
            for raw in (data or {}).values():
                quote_ = FullQuote.from_api(raw)
                out[quote_.instrument_token] = quote_
        return out

    async def ltp(self, instrument_keys: Sequence[str]) -> dict[str, LtpQuote]:
        """Last traded prices (``/v3/market-quote/ltp``), keyed by instrument key."""
        out: dict[str, LtpQuote] = {}
        for chunk in _chunks(list(instrument_keys), MAX_QUOTE_KEYS):
            data = await self._data(
                "GET", "/v3/market-quote/ltp", params={"instrument_key": ",".join(chunk)}
            )
            for raw in (data or {}).values():
                ltp = LtpQuote.from_api(raw)
                out[ltp.instrument_token] = ltp
        return out

    async def option_chain(self, underlying_key: str, expiry: date) -> list[OptionChainStrike]:
        """The option chain of an underlying for one expiry, by ascending strike."""
        data = await self._data(
            "GET",
            "/v2/option/chain",
            params={"instrument_key": underlying_key, "expiry_date": expiry.isoformat()},
        )
        strikes = [OptionChainStrike.from_api(raw) for raw in data or ()]
        return sorted(strikes, key=lambda s: s.strike_paise)

    # --- orders ---------------------------------------------------------------------------

    async def place_order(self, order: OrderRequest) -> PlacedOrder:
        """Place an order with ``POST /v3/order/place`` on the order host.

        MARKET and SL-M orders carry ``market_protection`` (the request's, else the policy's).
        See the module doc for the recovery rule after a lost answer.

        Returns:
            The order ids (several if Upstox sliced the order), ``recovered=True`` when they were
            found by tag after a lost answer.

        Raises:
            UpstoxOrderRejected: Upstox refused the order (validation, IP, algo name, ...).
            UpstoxAuthError: the token is invalid or expired.
            UpstoxOrderStateUnknown: the answer was lost and the order book could not be
                searched: the order may exist. Search by tag before placing it again.
            UpstoxUnavailable: every attempt failed and the order book shows no order with the
                tag: nothing was placed.
        """
        payload = order.to_payload(default_market_protection=self._placement.market_protection)
        endpoint = "POST /v3/order/place"
        ambiguous = 0
        rate_limited = 0
        attempts = 0
        while True:
            attempts += 1
            await self._limiter.acquire(endpoint, order_write=True)
            try:
                envelope = await self._send_once(
                    "POST",
                    self.order_base_url,
                    "/v3/order/place",
                    body=payload,
                    order_write=True,
                    timeout_s=self._order_timeout,
                )
            except UpstoxRateLimited as exc:
                rate_limited += 1
                failure: UpstoxUnavailable = exc
                exhausted = rate_limited >= self._retry.rate_limited_attempts
                self._limiter.penalize(endpoint, self._rate_limit_pause(exc, rate_limited))
            except (UpstoxTimeout, UpstoxServerError) as exc:
                ambiguous += 1
                failure = exc
                exhausted = ambiguous >= self._placement.max_attempts
                await self._sleep(self._placement.settle_s)
            else:
                data = envelope.get("data") or {}
                ids = tuple(str(i) for i in data.get("order_ids") or ())
                if not ids and data.get("order_id"):
                    ids = (str(data["order_id"]),)
                latency = (envelope.get("metadata") or {}).get("latency")
                return PlacedOrder(
                    tag=order.tag,
                    order_ids=ids,
                    latency_ms=int(latency) if latency is not None else None,
                    attempts=attempts,
                )
            found = await self._search_after_failure(order.tag, failure)
            if found:
                log.warning(
                    "upstox.order.recovered",
                    extra={"tag": order.tag, "order_ids": [o.order_id for o in found]},
                )
                return PlacedOrder(
                    tag=order.tag,
                    order_ids=tuple(o.order_id for o in found),
                    recovered=True,
                    attempts=attempts,
                )
            if exhausted:
                raise failure
            log.warning(
                "upstox.order.resend",
                extra={"tag": order.tag, "error": type(failure).__name__, "attempt": attempts},
            )

    async def _search_after_failure(self, tag: str, failure: UpstoxApiError) -> list[OrderRecord]:
        try:
            return await self.find_orders_by_tag(tag)
        except UpstoxAuthError:
            raise
        except UpstoxApiError as exc:
            raise UpstoxOrderStateUnknown(
                f"order {tag}: placement failed ({failure}) and the order book search failed "
                f"({exc}); the order may exist"
            ) from exc

    async def modify_order(
        self,
        order_id: str,
        *,
        order_type: OrderType,
        price_paise: int,
        trigger_price_paise: int = 0,
        validity: Validity = Validity.DAY,
        quantity: int | None = None,
        disclosed_quantity: int | None = None,
        market_protection: float | None = None,
    ) -> str:
        """Modify an open order (``PUT /v3/order/modify``); returns its order id.

        A 429 is retried; a timeout or 5xx is not (the outcome is unknown): it raises, and the
        caller reads the order details to see whether the change took.
        """
        body: dict[str, Any] = {
            "order_id": order_id,
            "order_type": ORDER_TYPE_CODES[order_type],
            "validity": validity.value,
            "price": _rupees(price_paise),
            "trigger_price": _rupees(trigger_price_paise),
        }
        if quantity is not None:
            body["quantity"] = quantity
        if disclosed_quantity is not None:
            body["disclosed_quantity"] = disclosed_quantity
        if order_type in (OrderType.MARKET, OrderType.STOP_MARKET):
            body["market_protection"] = (
                self._placement.market_protection
                if market_protection is None
                else market_protection
            )
        data = await self._data(
            "PUT",
            "/v3/order/modify",
            body=body,
            base=self.order_base_url,
            order_write=True,
            retry_ambiguous=False,
        )
        return str((data or {}).get("order_id") or order_id)

    async def cancel_order(self, order_id: str) -> str:
        """Cancel an open order (``DELETE /v3/order/cancel``); returns its order id.

        After a timeout or 5xx the client reads the order: if it is cancelled (or a cancel is
        pending) that is success; if it finished otherwise the cancel is refused; if it is still
        working the cancel is sent again (bounded by the retry policy).

        Raises:
            UpstoxOrderRejected: Upstox refused (unknown order, finished order).
            UpstoxUnavailable: no conclusive answer within the retry budget.
        """
        attempts = 0
        while True:
            attempts += 1
            try:
                data = await self._data(
                    "DELETE",
                    "/v3/order/cancel",
                    params={"order_id": order_id},
                    base=self.order_base_url,
                    order_write=True,
                    retry_ambiguous=False,
                )
                return str((data or {}).get("order_id") or order_id)
            except (UpstoxTimeout, UpstoxServerError):
                if attempts >= self._retry.attempts:
                    raise
                await self._sleep(self._retry.backoff(attempts))
                current = await self.order_details(order_id)
                if current.status.startswith("cancel"):
                    return order_id
                if current.is_terminal:
                    raise UpstoxOrderRejected(
                        f"order {order_id} is {current.status}; nothing to cancel"
                    ) from None

    async def order_book(self) -> list[OrderRecord]:
        """Today's orders (``GET /v2/order/retrieve-all``)."""
        data = await self._data("GET", "/v2/order/retrieve-all")
        return [OrderRecord.from_api(raw) for raw in data or ()]

    async def order_details(self, order_id: str) -> OrderRecord:
        """The latest state of one order (``GET /v2/order/details``).

        Raises:
            UpstoxNotFound: Upstox does not know the order id (UDAPI100010).
        """
        data = await self._data("GET", "/v2/order/details", params={"order_id": order_id})
        return OrderRecord.from_api(data)

    async def order_history(
        self, *, order_id: str | None = None, tag: str | None = None
    ) -> list[OrderRecord]:
        """Every state an order went through (``GET /v2/order/history``); by id, tag or both."""
        if order_id is None and tag is None:
            raise ValueError("order_history needs an order_id or a tag")
        data = await self._data(
            "GET", "/v2/order/history", params={"order_id": order_id, "tag": tag}
        )
        return [OrderRecord.from_api(raw) for raw in data or ()]

    async def find_orders_by_tag(self, tag: str) -> list[OrderRecord]:
        """Today's orders carrying ``tag`` (several when Upstox sliced the order), from the book.

        Raises:
            UpstoxUnavailable: the order book could not be read after retries.
        """
        return [o for o in await self.order_book() if o.tag == tag]

    async def find_order_by_tag(self, tag: str) -> OrderRecord | None:
        """The first of today's orders carrying ``tag``, or None."""
        found = await self.find_orders_by_tag(tag)
        return found[0] if found else None

    async def trades_for_day(self) -> list[TradeRecord]:
        """Today's executions (``GET /v2/order/trades/get-trades-for-day``)."""
        data = await self._data("GET", "/v2/order/trades/get-trades-for-day")
        return [TradeRecord.from_api(raw) for raw in data or ()]

    async def order_trades(self, order_id: str) -> list[TradeRecord]:
        """Executions of one order (``GET /v2/order/trades``)."""
        data = await self._data("GET", "/v2/order/trades", params={"order_id": order_id})
        return [TradeRecord.from_api(raw) for raw in data or ()]

    # --- portfolio, funds, charges --------------------------------------------------------

    async def positions(self) -> list[PositionRecord]:
        """Short-term (intraday and F&O) positions (``GET /v2/portfolio/short-term-positions``)."""
        data = await self._data("GET", "/v2/portfolio/short-term-positions")
        return [PositionRecord.from_api(raw) for raw in data or ()]

    async def funds_and_margin(self, segment: str | None = None) -> FundsAndMargin:
        """Funds and margin (``GET /v2/user/get-funds-and-margin``; ``segment`` SEC or COM).

        Raises:
            UpstoxServiceClosed: outside the service window (00:00-05:30 IST).
        """
        params = {"segment": segment} if segment else None
        data = await self._data("GET", "/v2/user/get-funds-and-margin", params=params)
        return FundsAndMargin.from_api(data or {})

    async def brokerage(
        self,
        *,
        instrument_token: str,
        quantity: int,
        product: Product,
        side: Side,
        price_paise: int,
    ) -> BrokerageCharges:
        """Charges of one order (``GET /v2/charges/brokerage``)."""
        data = await self._data(
            "GET",
            "/v2/charges/brokerage",
            params={
                "instrument_token": instrument_token,
                "quantity": quantity,
                "product": PRODUCT_CODES[product],
                "transaction_type": SIDE_CODES[side],
                "price": f"{paise_to_rupees(price_paise)}",
            },
        )
        return BrokerageCharges.from_api(data or {})

    # --- market calendar ------------------------------------------------------------------

    async def market_holidays(self, day: date | None = None) -> list[dict[str, Any]]:
        """The current year's market holidays and special timings (``GET /v2/market/holidays``),
        or those of one date (``/v2/market/holidays/{YYYY-MM-DD}``), as raw records (API.md 7.4;
        ``upstox.holidays`` turns them into calendar days)."""
        path = "/v2/market/holidays" if day is None else f"/v2/market/holidays/{day.isoformat()}"
        data = await self._data("GET", path, endpoint="GET /v2/market/holidays")
        return [dict(raw) for raw in data or () if isinstance(raw, Mapping)]

    async def margin(self, legs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The margin a set of orders needs (``POST /v2/charges/margin``, API.md 6.5): legs of
        ``{instrument_key, quantity, transaction_type, product, price?}``, at most 20; answers
        ``{margins[{..., total_margin}], required_margin, final_margin}`` in rupees."""
        data = await self._data("POST", "/v2/charges/margin", body={"instruments": list(legs)})
        return dict(data) if isinstance(data, Mapping) else {}

    async def logout(self) -> None:
        """Invalidate the access token (``DELETE /v2/logout``)."""
        await self._call("DELETE", "/v2/logout", retry_ambiguous=False)


def _check_interval(unit: CandleUnit, interval: int) -> None:
    if not 1 <= interval <= unit.max_interval:
        raise ValueError(f"interval for {unit.value} must be 1..{unit.max_interval}")


def _candles(data: Any, instrument_key: str, interval_s: int) -> list[HistoricalCandle]:
    rows = (data or {}).get("candles") or []
    candles = [
        HistoricalCandle.from_api(row, instrument_key=instrument_key, interval_s=interval_s)
        for row in rows
    ]
    return sorted(candles, key=lambda c: c.start_ms)


def _decode_instruments(content: bytes, name: str) -> list[dict[str, Any]]:
    try:
        raw = gzip.decompress(content) if content[:2] == b"\x1f\x8b" else content
        records = json.loads(raw)
    except (OSError, EOFError, ValueError) as exc:
        raise UpstoxServerError(f"instrument file {name}: not JSON") from exc
    if not isinstance(records, list):
        raise UpstoxServerError(f"instrument file {name}: not a JSON array")
    return [r for r in records if isinstance(r, dict)]

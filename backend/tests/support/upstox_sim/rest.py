"""REST half of the local Upstox simulator: login, instruments, quotes, candles, orders, portfolio.

Paths, envelopes and error codes follow the Upstox facts (API.md sections 0-8); how orders,
tokens and limits behave follows the :class:`~.scenario.Scenario` (API.md 13), realistic by
default: an order is acknowledged at once and matched a moment later by the simulator's own
exchange thread, it reaches the order book after a delay, a MARKET order rests when the price
gaps through its protection band. State lives in a :class:`RestSimulator`; tests change it
directly (prices, instruments, tokens, the scenario) and script faults with
:meth:`RestSimulator.fail_next`. The simulator runs in a server thread, so every state change
happens under one lock.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import heapq
import hmac
import itertools
import json
import math
import random
import secrets
import threading
import time as time_module
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qs, urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .scenario import Scenario

IST = ZoneInfo("Asia/Kolkata")
SESSION_OPEN = time(9, 15)
SESSION_MINUTES = 375  # 09:15 to 15:30

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# --- errors and envelopes -------------------------------------------------------------------


class SimError(Exception):
    """An Upstox error answer: HTTP status plus one ``UDAPI`` problem."""

    def __init__(
        self, status: int, code: str, message: str, *, property_path: str | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.property_path = property_path


def error_body(code: str, message: str, property_path: str | None = None) -> dict[str, Any]:
    """Upstox's error envelope, with the deprecated camelCase copies as the real API sends."""
    problem = {
        "errorCode": code,
        "message": message,
        "propertyPath": property_path,
        "invalidValue": None,
        "error_code": code,
        "property_path": property_path,
        "invalid_value": None,
    }
    return {"status": "error", "errors": [problem]}


def ok(data: Any, *, latency: int | None = None) -> JSONResponse:
    """The success envelope (with ``metadata.latency`` for v3 order calls)."""
    body: dict[str, Any] = {"status": "success", "data": data}
    if latency is not None:
        body["metadata"] = {"latency": latency}
    return JSONResponse(body)


def invalid_token() -> SimError:
    return SimError(401, "UDAPI100050", "Invalid token used to access API")


# --- fault injection ------------------------------------------------------------------------


class FaultKind(StrEnum):
    RATE_LIMITED = "rate_limited"  # 429 UDAPI10005
    SERVER_ERROR = "server_error"  # 500 UDAPI100500
    UNAVAILABLE = "unavailable"  # 503 (maintenance)
    TIMEOUT = "timeout"  # answer only after delay_s (longer than the client's timeout)
    EXPIRED_TOKEN = "expired_token"  # 401 UDAPI100050
    SLOW = "slow"  # wait delay_s, then answer normally


@dataclass(slots=True, kw_only=True)
class Fault:
    """A scripted misbehaviour for the next ``remaining`` requests whose path starts with
    ``path_prefix`` ("" = any HTTP path).

    ``process=True`` runs the real handler first, so the call takes effect (an order is placed)
    and only the answer is lost: the "accepted, then timeout / 5xx" case.
    """

    kind: FaultKind
    path_prefix: str = ""
    remaining: int = 1
    delay_s: float = 2.0
    process: bool = False
    retry_after_s: float | None = None


class FaultPlan:
    """The queue of scripted faults, shared between the test thread and the server thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, path: str) -> Fault | None:
        """The first fault matching ``path``, consuming one of its repetitions."""
        with self._lock:
            for fault in self._faults:
                if path.startswith(fault.path_prefix):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    @property
    def pending(self) -> int:
        with self._lock:
            return sum(f.remaining for f in self._faults)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    method: str
    path: str
    at: float  # time.monotonic() when the request arrived
    headers: dict[str, str]


class FaultMiddleware:
    """ASGI middleware: records every HTTP request and applies the scripted faults."""

    def __init__(self, app: ASGIApp, sim: RestSimulator) -> None:
        self.app = app
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        self.sim.record_request(
            RequestRecord(scope["method"], scope["path"], time_module.monotonic(), headers)
        )
        fault = self.sim.faults.take(scope["path"])
        if fault is None:
            if self.sim.over_rate_limit(scope["method"], scope["path"]):
                await _send_json(send, 429, error_body("UDAPI10005", "Too Many Request Sent"))
                return
            await self.app(scope, receive, send)
            return
        if fault.kind is FaultKind.SLOW:
            await asyncio.sleep(fault.delay_s)
            await self.app(scope, receive, send)
            return
        captured: list[Message] = []
        if fault.process:

            async def keep(message: Message) -> None:
                captured.append(message)

            await self.app(scope, receive, keep)
        if fault.kind is FaultKind.TIMEOUT:
            await asyncio.sleep(fault.delay_s)
            if captured:
                for message in captured:
                    await send(message)
                return
            await _send_json(send, 504, error_body("UDAPI100500", "Gateway timeout"))
            return
        status, body, extra = _fault_answer(fault)
        await _send_json(send, status, body, extra)


def _fault_answer(fault: Fault) -> tuple[int, dict[str, Any], dict[str, str]]:
    if fault.kind is FaultKind.RATE_LIMITED:
        extra = {}
        if fault.retry_after_s is not None:
            extra["retry-after"] = f"{fault.retry_after_s:g}"
        return 429, error_body("UDAPI10005", "Too Many Request Sent"), extra
    if fault.kind is FaultKind.EXPIRED_TOKEN:
        return 401, error_body("UDAPI100050", "Invalid token used to access API"), {}
    if fault.kind is FaultKind.UNAVAILABLE:
        return 503, error_body("UDAPI100500", "Service under maintenance"), {}
    return 500, error_body("UDAPI100500", "Something went wrong"), {}


async def _send_json(
    send: Send, status: int, body: dict[str, Any], extra: dict[str, str] | None = None
) -> None:
    payload = json.dumps(body).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


# --- instrument master ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Stock:
    symbol: str
    name: str
    isin: str
    token: str
    lot: int
    price: Decimal


SAMPLE_STOCKS = (
    _Stock("RELIANCE", "RELIANCE INDUSTRIES LTD", "INE002A01018", "2885", 500, Decimal("1402.50")),
    _Stock("SBIN", "STATE BANK OF INDIA", "INE062A01020", "3045", 750, Decimal("801.20")),
    _Stock("INFY", "INFOSYS LIMITED", "INE009A01021", "1594", 400, Decimal("1501.10")),
    _Stock("HDFCBANK", "HDFC BANK LTD", "INE040A01034", "1333", 550, Decimal("1905.40")),
    _Stock("ITC", "ITC LTD", "INE154A01025", "1660", 1600, Decimal("412.35")),
)
NON_FO_STOCK = _Stock(
    "EXAMPLE", "EXAMPLE INDUSTRIES LTD", "INE000X01010", "12345", 1, Decimal("95.50")
)

# (underlying symbol, index name, exchange token, lot size, freeze quantity, level); None lot =
# no derivatives (India VIX).
SAMPLE_INDICES: tuple[tuple[str, str, str, int | None, float, Decimal], ...] = (
    ("NIFTY", "Nifty 50", "26000", 75, 1800.0, Decimal("24500.50")),
    ("BANKNIFTY", "Nifty Bank", "26009", 35, 600.0, Decimal("52010.25")),
    ("FINNIFTY", "Nifty Fin Service", "26037", 65, 1800.0, Decimal("24010.75")),
    ("MIDCPNIFTY", "NIFTY MID SELECT", "26074", 140, 2800.0, Decimal("12505.60")),
    ("NIFTYNXT50", "Nifty Next 50", "26013", 25, 600.0, Decimal("68020.00")),
    ("INDIA VIX", "India VIX", "26017", None, 0.0, Decimal("13.45")),
)


def last_tuesday(year: int, month: int) -> date:
    """The last Tuesday of a month (NSE monthly expiry since 2025-09)."""
    first_next = date(year + (month == 12), month % 12 + 1, 1)
    day = first_next - timedelta(days=1)
    while day.weekday() != 1:
        day -= timedelta(days=1)
    return day


def exchange_closed_days(years: Sequence[int]) -> set[date]:
    """The simulator's NSE trading holidays of those years (its holiday records that close NSE)."""
    return {
        date.fromisoformat(h["date"])
        for year in years
        for h in sample_holidays(year)
        if "NSE" in h["closed_exchanges"]
    }


def monthly_expiries(today: date, count: int = 2) -> list[date]:
    """The next ``count`` monthly expiries on or after ``today``: last Tuesdays, moved to the
    trading day before when the exchange is closed then (as the real instrument file has them:
    the January 2027 expiry is Monday the 25th, the 26th being Republic Day)."""
    closed = exchange_closed_days((today.year, today.year + 1))
    out: list[date] = []
    year, month = today.year, today.month
    while len(out) < count:
        expiry = last_tuesday(year, month)
        while expiry in closed or expiry.weekday() >= 5:
            expiry -= timedelta(days=1)
        if expiry >= today:
            out.append(expiry)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def expiry_ms(expiry: date) -> int:
    """Epoch ms of 23:59:59 IST on the expiry day, as in the instrument file."""
    end = datetime.combine(expiry, time(23, 59, 59), tzinfo=IST)
    return int(end.timestamp()) * 1000


def _contract_date(expiry: date) -> str:
    return expiry.strftime("%d %b %y").upper()


def _strike_step(price: Decimal) -> Decimal:
    for step in (Decimal(5), Decimal(10), Decimal(20), Decimal(50), Decimal(100)):
        if price / step <= 60:
            return step
    return Decimal(100)


def _tick_paise(price: Decimal) -> float:
    return 10.0 if price >= 1000 else 5.0


def _num(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def sample_instruments(today: date) -> tuple[list[dict[str, Any]], dict[str, Decimal]]:
    """A small instrument master in Upstox's JSON shape, and a starting price per key.

    Holds F&O stocks (equity, two monthly futures, five strikes of CE and PE on the near month),
    one cash-only stock, the index records (NIFTY, BANKNIFTY, FINNIFTY, MIDCPNIFTY, NIFTYNXT50,
    India VIX) and index futures and near-month NIFTY options (``underlying_type`` ``INDEX``).
    """
    records: list[dict[str, Any]] = []
    prices: dict[str, Decimal] = {}
    tokens = itertools.count(40001)
    expiries = monthly_expiries(today)

    def derivative(
        *,
        symbol: str,
        name: str,
        underlying_key: str,
        underlying_type: str,
        expiry: date,
        kind: str,
        lot: int,
        freeze: float,
        spot: Decimal,
        strike: Decimal = Decimal(0),
    ) -> None:
        token = str(next(tokens))
        key = f"NSE_FO|{token}"
        if kind == "FUT":
            trading_symbol = f"{symbol} FUT {_contract_date(expiry)}"
            price = (spot * Decimal("1.004")).quantize(Decimal("0.05"))
            tick = _tick_paise(spot)
        else:
            trading_symbol = f"{symbol} {_num(strike)} {kind} {_contract_date(expiry)}"
            intrinsic = max(Decimal(0), spot - strike if kind == "CE" else strike - spot)
            price = (intrinsic + spot * Decimal("0.015")).quantize(Decimal("0.05"))
            tick = 5.0
        records.append(
            {
                "weekly": False,
                "segment": "NSE_FO",
                "name": name,
                "exchange": "NSE",
                "expiry": expiry_ms(expiry),
                "instrument_type": kind,
                "asset_symbol": symbol,
                "underlying_symbol": symbol,
                "instrument_key": key,
                "lot_size": lot,
                "freeze_quantity": freeze,
                "exchange_token": token,
                "minimum_lot": lot,
                "asset_key": underlying_key,
                "underlying_key": underlying_key,
                "tick_size": tick,
                "asset_type": underlying_type,
                "underlying_type": underlying_type,
                "trading_symbol": trading_symbol,
                "strike_price": float(strike),
                "qty_multiplier": 1.0,
            }
        )
        prices[key] = price

    def options(
        symbol: str, name: str, key: str, kind: str, lot: int, freeze: float, spot: Decimal
    ) -> None:
        step = _strike_step(spot)
        atm = (spot / step).to_integral_value(rounding=ROUND_HALF_UP) * step
        for offset in range(-2, 3):
            for option_type in ("CE", "PE"):
                derivative(
                    symbol=symbol,
                    name=name,
                    underlying_key=key,
                    underlying_type=kind,
                    expiry=expiries[0],
                    kind=option_type,
                    lot=lot,
                    freeze=freeze,
                    spot=spot,
                    strike=atm + offset * step,
                )

    for stock in (*SAMPLE_STOCKS, NON_FO_STOCK):
        key = f"NSE_EQ|{stock.isin}"
        records.append(
            {
                "segment": "NSE_EQ",
                "name": stock.name,
                "exchange": "NSE",
                "isin": stock.isin,
                "instrument_type": "EQ",
                "instrument_key": key,
                "lot_size": 1,
                "freeze_quantity": 100000.0,
                "exchange_token": stock.token,
                "tick_size": _tick_paise(stock.price),
                "trading_symbol": stock.symbol,
                "short_name": stock.name.title(),
                "security_type": "NORMAL",
            }
        )
        prices[key] = stock.price
    for stock in SAMPLE_STOCKS:
        underlying = f"NSE_EQ|{stock.isin}"
        freeze = float(stock.lot * 20)
        for expiry in expiries:
            derivative(
                symbol=stock.symbol,
                name=stock.name,
                underlying_key=underlying,
                underlying_type="EQUITY",
                expiry=expiry,
                kind="FUT",
                lot=stock.lot,
                freeze=freeze,
                spot=stock.price,
            )
        options(stock.symbol, stock.name, underlying, "EQUITY", stock.lot, freeze, stock.price)
    for symbol, index_name, token, lot, freeze, level in SAMPLE_INDICES:
        key = f"NSE_INDEX|{index_name}"
        records.append(
            {
                "segment": "NSE_INDEX",
                "name": index_name,
                "exchange": "NSE",
                "instrument_type": "INDEX",
                "instrument_key": key,
                "exchange_token": token,
                "trading_symbol": symbol,
            }
        )
        prices[key] = level
        if lot is None:
            continue
        for expiry in expiries:
            derivative(
                symbol=symbol,
                name=symbol,
                underlying_key=key,
                underlying_type="INDEX",
                expiry=expiry,
                kind="FUT",
                lot=lot,
                freeze=freeze,
                spot=level,
            )
        if symbol == "NIFTY":
            options(symbol, symbol, key, "INDEX", lot, freeze, level)
    return records, prices


_EQUITY_EXCHANGES = ["NSE", "NFO", "CDS", "BSE", "BFO", "BCD"]


def _ist_ms(day: date, at: time) -> int:
    return int(datetime.combine(day, at, tzinfo=IST).timestamp()) * 1000


def holiday_record(
    day: date,
    description: str,
    *,
    holiday_type: str = "TRADING_HOLIDAY",
    closed: Sequence[str] = tuple(_EQUITY_EXCHANGES),
    open_sessions: Sequence[tuple[str, time, time]] = (),
) -> dict[str, Any]:
    """One record of ``GET /v2/market/holidays`` (API.md 7.4): ``date`` as YYYY-MM-DD, the closed
    exchanges, and the open ones with start and end in epoch ms."""
    return {
        "date": day.isoformat(),
        "description": description,
        "holiday_type": holiday_type,
        "closed_exchanges": list(closed),
        "open_exchanges": [
            {"exchange": name, "start_time": _ist_ms(day, start), "end_time": _ist_ms(day, end)}
            for name, start, end in open_sessions
        ],
    }


def sample_holidays(year: int) -> list[dict[str, Any]]:
    """A year's answer in Upstox's shape: Republic Day (commodities open in the evening, as in
    Upstox's doc example), a settlement-only holiday, and a Diwali day whose Muhurat session
    opens NSE and NFO for an hour. The dates are fixed for the simulator, not NSE's list."""
    return [
        holiday_record(
            date(year, 1, 26),
            "Republic Day",
            open_sessions=[("MCX", time(17, 0), time(23, 55))],
        ),
        holiday_record(
            date(year, 2, 19),
            "Chhatrapati Shivaji Maharaj Jayanti",
            holiday_type="SETTLEMENT_HOLIDAY",
            closed=[],
        ),
        holiday_record(
            date(year, 11, 9),
            "Diwali Laxmi Pujan",
            open_sessions=[
                ("NSE", time(18, 0), time(19, 0)),
                ("NFO", time(18, 0), time(19, 0)),
            ],
        ),
        holiday_record(date(year, 12, 25), "Christmas"),
    ]


def gzip_json(records: Sequence[dict[str, Any]]) -> bytes:
    """The instrument file bytes: a gzip of one JSON array."""
    return gzip.compress(json.dumps(list(records), separators=(",", ":")).encode("utf-8"))


# --- orders -----------------------------------------------------------------------------------

EXCHANGE_OF_SEGMENT = {
    "NSE_EQ": "NSE",
    "NSE_FO": "NFO",
    "BSE_EQ": "BSE",
    "BSE_FO": "BFO",
    "MCX_FO": "MCX",
    "NCD_FO": "CDS",
    "BCD_FO": "BCD",
}
TERMINAL = {"complete", "rejected", "cancelled", "cancelled after market order"}
ORDER_TYPES = {"MARKET", "LIMIT", "SL", "SL-M"}


@dataclass(slots=True, kw_only=True)
class SimOrder:
    """One order in the simulated order book (mutable; changed under the simulator's lock)."""

    order_id: str
    tag: str | None
    instrument_key: str
    trading_symbol: str
    exchange: str
    product: str
    order_type: str
    validity: str
    transaction_type: str
    quantity: int
    price: Decimal
    trigger_price: Decimal
    disclosed_quantity: int
    is_amo: bool
    placed_by: str
    order_timestamp: str
    market_protection: float
    algo_name: str | None
    status: str = "put order req received"
    status_message: str | None = None
    filled_quantity: int = 0
    average_price: Decimal = Decimal(0)
    exchange_order_id: str = ""
    exchange_timestamp: str | None = None
    order_request_id: int = 1
    history: list[dict[str, Any]] = field(default_factory=list)
    # When the order shows in the order book (time.monotonic()): API.md 13, the book lags.
    visible_at: float = 0.0
    # The limit a MARKET / SL-M order with market protection became (API.md 5.2, 9.2).
    protected_price: Decimal | None = None
    at_exchange: bool = False  # matched once: later price moves fill it at once

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def record(self) -> dict[str, Any]:
        """The ``OrderBookData`` JSON of the order."""
        return {
            "exchange": self.exchange,
            "product": self.product,
            "price": float(self.price),
            "quantity": self.quantity,
            "status": self.status,
            "guid": None,
            "tag": self.tag,
            "instrument_token": self.instrument_key,
            "placed_by": self.placed_by,
            "trading_symbol": self.trading_symbol,
            "tradingsymbol": self.trading_symbol,
            "order_type": self.order_type,
            "validity": self.validity,
            "trigger_price": float(self.trigger_price),
            "disclosed_quantity": self.disclosed_quantity,
            "transaction_type": self.transaction_type,
            "average_price": float(self.average_price),
            "filled_quantity": self.filled_quantity,
            "pending_quantity": self.quantity - self.filled_quantity if not self.terminal else 0,
            "status_message": self.status_message,
            "status_message_raw": self.status_message,
            "exchange_order_id": self.exchange_order_id,
            "parent_order_id": None,
            "order_id": self.order_id,
            "variety": "SIMPLE",
            "order_timestamp": self.order_timestamp,
            "exchange_timestamp": self.exchange_timestamp,
            "is_amo": self.is_amo,
            "order_request_id": str(self.order_request_id),
            "order_ref_id": "",
        }

    def set_status(self, status: str, message: str | None = None) -> None:
        self.status = status
        self.status_message = message
        snapshot = self.record()
        for key in ("guid", "pending_quantity", "status_message_raw", "order_ref_id"):
            snapshot.pop(key, None)
        self.history.append(snapshot)


@dataclass(frozen=True, slots=True, kw_only=True)
class SimTrade:
    trade_id: str
    order: SimOrder
    quantity: int
    price: Decimal
    at: str

    def record(self) -> dict[str, Any]:
        """The ``TradeData`` JSON of the trade."""
        return {
            "exchange": self.order.exchange,
            "product": self.order.product,
            "trading_symbol": self.order.trading_symbol,
            "tradingsymbol": self.order.trading_symbol,
            "instrument_token": self.order.instrument_key,
            "order_type": self.order.order_type,
            "transaction_type": self.order.transaction_type,
            "quantity": self.quantity,
            "exchange_order_id": self.order.exchange_order_id,
            "order_id": self.order.order_id,
            "exchange_timestamp": self.at,
            "average_price": float(self.price),
            "trade_id": self.trade_id,
            "order_ref_id": "",
            "order_timestamp": self.order.order_timestamp,
        }


@dataclass(frozen=True, slots=True)
class IssuedToken:
    user_id: str
    expires_at: datetime


# --- the simulated exchange ---------------------------------------------------------------


class _Exchange:
    """Runs the simulator's delayed work (matching, partial fills) on its own daemon thread.

    Each job runs under the simulator's lock at its due time (time.monotonic()); the thread
    starts with the first job and sleeps until the next one is due, so an idle simulator costs
    nothing.
    """

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._wake = threading.Condition()
        self._jobs: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.errors = 0

    def at(self, delay_s: float, job: Callable[[], None]) -> None:
        """Run ``job`` after ``delay_s`` seconds (under the simulator's lock)."""
        with self._wake:
            if self._closed:
                return
            heapq.heappush(self._jobs, (time_module.monotonic() + delay_s, next(self._seq), job))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="upstox-sim-exchange")
                self._thread.daemon = True
                self._thread.start()
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._jobs.clear()
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closed and (
                    not self._jobs or self._jobs[0][0] > time_module.monotonic()
                ):
                    timeout = self._jobs[0][0] - time_module.monotonic() if self._jobs else None
                    self._wake.wait(timeout)
                if self._closed:
                    return
                _, _, job = heapq.heappop(self._jobs)
            try:
                with self._lock:
                    job()
            except Exception:  # a broken job must not stop the exchange
                self.errors += 1


# --- the simulator state ------------------------------------------------------------------


class RestSimulator:
    """State and behaviour of the simulated Upstox REST API.

    Args:
        client_id: the app's API key the login accepts.
        client_secret: the app's secret the token exchange accepts.
        redirect_uris: registered redirect URIs; None accepts any http(s) URI.
        user_id: the simulated user (UCC).
        now: the simulator's clock (aware); defaults to the real time.
        scenario: how orders, tokens and limits behave (default :meth:`Scenario.realistic`);
            :attr:`scenario` may be changed while the simulator runs.
        require_market_protection: overrides the scenario's flag of the same name.
        registered_algo_names: when set, order writes with another ``X-Algo-Name`` are refused
            (UDAPI1156).
        available_margin: starting funds in rupees.
    """

    def __init__(
        self,
        *,
        client_id: str = "sim-client-id",
        client_secret: str = "sim-client-secret",  # noqa: S107 - the simulator's fake secret
        redirect_uris: Sequence[str] | None = None,
        user_id: str = "SIM123",
        now: Callable[[], datetime] | None = None,
        scenario: Scenario | None = None,
        require_market_protection: bool | None = None,
        registered_algo_names: Sequence[str] | None = None,
        available_margin: Decimal = Decimal("100000"),
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris = set(redirect_uris) if redirect_uris is not None else None
        self.user_id = user_id
        self.now: Callable[[], datetime] = now or (lambda: datetime.now(tz=UTC))
        self.scenario = scenario or Scenario.realistic()
        if require_market_protection is not None:
            self.scenario.require_market_protection = require_market_protection
        self.registered_algo_names = (
            set(registered_algo_names) if registered_algo_names is not None else None
        )
        self.available_margin = available_margin
        self.lock = threading.RLock()
        self.faults = FaultPlan()
        self.requests: list[RequestRecord] = []
        self.matcher = _Exchange(self.lock)
        self.on_revoke: list[Callable[[], object]] = []  # websocket halves close their streams
        self._gaps: dict[str, Decimal] = {}  # instrument -> price it gaps to after an order
        self._after_place: list[Callable[[], None]] = []  # one-shot scripts after an order
        self._rate_windows: dict[str, list[float]] = {}
        self.rate_limited = 0  # requests answered 429 by the rate limit (not scripted faults)
        self.exchange_status = "NORMAL_OPEN"  # the market status API's answer (API.md 7.4)
        self._signing_key = secrets.token_bytes(32)
        self._codes: dict[str, str] = {}  # auth code -> redirect_uri
        self._tokens: dict[str, IssuedToken] = {}
        self._order_seq = itertools.count(1)
        self._trade_seq = itertools.count(1)
        self.orders: dict[str, SimOrder] = {}
        self.trades: list[SimTrade] = []
        self.partial_fills: dict[str, tuple[int, str | None]] = {}  # tag -> (cap, cancel message)
        self.place_requests = 0
        today = self.now().astimezone(IST).date()
        # Market holidays of the current year (GET /v2/market/holidays); tests replace them.
        self.holidays: list[dict[str, Any]] = sample_holidays(today.year)
        self.instruments, self.prices = sample_instruments(today)
        self._by_key = {r["instrument_key"]: r for r in self.instruments}
        self._instrument_file = gzip_json(self.instruments)

    # --- setup helpers for tests -----------------------------------------------------------

    def set_instruments(
        self, records: Sequence[dict[str, Any]], prices: dict[str, Decimal] | None = None
    ) -> None:
        """Replace the instrument master (and optionally the prices)."""
        with self.lock:
            self.instruments = list(records)
            self._by_key = {r["instrument_key"]: r for r in self.instruments}
            self._instrument_file = gzip_json(self.instruments)
            if prices is not None:
                self.prices = dict(prices)

    def instrument_file(self) -> bytes:
        """The gzipped JSON instrument master served at the assets path."""
        with self.lock:
            return self._instrument_file

    def instrument(self, key: str) -> dict[str, Any] | None:
        return self._by_key.get(key)

    def set_price(self, instrument_key: str, rupees: Decimal | str) -> None:
        """Move an instrument's last price and fill the working orders it now reaches (those
        already at the exchange; a newer one is matched when its acknowledgement is done)."""
        with self.lock:
            self.prices[instrument_key] = Decimal(str(rupees))
            for order in list(self.orders.values()):
                if (
                    order.instrument_key == instrument_key
                    and order.at_exchange
                    and not order.terminal
                ):
                    self._match(order)

    def script_gap(self, instrument_key: str, rupees: Decimal | str) -> None:
        """The next order on ``instrument_key`` sees the market gap to ``rupees`` right after
        Upstox accepted it (its protection band is already fixed): a MARKET order whose band
        the gap jumps rests unfilled (API.md 5.2, 9.2, 13)."""
        with self.lock:
            self._gaps[instrument_key] = Decimal(str(rupees))

    def after_next_place(self, script: Callable[[], None]) -> None:
        """Run ``script`` right after Upstox accepted the next order (e.g. revoke the token
        while the order's answer is on its way)."""
        with self.lock:
            self._after_place.append(script)

    def revoke_tokens(self) -> None:
        """Invalidate every token (logout, new login elsewhere, static-IP change): every call
        answers 401 UDAPI100050 and the websockets close (API.md 1.2, 1.3, 9.2, 13)."""
        with self.lock:
            self._tokens.clear()
        for hook in list(self.on_revoke):
            hook()

    def over_rate_limit(self, method: str, path: str) -> bool:
        """Count a request against its API's window; True when it is over the limit (8.3)."""
        parts = [p for p in path.split("/") if p]
        api = f"{method} /" + "/".join(parts[:3])
        now = time_module.monotonic()
        with self.lock:
            window = self._rate_windows.setdefault(api, [])
            while window and window[0] <= now - 60.0:
                window.pop(0)
            last_second = sum(1 for at in window if at > now - 1.0)
            if (
                last_second >= self.scenario.rate_limit_per_second
                or len(window) >= self.scenario.rate_limit_per_minute
            ):
                self.rate_limited += 1
                return True
            window.append(now)
        return False

    def visible(self, order: SimOrder) -> bool:
        """Whether the order shows in the order book yet (API.md 13)."""
        return order.visible_at <= time_module.monotonic()

    def close(self) -> None:
        """Stop the exchange thread."""
        self.matcher.close()

    def fail_next(
        self,
        kind: FaultKind,
        count: int = 1,
        *,
        path: str = "",
        delay_s: float = 2.0,
        process: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        """Script the next ``count`` requests under ``path`` to misbehave (see :class:`Fault`)."""
        self.faults.add(
            Fault(
                kind=kind,
                path_prefix=path,
                remaining=count,
                delay_s=delay_s,
                process=process,
                retry_after_s=retry_after_s,
            )
        )

    def script_partial_fill(
        self, tag: str, quantity: int, *, then_cancel: str | None = None
    ) -> None:
        """The orders tagged ``tag`` fill at most ``quantity`` when their price comes; the rest
        keeps working (``open``, as API.md 5.7 shows a partial fill), or is cancelled at once
        with ``then_cancel`` as the message (an IOC remainder, or the exchange cancelling it)."""
        with self.lock:
            self.partial_fills[tag] = (quantity, then_cancel)

    def fill_part(self, order_id: str, quantity: int, price: Decimal | str | None = None) -> None:
        """Fill ``quantity`` more of a working order (at ``price``, or its last price) now."""
        with self.lock:
            order = self._get_order(order_id)
            fill_price = (
                Decimal(str(price)) if price is not None else self.prices[order.instrument_key]
            )
            self._fill(order, fill_price, quantity)

    def issue_token(self, *, expires_at: datetime | None = None) -> str:
        """Make a valid access token without the login flow."""
        issued_at = self.now()
        expiry = expires_at or _next_0330_ist(issued_at)
        claims = {
            "sub": self.user_id,
            "iss": "udapi-gateway-service",
            "iat": int(issued_at.timestamp()),
            "exp": int(expiry.timestamp()),
            "isMultiClient": False,
            "isPlusPlan": False,
            # not among the observed claims: keeps two tokens issued in one second distinct,
            # as two logins' tokens are
            "jti": secrets.token_hex(8),
        }
        token = _jwt(claims, self._signing_key)
        with self.lock:
            self._tokens[token] = IssuedToken(self.user_id, expiry)
        return token

    def revoke_token(self, token: str) -> None:
        """Invalidate one token (logout)."""
        with self.lock:
            self._tokens.pop(token, None)

    def token_is_valid(self, token: str) -> bool:
        """True for a token this simulator issued that is neither revoked nor expired."""
        with self.lock:
            issued = self._tokens.get(token)
        return issued is not None and self.now() < issued.expires_at

    def authenticate(self, request: Request) -> str:
        """The bearer token of a request, or raise the 401 Upstox answers (UDAPI100050)."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not self.token_is_valid(token.strip()):
            raise invalid_token()
        return token.strip()

    def record_request(self, record: RequestRecord) -> None:
        with self.lock:
            self.requests.append(record)

    def requests_to(self, path: str, method: str | None = None) -> list[RequestRecord]:
        """The recorded requests to exactly ``path`` (and ``method``, if given)."""
        with self.lock:
            return [
                r
                for r in self.requests
                if r.path == path and (method is None or r.method == method)
            ]

    def orders_with_tag(self, tag: str) -> list[SimOrder]:
        with self.lock:
            return [o for o in self.orders.values() if o.tag == tag]

    # --- OAuth -----------------------------------------------------------------------------

    def authorize(self, client_id: str | None, redirect_uri: str | None) -> str:
        """Approve a login at once and return the single-use code."""
        if not redirect_uri:
            raise SimError(400, "UDAPI1018", "Redirect URI is required")
        if client_id != self.client_id or not self._redirect_ok(redirect_uri):
            raise SimError(400, "UDAPI100068", "Check your 'client_id' and 'redirect_uri'")
        code = secrets.token_urlsafe(6)
        with self.lock:
            self._codes[code] = redirect_uri
        return code

    def exchange(self, form: dict[str, str]) -> dict[str, Any]:
        """The token exchange: check the form, spend the code, return the profile + token."""
        required = (
            ("client_id", "UDAPI1017", "API key is required"),
            ("redirect_uri", "UDAPI1018", "Redirect URI is required"),
            ("code", "UDAPI1022", "Authorization code is required"),
            ("grant_type", "UDAPI1023", "Grant type is required"),
            ("client_secret", "UDAPI1024", "App secret is required"),
        )
        for name, code, message in required:
            if not form.get(name):
                raise SimError(400, code, message, property_path=name)
        with self.lock:
            redirect_uri = self._codes.pop(form["code"], None)  # single use, success or not
        if redirect_uri is None or redirect_uri != form["redirect_uri"]:
            raise SimError(401, "UDAPI100057", "Invalid Auth code")
        if form["client_id"] != self.client_id or form["client_secret"] != self.client_secret:
            raise SimError(401, "UDAPI100016", "Invalid Credentials")
        if form["grant_type"] != "authorization_code":
            raise SimError(400, "UDAPI1023", "Invalid grant type", property_path="grant_type")
        token = self.issue_token()
        return {
            "email": "s***@example.com",
            "exchanges": ["NSE", "NFO", "BSE", "CDS", "BFO", "BCD"],
            "products": ["D", "CO", "I"],
            "broker": "UPSTOX",
            "user_id": self.user_id,
            "user_name": "Sim Trader",
            "order_types": ["MARKET", "LIMIT", "SL", "SL-M"],
            "user_type": "individual",
            "poa": False,
            "ddpi": False,
            "is_active": True,
            "access_token": token,
        }

    def _redirect_ok(self, uri: str) -> bool:
        if self.redirect_uris is not None:
            return uri in self.redirect_uris
        return uri.startswith(("http://", "https://"))

    # --- market data -----------------------------------------------------------------------

    def quote_key(self, record: dict[str, Any]) -> str:
        return f"{record['segment']}:{record['trading_symbol']}"

    def full_quote(self, key: str) -> dict[str, Any]:
        record = self._by_key[key]
        ltp = self.prices.get(key, Decimal(100))
        close = (ltp * Decimal("0.99")).quantize(Decimal("0.05"))
        tick = Decimal("0.05")
        depth_buy = [
            {"quantity": 100 * (i + 1), "price": float(ltp - tick * (i + 1)), "orders": i + 1}
            for i in range(5)
        ]
        depth_sell = [
            {"quantity": 100 * (i + 1), "price": float(ltp + tick * (i + 1)), "orders": i + 1}
            for i in range(5)
        ]
        return {
            "ohlc": {
                "open": float(close),
                "high": float(max(ltp, close) * Decimal("1.01")),
                "low": float(min(ltp, close) * Decimal("0.99")),
                "close": float(ltp),
            },
            "depth": {"buy": depth_buy, "sell": depth_sell},
            "timestamp": self.now().astimezone(IST).isoformat(),
            "instrument_token": key,
            "symbol": record["trading_symbol"],
            "last_price": float(ltp),
            "volume": 123450,
            "average_price": float(ltp),
            "oi": 456000.0 if record["segment"] == "NSE_FO" else 0.0,
            "net_change": float(ltp - close),
            "total_buy_quantity": 10000.0,
            "total_sell_quantity": 12000.0,
            "lower_circuit_limit": float((close * Decimal("0.8")).quantize(tick)),
            "upper_circuit_limit": float((close * Decimal("1.2")).quantize(tick)),
            "last_trade_time": str(int(self.now().timestamp() * 1000)),
            "oi_day_high": 0.0,
            "oi_day_low": 0.0,
        }

    def ltp_quote(self, key: str) -> dict[str, Any]:
        ltp = self.prices.get(key, Decimal(100))
        return {
            "last_price": float(ltp),
            "instrument_token": key,
            "ltq": 10,
            "volume": 123450,
            "cp": float((ltp * Decimal("0.99")).quantize(Decimal("0.05"))),
        }

    def quote_map(self, keys_text: str | None, builder: Callable[[str], Any]) -> dict[str, Any]:
        if not keys_text:
            raise SimError(400, "UDAPI1009", "Instrument key is required")
        keys = [k for k in keys_text.split(",") if k]
        if len(keys) > 500:
            raise SimError(400, "UDAPI100042", "Maximum 500 instrument keys allowed")
        out: dict[str, Any] = {}
        for key in keys:
            if "|" not in key:
                raise SimError(400, "UDAPI1011", "Invalid instrument key format")
            record = self._by_key.get(key)
            if record is not None:
                out[self.quote_key(record)] = builder(key)
        return out

    def option_chain(self, underlying_key: str, expiry_date: str) -> list[dict[str, Any]]:
        try:
            expiry = date.fromisoformat(expiry_date)
        except ValueError as exc:
            raise SimError(400, "UDAPI1088", "Invalid date", property_path="expiry_date") from exc
        spot = self.prices.get(underlying_key, Decimal(0))
        strikes: dict[Decimal, dict[str, dict[str, Any]]] = {}
        for record in self.instruments:
            if (
                record.get("underlying_key") == underlying_key
                and record.get("instrument_type") in ("CE", "PE")
                and record.get("expiry") == expiry_ms(expiry)
            ):
                strike = Decimal(str(record["strike_price"]))
                strikes.setdefault(strike, {})[record["instrument_type"]] = record
        out = []
        for strike in sorted(strikes):
            legs = strikes[strike]
            out.append(
                {
                    "expiry": expiry.isoformat(),
                    "pcr": 1.0,
                    "strike_price": float(strike),
                    "underlying_key": underlying_key,
                    "underlying_spot_price": float(spot),
                    "call_options": self._chain_leg(legs.get("CE")),
                    "put_options": self._chain_leg(legs.get("PE")),
                }
            )
        return out

    def _chain_leg(self, record: dict[str, Any] | None) -> dict[str, Any] | None:
        if record is None:
            return None
        key = record["instrument_key"]
        ltp = self.prices.get(key, Decimal(1))
        call = record["instrument_type"] == "CE"
        return {
            "instrument_key": key,
            "market_data": {
                "ltp": float(ltp),
                "volume": 1000,
                "oi": 25000.0,
                "close_price": float(ltp),
                "bid_price": float(ltp - Decimal("0.05")),
                "bid_qty": 500,
                "ask_price": float(ltp + Decimal("0.05")),
                "ask_qty": 450,
                "prev_oi": 24000.0,
            },
            "option_greeks": {
                "vega": 8.1,
                "theta": -12.3,
                "gamma": 0.0012,
                "delta": 0.5 if call else -0.5,
                "iv": 15.2,
                "pop": 45.0,
            },
        }

    def candles(
        self, key: str, unit: str, interval: str, to_date: str, from_date: str | None
    ) -> list[list[Any]]:
        """V3 historical candles, newest first as the docs show."""
        step = self._candle_step(unit, interval)
        try:
            to_day = date.fromisoformat(to_date)
            from_day = date.fromisoformat(from_date) if from_date else None
        except ValueError as exc:
            raise SimError(400, "UDAPI1015", "Invalid date") from exc
        span_days = {"minutes": 31 if step <= 15 else 92, "hours": 92, "days": 3660}.get(unit)
        if from_day is None:
            from_day = to_day - timedelta(days=30 if unit in ("days", "weeks") else 0)
        if to_day < from_day:
            raise SimError(400, "UDAPI1015", "to_date cannot be before from_date")
        if span_days is not None and (to_day - from_day).days > span_days:
            raise SimError(400, "UDAPI1148", "Invalid date range")
        if key not in self._by_key:
            raise SimError(400, "UDAPI1021", "Invalid instrument key")
        return list(reversed(self._bars(key, unit, step, from_day, to_day, None)))

    def intraday_candles(self, key: str, unit: str, interval: str) -> list[list[Any]]:
        if unit == "weeks":
            raise SimError(400, "UDAPI1146", "Invalid unit")
        step = self._candle_step(unit, interval)
        if key not in self._by_key:
            raise SimError(400, "UDAPI1021", "Invalid instrument key")
        now = self.now().astimezone(IST)
        return list(reversed(self._bars(key, unit, step, now.date(), now.date(), now)))

    @staticmethod
    def _candle_step(unit: str, interval: str) -> int:
        limits = {"minutes": 300, "hours": 5, "days": 1, "weeks": 1}
        if unit not in limits:
            raise SimError(400, "UDAPI1146", "Invalid unit")
        if not interval.isdigit() or not 1 <= int(interval) <= limits[unit]:
            raise SimError(400, "UDAPI1147", "Invalid interval")
        return int(interval)

    def _bars(
        self,
        key: str,
        unit: str,
        step: int,
        from_day: date,
        to_day: date,
        until: datetime | None,
    ) -> list[list[Any]]:
        base = self.prices.get(key, Decimal(100))
        oi = 100000 if key.startswith("NSE_FO") else 0
        days = [
            from_day + timedelta(days=n)
            for n in range((to_day - from_day).days + 1)
            if (from_day + timedelta(days=n)).weekday() < 5
        ]
        bars: list[list[Any]] = []
        if unit in ("days", "weeks"):
            for day in days:
                if unit == "weeks" and day.weekday() != 0:
                    continue
                minutes = _minute_path(key, day, base)
                start = datetime.combine(day, time(0, 0), tzinfo=IST)
                bars.append(_bar(start, minutes, oi))
            return bars
        minutes_per_bar = step * (60 if unit == "hours" else 1)
        for day in days:
            path = _minute_path(key, day, base)
            open_at = datetime.combine(day, SESSION_OPEN, tzinfo=IST)
            for first in range(0, SESSION_MINUTES, minutes_per_bar):
                start = open_at + timedelta(minutes=first)
                if until is not None and start + timedelta(minutes=minutes_per_bar) > until:
                    break
                bars.append(_bar(start, path[first : first + minutes_per_bar], oi))
        return bars

    # --- orders ----------------------------------------------------------------------------

    def place(self, body: Any, algo_name: str | None) -> list[str]:
        """Validate and book a v3 order (sliced at the freeze quantity when asked)."""
        with self.lock:
            self.place_requests += 1
        if not isinstance(body, dict):
            raise SimError(400, "UDAPI100038", "Invalid input")
        self._check_order_write(algo_name)
        for name in (
            "instrument_token",
            "quantity",
            "product",
            "validity",
            "price",
            "order_type",
            "transaction_type",
            "disclosed_quantity",
            "trigger_price",
            "is_amo",
        ):
            if name not in body:
                raise SimError(400, "UDAPI100038", f"{name} is required", property_path=name)
        record = self._by_key.get(str(body["instrument_token"]))
        if record is None:
            raise SimError(400, "UDAPI100011", "Invalid instrument key")
        quantity = body["quantity"]
        if not isinstance(quantity, int) or quantity <= 0:
            raise SimError(400, "UDAPI1052", "Quantity cannot be zero", property_path="quantity")
        order_type = str(body["order_type"])
        if order_type not in ORDER_TYPES:
            raise SimError(400, "UDAPI1056", "Invalid order type", property_path="order_type")
        if body["validity"] not in ("DAY", "IOC"):
            raise SimError(400, "UDAPI1055", "Invalid validity", property_path="validity")
        if body["transaction_type"] not in ("BUY", "SELL"):
            raise SimError(400, "UDAPI100038", "Invalid transaction type")
        if body["product"] not in ("I", "D", "MTF"):
            raise SimError(400, "UDAPI100038", "Invalid product", property_path="product")
        price = Decimal(str(body["price"]))
        trigger = Decimal(str(body["trigger_price"]))
        if order_type in ("LIMIT", "SL") and price <= 0:
            raise SimError(400, "UDAPI1029", "Price is required", property_path="price")
        if order_type in ("MARKET", "SL-M") and price != 0:
            raise SimError(400, "UDAPI1030", "Price not allowed", property_path="price")
        if order_type in ("SL", "SL-M") and trigger <= 0:
            raise SimError(400, "UDAPI1036", "Trigger price is required")
        protection = body.get("market_protection", 0)
        if not isinstance(protection, int | float) or not -1 <= protection <= 25:
            raise SimError(400, "UDAPI1160", "Invalid market protection")
        if (
            order_type in ("MARKET", "SL-M")
            and self.scenario.require_market_protection
            and not protection
        ):
            raise SimError(
                400,
                "UDAPI1158",
                "Market orders without market protection are not allowed via API",
            )
        tag = body.get("tag")
        if tag is not None and len(str(tag)) > 40:
            raise SimError(400, "UDAPI100038", "Tag too long", property_path="tag")
        lot = int(record.get("lot_size") or 1)
        if record["segment"].endswith("_FO") and quantity % lot:
            raise SimError(400, "UDAPI100038", "Quantity must be a multiple of the lot size")
        freeze = int(record.get("freeze_quantity") or quantity)
        sizes = [quantity]
        if body.get("slice") and freeze and quantity > freeze:
            rest = [quantity % freeze] if quantity % freeze else []
            sizes = [freeze] * (quantity // freeze) + rest
            if len(sizes) > 25:
                raise SimError(400, "UDAPI1118", "Too many orders after slicing")
        now_text = self._ist_text()
        ids: list[str] = []
        with self.lock:
            for size in sizes:
                order = SimOrder(
                    order_id=self._next_order_id(),
                    tag=str(tag) if tag is not None else None,
                    instrument_key=record["instrument_key"],
                    trading_symbol=record["trading_symbol"],
                    exchange=EXCHANGE_OF_SEGMENT.get(record["segment"], "NSE"),
                    product=str(body["product"]),
                    order_type=order_type,
                    validity=str(body["validity"]),
                    transaction_type=str(body["transaction_type"]),
                    quantity=size,
                    price=price,
                    trigger_price=trigger,
                    disclosed_quantity=int(body["disclosed_quantity"]),
                    is_amo=bool(body["is_amo"]),
                    placed_by=self.user_id,
                    order_timestamp=now_text,
                    market_protection=float(protection),
                    algo_name=algo_name,
                )
                order.visible_at = time_module.monotonic() + self.scenario.book_delay_s
                self.orders[order.order_id] = order
                # Acknowledged now, matched later (API.md 4.2, 5.7, 13).
                order.set_status("put order req received")
                order.set_status("validation pending")
                order.set_status("open pending")
                order.exchange_order_id = f"13{order.order_id[-14:]}"
                order.exchange_timestamp = now_text
                order.protected_price = self._protected_price(order)
                ids.append(order.order_id)
            gap = self._gaps.pop(record["instrument_key"], None)
            if gap is not None:
                self.prices[record["instrument_key"]] = gap
            for order_id in ids:
                self._at_exchange(self.orders[order_id])
            scripts, self._after_place = self._after_place, []
        for script in scripts:
            script()
        return ids

    def _protected_price(self, order: SimOrder) -> Decimal | None:
        """The limit a MARKET / SL-M order with market protection becomes (API.md 5.2, 9.2):
        the last price plus (buy) or minus (sell) the band, on the tick. -1 is Upstox's own
        band (assumed: Scenario.auto_protection_pct)."""
        if order.order_type not in ("MARKET", "SL-M") or not order.market_protection:
            return None
        band = (
            self.scenario.auto_protection_pct
            if order.market_protection < 0
            else Decimal(str(order.market_protection))
        )
        base = self.prices.get(order.instrument_key)
        if order.order_type == "SL-M":
            base = order.trigger_price
        if base is None:
            return None
        factor = 1 + band / 100 if order.transaction_type == "BUY" else 1 - band / 100
        tick = Decimal(str(_tick_paise(base))) / 100
        steps = (base * factor / tick).to_integral_value(
            rounding="ROUND_FLOOR" if order.transaction_type == "BUY" else "ROUND_CEILING"
        )
        return steps * tick

    def _at_exchange(self, order: SimOrder) -> None:
        # The first match happens after the acknowledgement (Scenario.match_delay_s).
        def arrive() -> None:
            order.at_exchange = True
            if not order.terminal:
                self._match(order)

        if self.scenario.match_delay_s <= 0:
            arrive()
        else:
            self.matcher.at(self.scenario.match_delay_s, arrive)

    def modify(self, body: Any, algo_name: str | None) -> str:
        if not isinstance(body, dict) or not body.get("order_id"):
            raise SimError(400, "UDAPI1003", "Order id is required", property_path="order_id")
        self._check_order_write(algo_name)
        for name, code in (
            ("order_type", "UDAPI1004"),
            ("validity", "UDAPI1007"),
            ("price", "UDAPI1029"),
            ("trigger_price", "UDAPI1036"),
        ):
            if name not in body:
                raise SimError(400, code, f"{name} is required", property_path=name)
        if body["order_type"] not in ORDER_TYPES:
            raise SimError(400, "UDAPI1056", "Invalid order type")
        with self.lock:
            order = self._get_order(str(body["order_id"]))
            if order.terminal:
                raise SimError(400, "UDAPI100041", "Cannot modify a completed/cancelled order")
            quantity = body.get("quantity")
            if quantity is not None and (
                not isinstance(quantity, int) or quantity <= order.filled_quantity
            ):
                raise SimError(
                    400,
                    "UDAPI100038",
                    "Quantity must exceed the filled quantity",
                    property_path="quantity",
                )
            order.order_type = str(body["order_type"])
            order.validity = str(body["validity"])
            order.price = Decimal(str(body["price"]))
            order.trigger_price = Decimal(str(body["trigger_price"]))
            if quantity is not None:
                order.quantity = quantity
            if "market_protection" in body:
                order.market_protection = float(body["market_protection"])
            # A MARKET order modified keeps (or takes) its protection, from the price now
            # (assumed; a comparable broker documents it so); a LIMIT has none.
            order.protected_price = self._protected_price(order)
            order.order_request_id += 1
            order.set_status("modified")
            if order.at_exchange:
                self._match(order)
            return order.order_id

    def cancel(self, order_id: str | None, algo_name: str | None) -> str:
        if not order_id:
            raise SimError(400, "UDAPI1003", "Order id is required", property_path="order_id")
        self._check_order_write(algo_name)
        with self.lock:
            order = self._get_order(order_id)
            if order.terminal:
                raise SimError(400, "UDAPI100040", "Cannot cancel a completed/cancelled order")
            order.set_status("cancel pending")

            # The exchange confirms a moment later; a fill can land first (API.md 4.2, 13).
            def confirm() -> None:
                if not order.terminal:
                    order.set_status("cancelled", "Cancelled by user")

            if self.scenario.match_delay_s <= 0:
                confirm()
            else:
                self.matcher.at(self.scenario.match_delay_s, confirm)
            return order.order_id

    def order_details(self, order_id: str | None) -> dict[str, Any]:
        if not order_id:
            raise SimError(400, "UDAPI1003", "Order id is required", property_path="order_id")
        with self.lock:
            order = self._get_order(order_id)
            if not self.visible(order):
                raise SimError(400, "UDAPI100010", "Order not found", property_path="order_id")
            return order.record()

    def order_history(self, order_id: str | None, tag: str | None) -> list[dict[str, Any]]:
        if not order_id and not tag:
            raise SimError(400, "UDAPI1023", "Order id or tag is required")
        with self.lock:
            if order_id:
                orders = [self._get_order(order_id)]
                if tag and orders[0].tag != tag:
                    return []
            else:
                orders = [o for o in self.orders.values() if o.tag == tag]
            return [entry for o in orders if self.visible(o) for entry in o.history]

    def order_book(self) -> list[dict[str, Any]]:
        """Today's orders that have reached the book (API.md 5.7, 13)."""
        with self.lock:
            return [o.record() for o in self.orders.values() if self.visible(o)]

    def positions(self) -> list[dict[str, Any]]:
        with self.lock:
            groups: dict[tuple[str, str], list[SimTrade]] = {}
            for trade in self.trades:
                groups.setdefault((trade.order.instrument_key, trade.order.product), []).append(
                    trade
                )
            return [self._position(key, product, group) for (key, product), group in groups.items()]

    def profile(self) -> dict[str, Any]:
        """``GET /v2/user/profile`` (API.md 6.7)."""
        return {
            "email": "s***@example.com",
            "exchanges": ["NSE", "NFO", "BSE", "CDS", "BFO", "BCD"],
            "products": ["D", "CO", "I"],
            "broker": "UPSTOX",
            "user_id": self.user_id,
            "user_name": "Sim Trader",
            "order_types": ["MARKET", "LIMIT", "SL", "SL-M"],
            "user_type": "individual",
            "poa": False,
            "ddpi": False,
            "is_active": True,
        }

    def market_status(self, exchange: str) -> dict[str, Any]:
        """``GET /v2/market/status/{exchange}`` (API.md 7.4)."""
        if exchange not in ("NSE", "NFO", "CDS", "BSE", "BFO", "BCD", "MCX", "NSCOM"):
            raise SimError(400, "UDAPI1089", "Invalid exchange", property_path="exchange")
        return {
            "exchange": exchange,
            "status": self.exchange_status,
            "last_updated": int(self.now().timestamp() * 1000),
        }

    def funds(self) -> dict[str, Any]:
        with self.lock:
            used = sum(
                (
                    abs(Decimal(p["quantity"])) * Decimal(str(p["last_price"])) * Decimal("0.2")
                    for p in self.positions()
                ),
                Decimal(0),
            )
        used = used.quantize(Decimal("0.01"))
        segment = {
            "used_margin": float(used),
            "payin_amount": 0.0,
            "span_margin": 0.0,
            "adhoc_margin": 0.0,
            "notional_cash": 0.0,
            "available_margin": float(self.available_margin - used),
            "exposure_margin": 0.0,
        }
        zero = dict.fromkeys(segment, 0.0)
        return {"equity": segment, "commodity": zero}

    def margin(self, body: Any) -> dict[str, Any]:
        """``POST /v2/charges/margin`` (API.md 6.5). The simulated margins are assumed: a future
        blocks 15 % of its value as SPAN and 5 % as exposure margin, a bought option its
        premium, an intraday stock 20 % of its value. The error codes of the documented range
        UDAPI1095-UDAPI1104 are not mapped to their causes in the docs: UDAPI1095 stands for all.
        """
        legs = body.get("instruments") if isinstance(body, dict) else None
        if not isinstance(legs, list) or not legs:
            raise SimError(400, "UDAPI1095", "instruments is required")
        if len(legs) > 20:
            raise SimError(400, "UDAPI1095", "at most 20 instruments")
        keys = [leg.get("instrument_key") for leg in legs if isinstance(leg, dict)]
        if len(set(keys)) != len(legs):
            raise SimError(400, "UDAPI1095", "duplicate or malformed instruments")
        margins = []
        for leg in legs:
            record = self.instrument(str(leg["instrument_key"]))
            if record is None:
                raise SimError(400, "UDAPI1095", f"unknown instrument {leg['instrument_key']}")
            quantity = int(leg.get("quantity") or 0)
            lot = int(record.get("lot_size") or 1)
            if quantity <= 0 or quantity % lot:
                raise SimError(400, "UDAPI1095", "quantity must be a positive multiple of the lot")
            if leg.get("transaction_type") not in ("BUY", "SELL") or leg.get("product") not in (
                "I",
                "D",
                "CO",
                "MTF",
            ):
                raise SimError(400, "UDAPI1095", "transaction_type and product are required")
            price = Decimal(str(leg.get("price") or self.prices.get(record["instrument_key"], 0)))
            if price <= 0:
                raise SimError(400, "UDAPI1095", "price must be positive")
            value = price * quantity
            span = exposure = premium = equity = Decimal(0)
            kind = record.get("instrument_type")
            if kind == "FUT":
                span, exposure = value * Decimal("0.15"), value * Decimal("0.05")
            elif kind in ("CE", "PE") and leg["transaction_type"] == "BUY":
                premium = value
            elif kind in ("CE", "PE"):
                span, exposure = value * Decimal("3"), value * Decimal("1")
            else:
                equity = value * Decimal("0.2")
            total = span + exposure + premium + equity
            margins.append(
                {
                    "span_margin": float(span),
                    "exposure_margin": float(exposure),
                    "equity_margin": float(equity),
                    "net_buy_premium": float(premium),
                    "additional_margin": 0.0,
                    "total_margin": float(total),
                    "tender_margin": 0.0,
                }
            )
        required = sum(Decimal(str(m["total_margin"])) for m in margins)
        return {
            "margins": margins,
            "required_margin": float(required),
            "final_margin": float(required),
        }

    def brokerage(self, params: dict[str, str]) -> dict[str, Any]:
        # The per-field codes of UDAPI1059-1065 are not documented; the first one stands for all.
        token = params.get("instrument_token") or ""
        if "|" not in token:
            raise SimError(400, "UDAPI1059", "Invalid instrument token format")
        try:
            quantity = int(params.get("quantity") or "0")
            price = Decimal(params.get("price") or "0")
        except (ValueError, ArithmeticError) as exc:
            raise SimError(400, "UDAPI1059", "Invalid quantity or price") from exc
        side = params.get("transaction_type")
        if quantity <= 0 or price <= 0 or side not in ("BUY", "SELL") or not params.get("product"):
            raise SimError(400, "UDAPI1059", "quantity, price, product and side are required")
        turnover = price * quantity
        cents = Decimal("0.01")
        brokerage = min(Decimal(20), turnover * Decimal("0.001")).quantize(cents)
        stt = (turnover * Decimal("0.00025") if side == "SELL" else Decimal(0)).quantize(cents)
        stamp = (turnover * Decimal("0.00003") if side == "BUY" else Decimal(0)).quantize(cents)
        transaction = (turnover * Decimal("0.0000297")).quantize(cents)
        sebi = (turnover * Decimal("0.000001")).quantize(cents)
        ipft = (turnover * Decimal("0.000001")).quantize(cents)
        gst = ((brokerage + transaction + sebi) * Decimal("0.18")).quantize(cents)
        total = brokerage + stt + stamp + transaction + sebi + ipft + gst
        other = {"transaction": float(transaction), "clearing": 0.0, "ipft": float(ipft)}
        other["sebi_turnover"] = float(sebi)
        dp_plan = {"name": "", "min_expense": 0.0}
        return {
            "charges": {
                "total": float(total),
                "brokerage": float(brokerage),
                "taxes": {"gst": float(gst), "stt": float(stt), "stamp_duty": float(stamp)},
                "other_charges": other,
                "otherTaxes": other,
                "dp_plan": dp_plan,
                "dpPlan": dp_plan,
            }
        }

    # --- internals -------------------------------------------------------------------------

    def _check_order_write(self, algo_name: str | None) -> None:
        # Order writes only (API.md 9.2): reads are not IP-restricted.
        if self.scenario.order_api_unauthorized:
            raise invalid_token()  # API.md 13: reported while reads accept the token
        if not self.scenario.static_ip_registered:
            raise SimError(403, "UDAPI1154", "Static IP is not whitelisted for this user")
        if (
            algo_name is not None
            and self.registered_algo_names is not None
            and algo_name not in self.registered_algo_names
        ):
            raise SimError(400, "UDAPI1156", "Invalid algo name")

    def _get_order(self, order_id: str) -> SimOrder:
        order = self.orders.get(order_id)
        if order is None:
            raise SimError(400, "UDAPI100010", "Order not found", property_path="order_id")
        return order

    def _next_order_id(self) -> str:
        day = self.now().astimezone(IST).strftime("%y%m%d")
        return f"{day}{next(self._order_seq):09d}"

    def _ist_text(self) -> str:
        return self.now().astimezone(IST).strftime("%Y-%m-%d %H:%M:%S")

    def _match(self, order: SimOrder) -> None:
        ltp = self.prices.get(order.instrument_key)
        if ltp is None:
            order.set_status("rejected", "No price for the instrument")
            return
        buy = order.transaction_type == "BUY"
        if order.order_type in ("SL", "SL-M"):
            triggered = ltp >= order.trigger_price if buy else ltp <= order.trigger_price
            if not triggered:
                if order.status != "trigger pending":
                    order.set_status("trigger pending")
                return
        limit: Decimal | None = order.protected_price
        if order.order_type in ("LIMIT", "SL"):
            limit = order.price
        if limit is not None:
            marketable = ltp <= limit if buy else ltp >= limit
            if not marketable:  # a limit away from the market, or a MARKET order in a gap
                if order.status != "open":
                    order.set_status("open")
                return
        scripted = self.partial_fills.get(order.tag or "")
        if scripted is None:
            parts = max(1, self.scenario.fill_parts)
            if parts == 1:
                self._fill(order, ltp)
                return
            self._fill(order, ltp, math.ceil(order.quantity / parts))
            if not order.terminal:
                self.matcher.at(self.scenario.part_interval_s, lambda: self._rematch(order))
            return
        cap, cancel_message = scripted
        room = cap - order.filled_quantity
        if room > 0:
            self._fill(order, ltp, min(room, order.quantity - order.filled_quantity))
        if not order.terminal and cancel_message is not None:
            order.set_status("cancelled", cancel_message)
        elif not order.terminal and order.status != "open":
            order.set_status("open")

    def _rematch(self, order: SimOrder) -> None:
        if not order.terminal:
            self._match(order)

    def _fill(self, order: SimOrder, price: Decimal, quantity: int | None = None) -> None:
        rest = order.quantity - order.filled_quantity
        quantity = rest if quantity is None else min(quantity, rest)
        if quantity <= 0:
            return
        total = order.filled_quantity + quantity
        order.average_price = (
            (order.average_price * order.filled_quantity + price * quantity) / total
        ).quantize(Decimal("0.01"))
        order.filled_quantity = total
        order.set_status("complete" if total == order.quantity else "open")
        self.trades.append(
            SimTrade(
                trade_id=f"{next(self._trade_seq):08d}",
                order=order,
                quantity=quantity,
                price=price,
                at=self._ist_text(),
            )
        )

    def _position(self, key: str, product: str, trades: list[SimTrade]) -> dict[str, Any]:
        record = self._by_key.get(key, {})
        buys = [t for t in trades if t.order.transaction_type == "BUY"]
        sells = [t for t in trades if t.order.transaction_type == "SELL"]
        buy_qty = sum(t.quantity for t in buys)
        sell_qty = sum(t.quantity for t in sells)
        buy_value = sum((t.price * t.quantity for t in buys), Decimal(0))
        sell_value = sum((t.price * t.quantity for t in sells), Decimal(0))
        buy_price = buy_value / buy_qty if buy_qty else Decimal(0)
        sell_price = sell_value / sell_qty if sell_qty else Decimal(0)
        net = buy_qty - sell_qty
        ltp = self.prices.get(key, Decimal(0))
        closed = min(buy_qty, sell_qty)
        realised = (sell_price - buy_price) * closed if closed else Decimal(0)
        if net > 0:
            average, unrealised = buy_price, (ltp - buy_price) * net
        elif net < 0:
            average, unrealised = sell_price, (sell_price - ltp) * -net
        else:
            average, unrealised = Decimal(0), Decimal(0)
        cents = Decimal("0.01")
        return {
            "exchange": EXCHANGE_OF_SEGMENT.get(record.get("segment", ""), "NSE"),
            "multiplier": 1.0,
            "value": float((sell_value - buy_value).quantize(cents)),
            "pnl": float((realised + unrealised).quantize(cents)),
            "product": product,
            "instrument_token": key,
            "average_price": float(average.quantize(cents)) if net else None,
            "buy_value": float(buy_value.quantize(cents)),
            "overnight_quantity": 0,
            "day_buy_value": float(buy_value.quantize(cents)),
            "day_buy_price": float(buy_price.quantize(cents)),
            "overnight_buy_amount": 0.0,
            "overnight_buy_quantity": 0,
            "day_buy_quantity": buy_qty,
            "day_sell_value": float(sell_value.quantize(cents)),
            "day_sell_price": float(sell_price.quantize(cents)),
            "overnight_sell_amount": 0.0,
            "overnight_sell_quantity": 0,
            "day_sell_quantity": sell_qty,
            "quantity": net,
            "last_price": float(ltp),
            "unrealised": float(unrealised.quantize(cents)),
            "realised": float(realised.quantize(cents)),
            "sell_value": float(sell_value.quantize(cents)),
            "trading_symbol": record.get("trading_symbol", ""),
            "tradingsymbol": record.get("trading_symbol", ""),
            "close_price": float(ltp),
            "buy_price": float(buy_price.quantize(cents)),
            "sell_price": float(sell_price.quantize(cents)),
        }


def _next_0330_ist(issued_at: datetime) -> datetime:
    local = issued_at.astimezone(IST)
    cutoff = datetime.combine(local.date(), time(3, 30), tzinfo=IST)
    return cutoff if local < cutoff else cutoff + timedelta(days=1)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _jwt(claims: dict[str, Any], key: bytes) -> str:
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


def _minute_path(key: str, day: date, base: Decimal) -> list[Decimal]:
    """375 deterministic one-minute closes for ``key`` on ``day`` around ``base``."""
    rng = random.Random(f"{key}/{day.isoformat()}")
    price = float(base) * (1 + rng.uniform(-0.02, 0.02))
    closes = []
    for _ in range(SESSION_MINUTES):
        price *= 1 + rng.gauss(0, 0.0008)
        closes.append(Decimal(f"{price:.2f}"))
    return closes


def _bar(start: datetime, closes: Sequence[Decimal], oi: int) -> list[Any]:
    first = closes[0]
    volume = 1000 * len(closes)
    return [
        start.isoformat(),
        float(first),
        float(max(closes)),
        float(min(closes)),
        float(closes[-1]),
        volume,
        oi,
    ]


# --- routes -----------------------------------------------------------------------------------


def create_rest_router(sim: RestSimulator) -> APIRouter:
    """The REST routes of the simulator, bound to ``sim``."""
    router = APIRouter()

    @router.get("/v2/login/authorization/dialog", response_model=None)
    async def authorization_dialog(
        client_id: str | None = None,
        redirect_uri: str | None = None,
        state: str | None = None,
        response_type: str | None = None,
    ) -> Response:
        if response_type != "code":
            raise SimError(400, "UDAPI100038", "response_type must be code")
        code = sim.authorize(client_id, redirect_uri)
        query = {"code": code} | ({"state": state} if state is not None else {})
        separator = "&" if "?" in str(redirect_uri) else "?"
        return RedirectResponse(f"{redirect_uri}{separator}{urlencode(query)}", status_code=302)

    @router.post("/v2/login/authorization/token")
    async def token_exchange(request: Request) -> JSONResponse:
        # parsed by hand: Starlette's form parser needs python-multipart, not a dependency
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            raise SimError(400, "UDAPI100038", "Form body expected")
        form = parse_qs((await request.body()).decode("utf-8"), keep_blank_values=True)
        return JSONResponse(sim.exchange({k: v[0] for k, v in form.items()}))

    @router.delete("/v2/logout")
    async def logout(request: Request) -> JSONResponse:
        sim.revoke_token(sim.authenticate(request))
        return ok(True)

    @router.get("/market-quote/instruments/exchange/{name}")
    async def instrument_file(name: str) -> Response:
        if not name.endswith(".json.gz"):
            raise StarletteHTTPException(404)
        return Response(sim.instrument_file(), media_type="application/gzip")

    @router.get("/v2/market-quote/quotes")
    async def full_quotes(request: Request, instrument_key: str | None = None) -> JSONResponse:
        sim.authenticate(request)
        return ok(sim.quote_map(instrument_key, sim.full_quote))

    @router.get("/v3/market-quote/ltp")
    async def ltp(request: Request, instrument_key: str | None = None) -> JSONResponse:
        sim.authenticate(request)
        return ok(sim.quote_map(instrument_key, sim.ltp_quote))

    @router.get("/v2/option/chain")
    async def option_chain(
        request: Request, instrument_key: str | None = None, expiry_date: str | None = None
    ) -> JSONResponse:
        sim.authenticate(request)
        if not instrument_key:
            raise SimError(400, "UDAPI1026", "Instrument key is required")
        if not expiry_date:
            raise SimError(400, "UDAPI1088", "Expiry date is required")
        return ok(sim.option_chain(instrument_key, expiry_date))

    # registered before the historical routes: "intraday/<key>/<unit>/<interval>" would also
    # match "<key>/<unit>/<interval>/<to_date>"
    @router.get("/v3/historical-candle/intraday/{instrument_key}/{unit}/{interval}")
    async def intraday(
        request: Request, instrument_key: str, unit: str, interval: str
    ) -> JSONResponse:
        sim.authenticate(request)
        return ok({"candles": sim.intraday_candles(instrument_key, unit, interval)})

    @router.get("/v3/historical-candle/{instrument_key}/{unit}/{interval}/{to_date}")
    async def historical(
        request: Request, instrument_key: str, unit: str, interval: str, to_date: str
    ) -> JSONResponse:
        sim.authenticate(request)
        return ok({"candles": sim.candles(instrument_key, unit, interval, to_date, None)})

    @router.get("/v3/historical-candle/{instrument_key}/{unit}/{interval}/{to_date}/{from_date}")
    async def historical_range(
        request: Request,
        instrument_key: str,
        unit: str,
        interval: str,
        to_date: str,
        from_date: str,
    ) -> JSONResponse:
        sim.authenticate(request)
        return ok({"candles": sim.candles(instrument_key, unit, interval, to_date, from_date)})

    @router.post("/v3/order/place")
    async def place_order(request: Request) -> JSONResponse:
        sim.authenticate(request)
        body = await _json_body(request)
        ids = sim.place(body, request.headers.get("x-algo-name"))
        return ok({"order_ids": ids}, latency=7)

    @router.put("/v3/order/modify")
    async def modify_order(request: Request) -> JSONResponse:
        sim.authenticate(request)
        body = await _json_body(request)
        order_id = sim.modify(body, request.headers.get("x-algo-name"))
        return ok({"order_id": order_id}, latency=5)

    @router.delete("/v3/order/cancel")
    async def cancel_order(request: Request, order_id: str | None = None) -> JSONResponse:
        sim.authenticate(request)
        return ok({"order_id": sim.cancel(order_id, request.headers.get("x-algo-name"))}, latency=4)

    @router.get("/v2/order/retrieve-all")
    async def order_book(request: Request) -> JSONResponse:
        sim.authenticate(request)
        return ok(sim.order_book())

    @router.get("/v2/order/details")
    async def order_details(request: Request, order_id: str | None = None) -> JSONResponse:
        sim.authenticate(request)
        return ok(sim.order_details(order_id))

    @router.get("/v2/order/history")
    async def order_history(
        request: Request, order_id: str | None = None, tag: str | None = None
    ) -> JSONResponse:
        sim.authenticate(request)
        return ok(sim.order_history(order_id, tag))

    @router.get("/v2/order/trades/get-trades-for-day")
    async def trades_for_day(request: Request) -> JSONResponse:
        sim.authenticate(request)
        with sim.lock:
            return ok([t.record() for t in sim.trades])

    @router.get("/v2/order/trades")
    async def order_trades(request: Request, order_id: str | None = None) -> JSONResponse:
        sim.authenticate(request)
        if not order_id:
            raise SimError(400, "UDAPI1003", "Order id is required")
        with sim.lock:
            return ok([t.record() for t in sim.trades if t.order.order_id == order_id])

    @router.get("/v2/portfolio/short-term-positions")
    async def positions(request: Request) -> JSONResponse:
        sim.authenticate(request)
        return ok(sim.positions())

    @router.get("/v2/user/profile")
    async def profile(request: Request) -> JSONResponse:
        sim.authenticate(request)  # a read: not IP-restricted (API.md 9.2)
        return ok(sim.profile())

    @router.get("/v2/market/status/{exchange}")
    async def market_status(request: Request, exchange: str) -> JSONResponse:
        sim.authenticate(request)
        return ok(sim.market_status(exchange))

    @router.get("/v2/user/get-funds-and-margin")
    async def funds(request: Request, segment: str | None = None) -> JSONResponse:
        sim.authenticate(request)
        if segment not in (None, "SEC", "COM"):
            raise SimError(400, "UDAPI1019", "Invalid segment")
        return ok(sim.funds())

    @router.get("/v2/market/holidays")
    async def market_holidays() -> JSONResponse:
        # No Authorization needed (API.md 0.2, 7.4); the current year's list.
        with sim.lock:
            year = sim.now().astimezone(IST).year
            return ok([h for h in sim.holidays if h["date"].startswith(f"{year}-")])

    @router.get("/v2/market/holidays/{day}")
    async def market_holiday(day: str) -> JSONResponse:
        try:
            wanted = date.fromisoformat(day).isoformat()
        except ValueError:
            raise SimError(400, "UDAPI1088", "Invalid date", property_path="date") from None
        with sim.lock:
            return ok([h for h in sim.holidays if h["date"] == wanted])

    @router.post("/v2/charges/margin")
    async def margin(request: Request) -> JSONResponse:
        sim.authenticate(request)
        body = await _json_body(request)
        with sim.lock:
            return ok(sim.margin(body))

    @router.get("/v2/charges/brokerage")
    async def brokerage(request: Request) -> JSONResponse:
        sim.authenticate(request)
        return ok(sim.brokerage(dict(request.query_params)))

    return router


async def _json_body(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError as exc:
        raise SimError(400, "UDAPI100038", "Body is not JSON") from exc


async def _sim_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SimError)
    body = error_body(exc.code, exc.message, exc.property_path)
    return JSONResponse(body, status_code=exc.status)


async def _http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        return JSONResponse(error_body("UDAPI10000", "Request not supported"), status_code=404)
    return JSONResponse(error_body("UDAPI100038", str(exc.detail)), status_code=exc.status_code)


def install(app: FastAPI, sim: RestSimulator) -> None:
    """Add the REST routes, Upstox-shaped error answers and the fault middleware to ``app``."""
    app.include_router(create_rest_router(sim))
    app.add_exception_handler(SimError, _sim_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_middleware(FaultMiddleware, sim=sim)
    app.state.rest_sim = sim

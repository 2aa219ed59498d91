"""Parsing of Upstox records into paise, order request payloads, host resolution."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from upstox_bot.domain import OrderStatus, OrderType, Side
from upstox_bot.upstox.client import OrderRequest, RetryPolicy, UpstoxClient
from upstox_bot.upstox.models import (
    BrokerageCharges,
    FullQuote,
    HistoricalCandle,
    OrderRecord,
    PositionRecord,
)

IST = ZoneInfo("Asia/Kolkata")

# API.md 5.7 doc example
DOC_ORDER = {
    "exchange": "NSE",
    "product": "D",
    "price": 571.0,
    "quantity": 1,
    "status": "complete",
    "tag": None,
    "instrument_token": "NSE_EQ|INE062A01020",
    "placed_by": "******",
    "trading_symbol": "SBIN-EQ",
    "order_type": "LIMIT",
    "validity": "DAY",
    "trigger_price": 0.0,
    "disclosed_quantity": 0,
    "transaction_type": "BUY",
    "average_price": 570.95,
    "filled_quantity": 1,
    "pending_quantity": 0,
    "status_message": None,
    "status_message_raw": None,
    "exchange_order_id": "1300000025660919",
    "parent_order_id": None,
    "order_id": "231019025562880",
    "variety": "SIMPLE",
    "order_timestamp": "2023-10-19 13:25:13",
    "exchange_timestamp": "2023-10-19 13:25:13",
    "is_amo": False,
    "order_request_id": "1",
    "order_ref_id": "GTT-C23191000044253",
}


def test_order_record_parses_doc_example_into_paise_and_ist() -> None:
    order = OrderRecord.from_api(DOC_ORDER)
    assert order.order_id == "231019025562880"
    assert order.price_paise == 57100
    assert order.average_price_paise == 57095  # 570.95 exactly, no float drift
    assert order.order_at == datetime(2023, 10, 19, 13, 25, 13, tzinfo=IST)
    assert order.side is Side.BUY
    assert order.is_terminal
    assert order.domain_status is OrderStatus.FILLED
    assert order.tag is None


@pytest.mark.parametrize(
    ("status", "filled", "expected"),
    [
        ("open", 0, OrderStatus.OPEN),
        ("open", 5, OrderStatus.PARTIALLY_FILLED),
        ("rejected", 0, OrderStatus.REJECTED),
        ("cancelled after market order", 0, OrderStatus.CANCELLED),
        ("some new word", 0, OrderStatus.OPEN),
    ],
)
def test_order_status_words_map_to_domain(status: str, filled: int, expected: OrderStatus) -> None:
    order = OrderRecord.from_api(DOC_ORDER | {"status": status, "filled_quantity": filled})
    assert order.domain_status is expected
    assert order.is_terminal is (expected in (OrderStatus.REJECTED, OrderStatus.CANCELLED))


def test_candle_row_becomes_utc_ms_and_paise() -> None:
    row = ["2025-12-30T09:15:00+05:30", 101.05, 102.4, 100.95, 101.1, 1500, 25000]
    candle = HistoricalCandle.from_api(row, instrument_key="NSE_FO|1", interval_s=60)
    assert (
        candle.start_ms
        == int(datetime(2025, 12, 30, 3, 45, tzinfo=ZoneInfo("UTC")).timestamp()) * 1000
    )
    assert (candle.open_paise, candle.high_paise, candle.low_paise, candle.close_paise) == (
        10105,
        10240,
        10095,
        10110,
    )
    assert candle.oi == 25000
    domain = candle.to_candle()
    assert domain.interval_s == 60
    assert domain.close_paise == 10110


def test_quote_uses_instrument_token_not_map_key() -> None:
    quote = FullQuote.from_api(
        {
            "instrument_token": "NSE_EQ|INE002A01018",
            "symbol": "RELIANCE",
            "last_price": 1402.45,
            "ohlc": {"open": 1390, "high": 1410.5, "low": 1385.05, "close": 1402.45},
            "depth": {"buy": [{"price": 1402.4, "quantity": 10, "orders": 2}], "sell": []},
            "lower_circuit_limit": 1251.0,
            "upper_circuit_limit": 1529.0,
            "last_trade_time": "1767000000123",
        }
    )
    assert quote.instrument_token == "NSE_EQ|INE002A01018"
    assert quote.last_price_paise == 140245
    assert quote.bids[0].price_paise == 140240
    assert quote.last_trade_ms == 1767000000123


def test_position_with_null_average_price() -> None:
    position = PositionRecord.from_api(
        {"instrument_token": "NSE_FO|1", "quantity": -75, "average_price": None, "pnl": -12.5}
    )
    assert position.quantity == -75
    assert position.average_price_paise is None
    assert position.pnl_paise == -1250


def test_brokerage_charges_in_paise() -> None:
    charges = BrokerageCharges.from_api(
        {
            "charges": {
                "total": 32.71,
                "brokerage": 20,
                "taxes": {"gst": 3.6, "stt": 7.5},
                "other_charges": {"transaction": 1.5, "sebi_turnover": 0.01},
            }
        }
    )
    assert charges.total_paise == 3271
    assert charges.gst_paise == 360
    assert charges.sebi_turnover_paise == 1


def test_market_order_payload_carries_market_protection() -> None:
    order = OrderRequest(
        instrument_token="NSE_FO|54321", quantity=500, side=Side.BUY, tag="ub-7f3a9c2e"
    )
    payload = order.to_payload(default_market_protection=-1)
    assert payload == {
        "instrument_token": "NSE_FO|54321",
        "quantity": 500,
        "product": "I",
        "validity": "DAY",
        "price": 0,
        "tag": "ub-7f3a9c2e",
        "order_type": "MARKET",
        "transaction_type": "BUY",
        "disclosed_quantity": 0,
        "trigger_price": 0.0,
        "is_amo": False,
        "slice": True,
        "market_protection": -1,
    }
    explicit = OrderRequest(
        instrument_token="NSE_FO|1", quantity=75, side=Side.SELL, tag="t", market_protection=2
    )
    assert explicit.to_payload(default_market_protection=-1)["market_protection"] == 2


def test_limit_order_payload_has_rupee_price_and_no_protection() -> None:
    order = OrderRequest(
        instrument_token="NSE_FO|1",
        quantity=75,
        side=Side.SELL,
        tag="t",
        order_type=OrderType.LIMIT,
        price_paise=10125,
    )
    payload = order.to_payload(default_market_protection=-1)
    assert payload["price"] == 101.25
    assert payload["order_type"] == "LIMIT"
    assert payload["transaction_type"] == "SELL"
    assert "market_protection" not in payload


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"quantity": 0}, "quantity"),
        ({"tag": ""}, "tag"),
        ({"tag": "x" * 41}, "tag"),
        ({"order_type": OrderType.LIMIT}, "price"),
        ({"order_type": OrderType.STOP_MARKET}, "trigger"),
        ({"order_type": OrderType.STOP_LIMIT, "price_paise": 100}, "trigger"),
        ({"market_protection": 26}, "market_protection"),
    ],
)
def test_order_request_refuses_invalid_orders(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "instrument_token": "NSE_EQ|X",
        "quantity": 1,
        "side": Side.BUY,
        "tag": "t",
    }
    with pytest.raises(ValueError, match=message):
        OrderRequest(**(base | kwargs))  # type: ignore[arg-type]


async def test_order_and_assets_hosts_follow_an_overridden_api_base() -> None:
    async with UpstoxClient(access_token=lambda: "t") as upstox:
        assert upstox.api_base_url == "https://api.upstox.com"
        assert upstox.order_base_url == "https://api-hft.upstox.com"
        assert upstox.assets_base_url == "https://assets.upstox.com"
    async with UpstoxClient(access_token=lambda: "t", api_base_url="http://127.0.0.1:9/") as sim:
        assert sim.order_base_url == "http://127.0.0.1:9"
        assert sim.assets_base_url == "http://127.0.0.1:9"
    async with UpstoxClient(
        access_token=lambda: "t", api_base_url="http://a", order_base_url="http://b/"
    ) as split:
        assert split.order_base_url == "http://b"


def test_backoff_doubles_up_to_cap() -> None:
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=3.0)
    assert [policy.backoff(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]

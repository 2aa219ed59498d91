"""Decoding portfolio stream messages (API.md 4.2, 4.4) into typed updates."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from upstox_bot.domain import OrderStatus, Side
from upstox_bot.errors import MalformedFrame
from upstox_bot.upstox.models import OrderRecord, PositionRecord
from upstox_bot.upstox.portfolio_stream import decode_portfolio_message

IST = ZoneInfo("Asia/Kolkata")

ORDER_UPDATE: dict[str, Any] = {  # the doc example's keys, in order; values invented
    "update_type": "order",
    "user_id": "AB1234",
    "userId": "AB1234",
    "exchange": "NSE",
    "instrument_key": "NSE_EQ|INE848E01016",
    "instrument_token": "NSE_EQ|INE848E01016",
    "trading_symbol": "NHPC-EQ",
    "tradingsymbol": "NHPC-EQ",
    "product": "I",
    "order_type": "MARKET",
    "average_price": 76.62,
    "price": 0,
    "trigger_price": 0,
    "quantity": 30,
    "disclosed_quantity": 0,
    "pending_quantity": 10,
    "filled_quantity": 20,
    "transaction_type": "BUY",
    "order_ref_id": "",
    "exchange_order_id": "1300000025660919",
    "parent_order_id": None,
    "validity": "DAY",
    "status": "open",
    "status_message": None,
    "status_message_raw": None,
    "is_amo": False,
    "variety": "SIMPLE",
    "tag": "ub-7f3a9c2e",
    "order_id": "240221025997024",
    "order_request_id": "1",
    "order_timestamp": "2024-02-21 14:40:02",
    "exchange_timestamp": "2024-02-21 14:40:03",
    "guid": None,
    "placed_by": "AB1234",
}


def test_order_update_becomes_an_order_record_with_domain_status() -> None:
    update = decode_portfolio_message(json.dumps(ORDER_UPDATE))

    assert isinstance(update, OrderRecord)
    assert update.tag == "ub-7f3a9c2e"
    assert update.order_id == "240221025997024"
    assert update.instrument_token == "NSE_EQ|INE848E01016"
    assert update.side is Side.BUY
    assert (update.quantity, update.filled_quantity, update.pending_quantity) == (30, 20, 10)
    assert update.average_price_paise == 7662
    assert update.domain_status is OrderStatus.PARTIALLY_FILLED
    assert update.exchange_at == datetime(2024, 2, 21, 14, 40, 3, tzinfo=IST)


@pytest.mark.parametrize(
    ("status", "filled", "expected"),
    [
        ("put order req received", 0, OrderStatus.OPEN),
        ("complete", 30, OrderStatus.FILLED),
        ("rejected", 0, OrderStatus.REJECTED),
        ("cancelled", 0, OrderStatus.CANCELLED),
        ("some new status word", 0, OrderStatus.OPEN),
    ],
)
def test_order_status_words_map_to_domain_states(
    status: str, filled: int, expected: OrderStatus
) -> None:
    raw = ORDER_UPDATE | {"status": status, "filled_quantity": filled}
    update = decode_portfolio_message(json.dumps(raw).encode())  # binary frames are accepted
    assert isinstance(update, OrderRecord)
    assert update.domain_status is expected


def test_position_update_becomes_a_position_record() -> None:
    raw = {
        "update_type": "position",
        "exchange": "NSE",
        "instrument_token": "NSE_EQ|INE002A01018",
        "instrument_key": "NSE_EQ|INE002A01018",
        "product": "I",
        "quantity": -25,
        "average_price": 1402.5,
        "day_buy_quantity": 0,
        "day_sell_quantity": 25,
    }
    update = decode_portfolio_message(json.dumps(raw))
    assert isinstance(update, PositionRecord)
    assert update.quantity == -25
    assert update.average_price_paise == 140_250


@pytest.mark.parametrize("kind", ["holding", "gtt_order", "something_new"])
def test_updates_the_bot_does_not_use_are_ignored(kind: str) -> None:
    assert decode_portfolio_message(json.dumps({"update_type": kind, "x": 1})) is None


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        "[1, 2]",
        json.dumps({"update_type": "order", "status": "open"}),  # no order id
        json.dumps({"update_type": "position", "quantity": 1}),  # no instrument
        json.dumps(ORDER_UPDATE | {"quantity": "many"}),
    ],
)
def test_malformed_messages_raise_malformed_frame(message: str) -> None:
    with pytest.raises(MalformedFrame):
        decode_portfolio_message(message)

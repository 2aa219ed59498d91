"""UpstoxClient and the OAuth login against the local Upstox simulator over loopback HTTP."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import SecretStr

from tests.support.upstox_sim import FaultKind, RestSimulator, UpstoxSimulator, upstox_simulator
from tests.support.waiting import wait_until, wait_until_async
from upstox_bot.domain import OrderType, Product, Side
from upstox_bot.upstox.auth import UpstoxOAuth, new_state, states_match
from upstox_bot.upstox.client import OrderRequest, PlacementPolicy, RetryPolicy, UpstoxClient
from upstox_bot.upstox.errors import (
    UpstoxAuthError,
    UpstoxNotFound,
    UpstoxOrderRejected,
    UpstoxOrderStateUnknown,
    UpstoxRequestError,
    UpstoxServerError,
)
from upstox_bot.upstox.models import CandleUnit
from upstox_bot.upstox.tokens import StoredToken, TokenCipher

IST = ZoneInfo("Asia/Kolkata")
PLACE = "/v3/order/place"
BOOK = "/v2/order/retrieve-all"
HISTORY = "/v2/order/history"
RELIANCE = "NSE_EQ|INE002A01018"
NIFTY = "NSE_INDEX|Nifty 50"
CLIENT_TIMEOUT_S = 0.5
SIM_TIMEOUT_DELAY_S = 1.0  # longer than the client's timeout

sim = pytest.fixture(upstox_simulator)


def make_client(upstox: UpstoxSimulator, **overrides: Any) -> UpstoxClient:
    token = upstox.rest.issue_token()
    options: dict[str, Any] = {
        "access_token": lambda: token,
        "api_base_url": upstox.base_url,
        "timeout": CLIENT_TIMEOUT_S,
        "retry": RetryPolicy(base_delay_s=0.05, max_delay_s=1.0),
        # a window longer than the simulator's book delay (Scenario.book_delay_s)
        "placement": PlacementPolicy(settle_s=0.05, lookup_window_s=1.0, lookup_interval_s=0.05),
    }
    return UpstoxClient(**(options | overrides))


def visible(upstox: UpstoxSimulator, order_id: str) -> bool:
    with upstox.rest.lock:
        return upstox.rest.visible(upstox.rest.orders[order_id])


def market_buy(tag: str, *, key: str = RELIANCE, quantity: int = 10) -> OrderRequest:
    return OrderRequest(instrument_token=key, quantity=quantity, side=Side.BUY, tag=tag)


# --- login -------------------------------------------------------------------------------------


async def test_login_flow_end_to_end_stores_encrypted_token_that_works(
    sim: UpstoxSimulator,
) -> None:
    oauth = UpstoxOAuth(
        client_id=sim.rest.client_id,
        client_secret=SecretStr(sim.rest.client_secret),
        redirect_uri="http://127.0.0.1:8000/api/v1/auth/upstox/callback",
        api_base_url=sim.base_url,
    )
    state = new_state()
    async with httpx.AsyncClient() as browser:
        dialog = await browser.get(oauth.authorization_url(state))
    assert dialog.status_code == 302
    redirect = urlsplit(dialog.headers["location"])
    assert f"{redirect.scheme}://{redirect.netloc}{redirect.path}" == (
        "http://127.0.0.1:8000/api/v1/auth/upstox/callback"
    )
    query = parse_qs(redirect.query)
    assert states_match(state, query["state"][0])

    now = datetime.now(tz=UTC)
    grant = await oauth.exchange_code(query["code"][0], now=now)
    token = grant.access_token.get_secret_value()
    assert grant.user_id == sim.rest.user_id
    assert token not in repr(grant)
    # the simulator's JWT carries exp = the next 03:30 IST
    expected = datetime.combine(now.astimezone(IST).date(), datetime.min.time(), IST)
    expected += timedelta(hours=3, minutes=30)
    if now >= expected:
        expected += timedelta(days=1)
    assert grant.expires_at == expected

    cipher = TokenCipher(SecretStr("a-long-random-token-encryption-secret-0001"))
    stored = StoredToken.seal(
        cipher, grant.access_token, expires_at=grant.expires_at, user_id=grant.user_id
    )
    assert token not in stored.ciphertext
    assert token not in repr(stored)

    client = UpstoxClient(
        access_token=lambda: stored.reveal(cipher, now=datetime.now(tz=UTC)),
        api_base_url=sim.base_url,
    )
    async with client:
        funds = await client.funds_and_margin()
    assert funds.equity.available_margin_paise == 100_000_00
    [call] = sim.rest.requests_to("/v2/user/get-funds-and-margin")
    assert call.headers["authorization"] == f"Bearer {token}"

    # the code is single use
    with pytest.raises(UpstoxAuthError) as refused:
        await oauth.exchange_code(query["code"][0], now=now)
    assert refused.value.error_codes == ("UDAPI100057",)


async def test_token_exchange_with_wrong_secret_is_auth_error(sim: UpstoxSimulator) -> None:
    redirect_uri = "http://127.0.0.1:8000/cb"
    oauth = UpstoxOAuth(
        client_id=sim.rest.client_id,
        client_secret=SecretStr("wrong"),
        redirect_uri=redirect_uri,
        api_base_url=sim.base_url,
    )
    code = sim.rest.authorize(sim.rest.client_id, redirect_uri)
    with pytest.raises(UpstoxAuthError) as refused:
        await oauth.exchange_code(code, now=datetime.now(tz=UTC))
    assert refused.value.error_codes == ("UDAPI100016",)


async def test_expired_token_raises_auth_error_without_retry(sim: UpstoxSimulator) -> None:
    async with make_client(sim) as client:
        sim.rest.revoke_tokens()
        with pytest.raises(UpstoxAuthError) as expired:
            await client.order_book()
    assert expired.value.status_code == 401
    assert expired.value.error_codes == ("UDAPI100050",)
    assert len(sim.rest.requests_to(BOOK)) == 1


async def test_expired_token_on_place_is_not_followed_by_lookup_or_resend(
    sim: UpstoxSimulator,
) -> None:
    sim.rest.fail_next(FaultKind.EXPIRED_TOKEN, path=PLACE)
    async with make_client(sim) as client:
        with pytest.raises(UpstoxAuthError):
            await client.place_order(market_buy("ub-expired"))
    assert len(sim.rest.requests_to(PLACE)) == 1
    assert sim.rest.requests_to(BOOK) == []
    assert sim.rest.orders == {}


# --- order placement recovery --------------------------------------------------------------------


async def test_place_accepted_then_timeout_ends_with_exactly_one_order(
    sim: UpstoxSimulator,
) -> None:
    sim.rest.fail_next(FaultKind.TIMEOUT, path=PLACE, delay_s=SIM_TIMEOUT_DELAY_S, process=True)
    async with make_client(sim) as client:
        placed = await client.place_order(market_buy("ub-timeout-1"))
    [order] = sim.rest.orders_with_tag("ub-timeout-1")
    assert placed.recovered
    assert placed.order_ids == (order.order_id,)
    assert len(sim.rest.requests_to(PLACE)) == 1
    assert sim.rest.place_requests == 1


async def test_place_timeout_before_processing_places_once_after_lookup(
    sim: UpstoxSimulator,
) -> None:
    sim.rest.fail_next(FaultKind.TIMEOUT, path=PLACE, delay_s=SIM_TIMEOUT_DELAY_S, process=False)
    async with make_client(sim) as client:
        placed = await client.place_order(market_buy("ub-timeout-2"))
    [order] = sim.rest.orders_with_tag("ub-timeout-2")
    assert not placed.recovered
    assert placed.attempts == 2
    assert placed.order_ids == (order.order_id,)
    # the book and the history were searched over the whole window between the two sends
    place_times = [r.at for r in sim.rest.requests_to(PLACE)]
    book_times = [r.at for r in sim.rest.requests_to(BOOK)]
    history_times = [r.at for r in sim.rest.requests_to(HISTORY)]
    assert len(place_times) == 2
    assert len(book_times) >= 2
    assert len(history_times) == len(book_times)
    assert all(place_times[0] < at < place_times[1] for at in book_times + history_times)
    assert place_times[1] - place_times[0] >= 1.0  # the window (make_client)


async def test_a_lost_answer_finds_an_order_the_book_shows_only_seconds_later(
    sim: UpstoxSimulator,
) -> None:
    # Upstox took the order, the answer was lost, and the book lags by longer than the first
    # searches: a client that gave up early would send it twice (API.md 13).
    sim.scenario.book_delay_s = 0.6
    sim.rest.fail_next(FaultKind.TIMEOUT, path=PLACE, delay_s=SIM_TIMEOUT_DELAY_S, process=True)
    async with make_client(
        sim, placement=PlacementPolicy(settle_s=0.0, lookup_window_s=2.0, lookup_interval_s=0.1)
    ) as client:
        placed = await client.place_order(market_buy("ub-late-book"))
    [order] = sim.rest.orders_with_tag("ub-late-book")
    assert placed.recovered
    assert placed.order_ids == (order.order_id,)
    assert len(sim.rest.requests_to(PLACE)) == 1
    assert len(sim.rest.requests_to(BOOK)) >= 2  # searched more than once before it showed


@pytest.mark.parametrize("processed", [True, False])
async def test_place_5xx_ends_with_exactly_one_order(sim: UpstoxSimulator, processed: bool) -> None:
    sim.rest.fail_next(FaultKind.SERVER_ERROR, path=PLACE, process=processed)
    async with make_client(sim) as client:
        placed = await client.place_order(market_buy("ub-5xx"))
    [order] = sim.rest.orders_with_tag("ub-5xx")
    assert placed.order_ids == (order.order_id,)
    assert placed.recovered is processed
    assert len(sim.rest.requests_to(PLACE)) == (1 if processed else 2)


async def test_place_when_book_cannot_be_read_raises_state_unknown_and_never_resends(
    sim: UpstoxSimulator,
) -> None:
    sim.rest.fail_next(FaultKind.SERVER_ERROR, path=PLACE, process=True)
    sim.rest.fail_next(FaultKind.SERVER_ERROR, count=1000, path=BOOK)
    async with make_client(sim) as client:
        with pytest.raises(UpstoxOrderStateUnknown):
            await client.place_order(market_buy("ub-unknown"))
    assert len(sim.rest.orders_with_tag("ub-unknown")) == 1
    assert len(sim.rest.requests_to(PLACE)) == 1
    assert len(sim.rest.requests_to(BOOK)) >= RetryPolicy().attempts


async def test_place_failing_every_time_without_order_raises_after_bounded_attempts(
    sim: UpstoxSimulator,
) -> None:
    sim.rest.fail_next(FaultKind.SERVER_ERROR, count=10, path=PLACE)
    policy = PlacementPolicy(
        settle_s=0.01, max_attempts=3, lookup_window_s=0.05, lookup_interval_s=0.05
    )
    async with make_client(sim, placement=policy) as client:
        with pytest.raises(UpstoxServerError):
            await client.place_order(market_buy("ub-down"))
    place_times = [r.at for r in sim.rest.requests_to(PLACE)]
    book_times = [r.at for r in sim.rest.requests_to(BOOK)]
    assert len(place_times) == 3
    # every failed send is followed by the searches of its window, none after the last
    for first, then in itertools.pairwise(place_times):
        assert any(first < at < then for at in book_times)
    assert len(book_times) == 3 * 2  # settle + one interval per window
    assert sim.rest.orders == {}


async def test_sliced_order_recovered_after_timeout_returns_every_child(
    sim: UpstoxSimulator,
) -> None:
    future = next(
        r
        for r in sim.rest.instruments
        if r.get("instrument_type") == "FUT" and r.get("underlying_symbol") == "RELIANCE"
    )
    freeze = int(future["freeze_quantity"])
    quantity = freeze * 2 + future["lot_size"]
    sim.rest.fail_next(FaultKind.TIMEOUT, path=PLACE, delay_s=SIM_TIMEOUT_DELAY_S, process=True)
    async with make_client(sim) as client:
        placed = await client.place_order(
            market_buy("ub-sliced", key=future["instrument_key"], quantity=quantity)
        )
    children = sim.rest.orders_with_tag("ub-sliced")
    assert [o.quantity for o in children] == [freeze, freeze, future["lot_size"]]
    assert placed.recovered
    assert set(placed.order_ids) == {o.order_id for o in children}


async def test_refused_order_is_not_retried_and_carries_code(sim: UpstoxSimulator) -> None:
    sim.rest.registered_algo_names = {"my-algo"}
    async with make_client(sim, algo_name="not-registered") as client:
        with pytest.raises(UpstoxOrderRejected) as refused:
            await client.place_order(market_buy("ub-algo"))
    assert refused.value.error_codes == ("UDAPI1156",)
    [call] = sim.rest.requests_to(PLACE)
    assert call.headers["x-algo-name"] == "not-registered"
    assert sim.rest.orders == {}
    assert sim.rest.requests_to(BOOK) == []


async def test_market_order_goes_with_market_protection_and_algo_name(
    sim: UpstoxSimulator,
) -> None:
    sim.rest.registered_algo_names = {"my-algo"}
    async with make_client(sim, algo_name="my-algo") as client:
        placed = await client.place_order(market_buy("ub-mp"))
    order = sim.rest.orders[placed.order_ids[0]]
    assert order.market_protection == -1
    assert order.algo_name == "my-algo"
    assert order.status == "open pending"  # acknowledged; the fill comes later (API.md 13)
    wait_until(lambda: order.status == "complete", what="the fill")
    assert placed.latency_ms is not None


# --- 429 and GET retries ----------------------------------------------------------------------


async def test_429s_slow_the_client_down_instead_of_failing(sim: UpstoxSimulator) -> None:
    sim.rest.fail_next(FaultKind.RATE_LIMITED, count=3, path=BOOK)
    retry = RetryPolicy(base_delay_s=0.1, max_delay_s=1.0)
    async with make_client(sim, retry=retry) as client:
        started = time.monotonic()
        orders = await client.order_book()
        elapsed = time.monotonic() - started
    assert orders == []
    calls = [r.at for r in sim.rest.requests_to(BOOK)]
    assert len(calls) == 4
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    # back-off 0.1, 0.2, 0.4 s between the answers
    assert gaps[0] >= 0.1
    assert gaps[1] >= 0.2
    assert gaps[2] >= 0.4
    assert elapsed >= 0.7


async def test_the_documented_rate_limit_answers_429_and_the_client_rides_it_out(
    sim: UpstoxSimulator,
) -> None:
    sim.scenario.rate_limit_per_second = 3  # API.md 8.3 (50 a second), made small to reach
    async with make_client(sim) as client:
        quotes = [await client.ltp([RELIANCE]) for _ in range(8)]
    assert all(RELIANCE in q for q in quotes)  # every call ended well
    assert sim.rest.rate_limited >= 1  # some were answered 429 UDAPI10005 and retried


async def test_429_with_retry_after_waits_that_long(sim: UpstoxSimulator) -> None:
    sim.rest.fail_next(FaultKind.RATE_LIMITED, path="/v2/portfolio", retry_after_s=0.6)
    async with make_client(sim) as client:
        started = time.monotonic()
        assert await client.positions() == []
        assert time.monotonic() - started >= 0.6


async def test_429_on_place_waits_and_places_exactly_once(sim: UpstoxSimulator) -> None:
    sim.rest.fail_next(FaultKind.RATE_LIMITED, count=2, path=PLACE)
    retry = RetryPolicy(base_delay_s=0.1)
    async with make_client(sim, retry=retry) as client:
        started = time.monotonic()
        placed = await client.place_order(market_buy("ub-429"))
        elapsed = time.monotonic() - started
    assert len(sim.rest.orders_with_tag("ub-429")) == 1
    assert placed.attempts == 3
    assert elapsed >= 0.3


async def test_get_retries_5xx_and_timeouts_then_succeeds(sim: UpstoxSimulator) -> None:
    sim.rest.fail_next(FaultKind.SERVER_ERROR, path=BOOK)
    sim.rest.fail_next(FaultKind.UNAVAILABLE, path=BOOK)
    sim.rest.fail_next(FaultKind.TIMEOUT, path=BOOK, delay_s=SIM_TIMEOUT_DELAY_S)
    async with make_client(sim) as client:
        assert await client.order_book() == []
    assert len(sim.rest.requests_to(BOOK)) == 4


async def test_get_gives_up_after_bounded_retries(sim: UpstoxSimulator) -> None:
    sim.rest.fail_next(FaultKind.SERVER_ERROR, count=20, path=BOOK)
    async with make_client(sim, retry=RetryPolicy(attempts=3, base_delay_s=0.01)) as client:
        with pytest.raises(UpstoxServerError) as failed:
            await client.order_book()
    assert failed.value.status_code == 500
    assert len(sim.rest.requests_to(BOOK)) == 3


# --- instruments and market data ------------------------------------------------------------


async def test_instrument_master_download_is_parsed(sim: UpstoxSimulator) -> None:
    async with make_client(sim) as client:
        records = await client.download_instruments("NSE")
    by_key = {r["instrument_key"]: r for r in records}
    assert by_key[RELIANCE]["segment"] == "NSE_EQ"
    assert by_key[NIFTY]["instrument_type"] == "INDEX"
    futures = [r for r in records if r.get("instrument_type") == "FUT"]
    stock_futures = {r["underlying_symbol"] for r in futures if r["underlying_type"] == "EQUITY"}
    index_futures = {r["underlying_symbol"] for r in futures if r["underlying_type"] == "INDEX"}
    assert "RELIANCE" in stock_futures
    assert {"NIFTY", "BANKNIFTY", "FINNIFTY", "MIDCPNIFTY", "NIFTYNXT50"} <= index_futures
    option = next(r for r in records if r.get("instrument_type") == "CE")
    assert isinstance(option["expiry"], int)
    assert option["strike_price"] > 0
    assert option["tick_size"] == 5.0
    [call] = sim.rest.requests_to("/market-quote/instruments/exchange/NSE.json.gz")
    assert "authorization" not in call.headers


async def test_quotes_and_ltp_are_keyed_by_instrument_key_in_paise(sim: UpstoxSimulator) -> None:
    sim.rest.set_price(RELIANCE, "1402.45")
    async with make_client(sim) as client:
        quotes = await client.full_quotes([RELIANCE, NIFTY, "NSE_EQ|UNKNOWN"])
        ltps = await client.ltp([RELIANCE])
    assert set(quotes) == {RELIANCE, NIFTY}
    assert quotes[RELIANCE].last_price_paise == 140245
    assert len(quotes[RELIANCE].bids) == 5
    assert ltps[RELIANCE].last_price_paise == 140245
    # "|" and the space of "Nifty 50" went percent-encoded
    [call] = sim.rest.requests_to("/v2/market-quote/quotes")
    assert call.method == "GET"


def weekday_before(day: date) -> date:
    day -= timedelta(days=1)
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    return day


async def test_historical_candles_oldest_first_and_span_limit(sim: UpstoxSimulator) -> None:
    to_day = weekday_before(date.today())  # noqa: DTZ011 - any recent weekday will do
    async with make_client(sim) as client:
        candles = await client.historical_candles(NIFTY, CandleUnit.MINUTES, 5, to_day, to_day)
        daily = await client.historical_candles(
            RELIANCE, CandleUnit.DAYS, 1, to_day, to_day - timedelta(days=14)
        )
        with pytest.raises(UpstoxRequestError) as too_long:
            await client.historical_candles(
                RELIANCE, CandleUnit.MINUTES, 1, to_day, to_day - timedelta(days=60)
            )
    assert len(candles) == 75  # 375 minutes in 5-minute candles
    starts = [c.start_ms for c in candles]
    assert starts == sorted(starts)
    assert all(b - a == 300_000 for a, b in itertools.pairwise(starts))
    first = datetime.fromtimestamp(starts[0] / 1000, tz=IST)
    assert (first.date(), first.hour, first.minute) == (to_day, 9, 15)
    assert all(c.low_paise <= c.open_paise <= c.high_paise for c in candles)
    assert 9 <= len(daily) <= 11
    assert too_long.value.error_codes == ("UDAPI1148",)


async def test_intraday_candles_up_to_now() -> None:
    at = datetime(2026, 1, 6, 11, 0, 30, tzinfo=IST)  # a Tuesday
    rest_sim = RestSimulator(now=lambda: at)
    with UpstoxSimulator(rest_sim=rest_sim) as upstox:
        async with make_client(upstox) as client:
            candles = await client.intraday_candles(RELIANCE, CandleUnit.MINUTES, 15)
    # 09:15 .. 10:45 complete by 11:00:30
    assert len(candles) == 7
    last = datetime.fromtimestamp(candles[-1].start_ms / 1000, tz=IST)
    assert (last.hour, last.minute) == (10, 45)


async def test_option_chain_for_nifty_near_expiry(sim: UpstoxSimulator) -> None:
    ce = next(
        r
        for r in sim.rest.instruments
        if r.get("instrument_type") == "CE" and r.get("underlying_symbol") == "NIFTY"
    )
    expiry = datetime.fromtimestamp(ce["expiry"] / 1000, tz=IST).date()
    async with make_client(sim) as client:
        chain = await client.option_chain(NIFTY, expiry)
    assert len(chain) == 5
    assert [s.strike_paise for s in chain] == sorted(s.strike_paise for s in chain)
    assert all(s.call is not None and s.put is not None for s in chain)
    assert chain[0].underlying_spot_paise == 2450050


# --- order lifecycle, portfolio and charges ---------------------------------------------------


async def test_order_lifecycle_trades_positions_funds(sim: UpstoxSimulator) -> None:
    sim.rest.set_price(RELIANCE, Decimal("1400.00"))
    async with make_client(sim) as client:
        bought = await client.place_order(market_buy("ub-buy", quantity=10))
        resting = await client.place_order(
            OrderRequest(
                instrument_token=RELIANCE,
                quantity=10,
                side=Side.SELL,
                tag="ub-sell",
                order_type=OrderType.LIMIT,
                price_paise=150000,
            )
        )
        [resting_id] = resting.order_ids
        await wait_until_async(lambda: visible(sim, resting_id), what="the order in the book")
        await wait_until_async(lambda: sim.rest.orders[resting_id].status == "open", what="open")
        assert (await client.order_details(resting_id)).status == "open"
        await client.modify_order(resting_id, order_type=OrderType.LIMIT, price_paise=140500)
        assert (await client.order_details(resting_id)).status == "open"
        sim.rest.set_price(RELIANCE, Decimal("1405.00"))
        sold = await client.order_details(resting_id)
        assert sold.status == "complete"
        assert sold.average_price_paise == 140500

        other = await client.place_order(
            OrderRequest(
                instrument_token=RELIANCE,
                quantity=10,
                side=Side.BUY,
                tag="ub-cancel",
                order_type=OrderType.LIMIT,
                price_paise=100000,
            )
        )
        assert await client.cancel_order(other.order_ids[0]) == other.order_ids[0]
        cancelled = sim.rest.orders[other.order_ids[0]]
        await wait_until_async(lambda: cancelled.status == "cancelled", what="the cancel confirmed")
        await wait_until_async(
            lambda: visible(sim, bought.order_ids[0]), what="the buy in the book"
        )
        with pytest.raises(UpstoxOrderRejected) as finished:
            await client.cancel_order(other.order_ids[0])
        assert finished.value.error_codes == ("UDAPI100040",)
        with pytest.raises(UpstoxNotFound):
            await client.order_details("999999999999999")

        history = await client.order_history(order_id=resting_id)
        found = await client.find_order_by_tag("ub-buy")
        trades = await client.trades_for_day()
        order_trades = await client.order_trades(bought.order_ids[0])
        positions = await client.positions()
        funds = await client.funds_and_margin()
        charges = await client.brokerage(
            instrument_token=RELIANCE,
            quantity=10,
            product=Product.INTRADAY,
            side=Side.SELL,
            price_paise=140500,
        )
        assert await client.find_order_by_tag("ub-none") is None

    statuses = [h.status for h in history]
    assert statuses[0] == "put order req received"
    assert "modified" in statuses
    assert statuses[-1] == "complete"
    assert found is not None
    assert found.order_id == bought.order_ids[0]
    assert [t.side for t in trades] == [Side.BUY, Side.SELL]
    assert order_trades[0].price_paise == 140000
    [position] = positions
    assert position.quantity == 0
    assert position.realised_paise == 10 * 500  # bought 1400.00, sold 1405.00
    assert funds.equity.available_margin_paise == 100_000_00
    # the simulator charges min(Rs 20, 0.1% of turnover) and 0.025% STT on the sell side
    assert charges.brokerage_paise == 1405
    assert charges.stt_paise == 351
    assert charges.total_paise > charges.brokerage_paise + charges.stt_paise


async def test_cancel_after_lost_answer_confirms_by_reading_the_order(
    sim: UpstoxSimulator,
) -> None:
    async with make_client(sim) as client:
        placed = await client.place_order(
            OrderRequest(
                instrument_token=RELIANCE,
                quantity=1,
                side=Side.BUY,
                tag="ub-c",
                order_type=OrderType.LIMIT,
                price_paise=100000,
            )
        )
        await wait_until_async(
            lambda: visible(sim, placed.order_ids[0]), what="the order in the book"
        )
        sim.rest.fail_next(FaultKind.SERVER_ERROR, path="/v3/order/cancel", process=True)
        assert await client.cancel_order(placed.order_ids[0]) == placed.order_ids[0]
    order = sim.rest.orders[placed.order_ids[0]]
    assert order.status.startswith("cancel")  # pending, then confirmed by the exchange
    wait_until(lambda: order.status == "cancelled", what="the cancel confirmed")
    assert len(sim.rest.requests_to("/v3/order/cancel")) == 1


def test_simulator_fixture_is_a_running_server(sim: UpstoxSimulator) -> None:
    answer = httpx.get(f"{sim.base_url}/v2/order/retrieve-all")
    assert answer.status_code == 401
    assert answer.json()["errors"][0]["error_code"] == "UDAPI100050"

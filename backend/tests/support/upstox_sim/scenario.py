"""How the simulated Upstox behaves: one :class:`Scenario` per simulator, changeable while it runs.

Every field says where the behaviour comes from: a section of the Upstox fact sheet (API.md in
the project's shared notes, cited as "API.md 5.7"), a documentation page, or "assumed" where
Upstox documents nothing (delays, band widths, limits' exact effect). The default,
:meth:`Scenario.realistic`, is what the bot meets on its first live day: orders are acknowledged
first and filled a moment later, they reach the order book after a delay, MARKET orders carry a
protection band, rate limits answer 429. Tests script the rest (a revoked token, a static-IP
refusal, a gap through the band, partial fills) on the running simulator.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal


@dataclass(slots=True, kw_only=True)
class Scenario:
    """The behaviour of the simulated Upstox (see the module doc for the sources' notation)."""

    name: str = "realistic"

    # API.md 4.2, 5.7, 13: a placed order is acknowledged first ("put order req received",
    # "validation pending", "open pending") and filled later; the fill arrives on the portfolio
    # stream and in the order book, never in the place answer. The delay is assumed.
    match_delay_s: float = 0.05

    # API.md 5.1, 13: an order placed on the HFT host reaches the order book (retrieve-all,
    # details, history) a moment later, so a look-up by tag right after a timeout can miss it.
    # The delay is assumed (API.md 12: timing unconfirmed).
    book_delay_s: float = 0.3

    # API.md 5.2, 9.2; market-protection announcement (March 2026): a MARKET or SL-M order with
    # market_protection becomes a LIMIT at the last price plus (buy) or minus (sell) the band
    # and fills only inside it; in a gap it rests "open". The band Upstox picks for -1 is not
    # published: assumed 2%.
    auto_protection_pct: Decimal = Decimal("2")

    # API.md 8.4 (UDAPI1158, third-party), 9.2: plain MARKET orders (no market_protection, or
    # 0) are refused where protection is required.
    require_market_protection: bool = True

    # API.md 4.2, 5.7, 13: partial fills, "filled_quantity grows over several updates". A
    # matched order fills in this many parts, part_interval_s apart (assumed). A part filled
    # order stays "open" with its pending quantity (reported for a comparable broker; assumed).
    fill_parts: int = 1
    part_interval_s: float = 0.05

    # API.md 9.2, 8.4 (UDAPI1154, HTTP 403 reported, third-party): order writes (place, modify,
    # cancel) from an IP other than the registered static IP are refused. False: refuse them.
    static_ip_registered: bool = True

    # API.md 13 (2026 community reports, third-party): order APIs answer 401 UDAPI100050 while
    # read APIs accept the same token.
    order_api_unauthorized: bool = False

    # API.md 3.4: connections per user (normal plan 2) and keys per mode; what Upstox does
    # beyond them is unconfirmed (API.md 3.8, 12). Assumed: a further websocket handshake is
    # refused (HTTP 403) and keys over the per-user cap get no data.
    max_feed_connections: int = 2
    max_feed_keys_per_mode: int = 2000

    # API.md 8.3: standard APIs allow 50 requests a second and 500 a minute per API and user;
    # more answer 429 UDAPI10005. Which paths count as one API is assumed (the first two path
    # segments after the version).
    rate_limit_per_second: int = 50
    rate_limit_per_minute: int = 500

    @classmethod
    def realistic(cls) -> Scenario:
        """What the documentation describes (the default)."""
        return cls()

    @classmethod
    def instant(cls) -> Scenario:
        """Orders match and reach the book at once: for tests of something else than timing
        (wire formats, error mapping). Not what Upstox does."""
        return cls(name="instant", match_delay_s=0.0, book_delay_s=0.0)

    @classmethod
    def slow_book(cls, book_delay_s: float = 3.0) -> Scenario:
        """The order book lags the HFT host by seconds (a busy morning): a tag look-up made
        right after a lost answer misses the order."""
        return replace(cls(), name="slow_book", book_delay_s=book_delay_s)

    @classmethod
    def partial_fills(cls, parts: int = 3) -> Scenario:
        """Every matched order fills in ``parts`` updates."""
        return replace(cls(), name="partial_fills", fill_parts=parts)

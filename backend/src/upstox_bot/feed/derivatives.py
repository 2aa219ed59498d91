"""Ticks of futures and options derived from their underlying's ticks, for the simulated market.

The simulated market plays stocks only. When the bot trades a stock's future or option, the
contracts it holds or is entering (the watched ones) need ticks of their own: their exits run on
them and the paper broker fills on them. `DerivativeTicks` wraps a tick stream of stocks and,
after each stock tick, yields one tick per watched contract of that stock, priced from it
(`ChainPricer`: cost of carry for a future, Black-Scholes for an option, the `options.chain`
formulas). Option ticks carry IV and greeks (`options.tick_greeks`).

The output is a pure function of the input ticks and of the watched set, and the watched set is
read once per distinct timestamp (before the first tick of that millisecond): a contract that
starts or stops being watched while the ticks of one millisecond play takes effect from the next
millisecond. That is what makes a replay after a restart exact: the watched set as it was can be
rebuilt from when entries were made and positions closed (`WatchSpan`), with no sequence numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass

from upstox_bot.domain import IST, Instrument, InstrumentKind, Tick, ms_to_datetime
from upstox_bot.options.chain import future_price_paise, option_price_paise, years_to_expiry
from upstox_bot.options.selection import contract_expiry
from upstox_bot.options.tick_greeks import greeks_for_tick
from upstox_bot.trading.routing import ContractBook

DEFAULT_SIGMA = 0.30  # annual volatility the simulated options are priced at
DEFAULT_RATE = 0.07  # risk-free rate and cost of carry (continuously compounded)


class ChainPricer:
    """Prices a contract from its underlying: a future at cost of carry, an option by
    Black-Scholes at one volatility; the stock itself at its own price."""

    def __init__(
        self, *, sigma: float = DEFAULT_SIGMA, rate: float = DEFAULT_RATE, carry_rate: float = 0.07
    ) -> None:
        """Args:
        sigma: annual volatility of every underlying (0.3 = 30 %).
        rate: risk-free rate for options.
        carry_rate: cost of carry for futures.

        Raises:
            ValueError: a non-positive sigma.
        """
        if not sigma > 0:
            raise ValueError("sigma must be positive")
        self.sigma = sigma
        self.rate = rate
        self.carry_rate = carry_rate

    def price_paise(self, contract: Instrument, *, spot_paise: int, at_ms: int) -> int:
        """The contract's price (paise per unit) with the underlying at `spot_paise`, at `at_ms`
        (epoch ms UTC), on its tick grid."""
        if contract.kind is InstrumentKind.FUTURE:
            return future_price_paise(
                spot_paise,
                ms_to_datetime(at_ms).astimezone(IST).date(),
                contract_expiry(contract),
                carry_rate=self.carry_rate,
                tick_size_paise=contract.tick_size_paise,
            )
        if contract.kind is InstrumentKind.OPTION:
            return option_price_paise(contract, spot_paise, at_ms, sigma=self.sigma, r=self.rate)
        return spot_paise


@dataclass(frozen=True, slots=True)
class WatchSpan:
    """A contract watched for stock ticks with from_ms < ts_ms <= until_ms (epoch ms UTC).

    from_ms is when its entry was decided; until_ms when its position closed or its entry was
    refused by the broker (None: still watched).
    """

    instrument_key: str
    from_ms: int
    until_ms: int | None = None

    def covers(self, ts_ms: int) -> bool:
        return self.from_ms < ts_ms and (self.until_ms is None or ts_ms <= self.until_ms)


class DerivativeTicks:
    """Wraps a stock tick stream, adding ticks of the watched contracts priced from it."""

    def __init__(
        self,
        book: ContractBook,
        pricer: ChainPricer,
        watched: Callable[[], Collection[str]],
        *,
        history: Iterable[WatchSpan] = (),
        history_until_ms: int | None = None,
    ) -> None:
        """Set up the wrapper.

        Args:
            book: the contracts and their stocks.
            pricer: prices contracts from their stock (and gives the options' volatility).
            watched: the contract keys watched now (held, or with an entry on its way); read
                once per distinct tick timestamp.
            history: how the watched set was before a restart, for ticks up to
                `history_until_ms`.
            history_until_ms: the market time of the restart point; ticks with a later
                timestamp use `watched`. None: no history.
        """
        self.book = book
        self.pricer = pricer
        self._watched = watched
        self._history = tuple(history)
        self._history_until_ms = history_until_ms
        self._volumes: dict[str, int] = {}
        self._spot: dict[str, int] = {}

    def watched_at(self, ts_ms: int) -> tuple[str, ...]:
        """The watched contract keys for stock ticks at `ts_ms`, sorted."""
        if self._history_until_ms is not None and ts_ms <= self._history_until_ms:
            keys: Collection[str] = {s.instrument_key for s in self._history if s.covers(ts_ms)}
        else:
            keys = self._watched()
        return tuple(sorted(keys))

    def wrap(self, ticks: Iterable[Tick]) -> Iterator[Tick]:
        """Yield one tick per watched contract of each tick's stock, then the stock's tick.

        The contracts' ticks come first: they are that same trade seen in the contract, so an
        order placed while the stock's trade is handled (an exit on a candle close) fills at
        the next trade, as an order on the stock itself does, never at a tick derived from the
        trade that caused it. A tick of a known option (from a real feed) passes through with
        its missing IV and greeks filled in.
        """
        book = self.book
        spot = self._spot
        last_ms: int | None = None
        last_keys: tuple[str, ...] = ()
        by_underlying: dict[str, list[Instrument]] = {}
        for tick in ticks:
            if tick.ts_ms != last_ms:
                last_ms = tick.ts_ms
                keys = self.watched_at(tick.ts_ms)
                if keys != last_keys:
                    last_keys = keys
                    by_underlying = self._group(keys)
            key = tick.instrument_key
            contract = book.instrument_or_none(key)
            if contract is not None:
                yield self._with_greeks(tick, contract)
                continue
            spot[key] = tick.ltp_paise
            for watched in by_underlying.get(key, ()):
                yield self.contract_tick(watched, tick)
            yield tick

    def contract_tick(self, contract: Instrument, underlying_tick: Tick) -> Tick:
        """The tick of `contract` priced from one tick of its stock (same timestamp)."""
        key = contract.instrument_key
        price = self.pricer.price_paise(
            contract, spot_paise=underlying_tick.ltp_paise, at_ms=underlying_tick.ts_ms
        )
        step = max(1, contract.tick_size_paise)
        lot = contract.lot_size
        volume = self._volumes.get(key, 0) + lot
        self._volumes[key] = volume
        tick = Tick(
            instrument_key=key,
            ts_ms=underlying_tick.ts_ms,
            ltp_paise=price,
            ltq=lot,
            volume=volume,
            bid_paise=max(step, price - step),
            ask_paise=price + step,
            bid_qty=lot,
            ask_qty=lot,
            iv=self.pricer.sigma if contract.kind is InstrumentKind.OPTION else None,
        )
        return self._with_greeks(tick, contract)

    def _with_greeks(self, tick: Tick, contract: Instrument) -> Tick:
        if contract.kind is not InstrumentKind.OPTION:
            return tick
        spot = self._spot.get(self.book.underlying_key(contract.instrument_key), 0)
        if spot <= 0:
            return tick
        t = years_to_expiry(contract_expiry(contract), tick.ts_ms)
        return greeks_for_tick(tick, contract, spot_paise=spot, t=t, r=self.pricer.rate)

    def _group(self, keys: Sequence[str]) -> dict[str, list[Instrument]]:
        grouped: dict[str, list[Instrument]] = {}
        for key in keys:
            contract = self.book.instrument_or_none(key)
            if contract is not None:
                grouped.setdefault(self.book.underlying_key(key), []).append(contract)
        return grouped

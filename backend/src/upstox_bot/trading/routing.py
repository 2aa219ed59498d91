"""What the engine trades for a signal on a stock: the stock itself, its future or an option.

Strategies watch the underlying stocks; a router turns an entry signal on a stock into the
instrument to trade (with its expected price and the position's direction) and maps a held
contract back to its stock and to the signal direction it stands for, so that an exit signal on
the stock closes the right contract. `StockRouter` trades the stock itself (the default);
`ContractBook` trades its current future or at-the-money option (options/selection.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Protocol

from upstox_bot.clock import NseCalendar
from upstox_bot.domain import (
    Direction,
    Instrument,
    InstrumentKind,
    OptionType,
    RiskRule,
    reduce_to_fields,
)
from upstox_bot.options.selection import contract_expiry, expiry_exit_date, select_contract


class ContractPricer(Protocol):
    """The price a contract would trade at now, derived from its underlying."""

    def price_paise(self, contract: Instrument, *, spot_paise: int, at_ms: int) -> int:
        """Expected trade price (paise per unit) of `contract` with the underlying at
        `spot_paise`, at `at_ms` (epoch ms UTC)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """The instrument to trade for an entry signal, or why there is none.

    Attributes:
        instrument: what to trade; None when nothing fits (`rule` and `reason` say why).
        direction: the position to take in it (an option is always bought: LONG).
        price_paise: its expected entry price per unit (the stock's last price, the future's
            price or the option's premium); 0 with no instrument or no price.
        reason: what was chosen and why, or why nothing was.
        rule: the risk rule of a refusal (NO_CONTRACT or NO_PRICE); None when routed.
        exit_date: the session on which a position in it is closed (None for the stock).
    """

    instrument: Instrument | None
    direction: Direction | None
    price_paise: int
    reason: str
    rule: RiskRule | None = None
    exit_date: date | None = None

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)


class InstrumentRouter(Protocol):
    """The engine's port for choosing and mapping traded instruments."""

    def route(
        self,
        underlying: Instrument,
        *,
        direction: Direction,
        spot_paise: int,
        at_ms: int,
        trading_date: date,
    ) -> Route:
        """Choose what to trade for an entry signal in `direction` on `underlying`."""
        ...

    def instrument_or_none(self, instrument_key: str) -> Instrument | None:
        """A traded contract by key; None for keys the router does not hold (the stocks)."""
        ...

    def underlying_key(self, instrument_key: str) -> str:
        """The stock a traded instrument is on (the stock's own key for the stock)."""
        ...

    def signal_direction(self, instrument_key: str, position_direction: Direction) -> Direction:
        """The signal direction a position stands for: a long put stands for a short signal."""
        ...

    def exit_date(self, instrument_key: str) -> date | None:
        """The session on which a position in the instrument must be closed; None: never."""
        ...


class StockRouter:
    """Trade the stock itself, in the signal's direction (TRADE_INSTRUMENT=equity)."""

    def route(
        self,
        underlying: Instrument,
        *,
        direction: Direction,
        spot_paise: int,
        at_ms: int,
        trading_date: date,
    ) -> Route:
        """The stock, at its last price (0 when it has none: the risk check refuses that)."""
        return Route(
            instrument=underlying,
            direction=direction,
            price_paise=spot_paise,
            reason=f"{underlying.trading_symbol} itself, intraday",
        )

    def instrument_or_none(self, instrument_key: str) -> Instrument | None:
        """None: the stock router holds no contracts."""
        return None

    def underlying_key(self, instrument_key: str) -> str:
        """The key itself."""
        return instrument_key

    def signal_direction(self, instrument_key: str, position_direction: Direction) -> Direction:
        """The position's own direction."""
        return position_direction

    def exit_date(self, instrument_key: str) -> date | None:
        """None: stock positions have no expiry."""
        return None


class ContractBook:
    """Trade each stock's current future or its at-the-money option, from a known chain.

    Holds the F&O contracts of the stocks (from the instrument master, or `options.chain`'s
    simulated chain), chooses one per signal with `options.selection.select_contract`, prices it
    with a `ContractPricer`, and maps contracts back to their stocks.
    """

    def __init__(
        self,
        underlyings: Iterable[Instrument],
        *,
        trade: InstrumentKind,
        calendar: NseCalendar,
        pricer: ContractPricer,
        option_min_days_to_expiry: int,
        expiry_exit_sessions: int,
        contracts: Iterable[Instrument] = (),
    ) -> None:
        """Set up the book.

        Args:
            underlyings: the stocks signals come on (their trading symbols name the contracts'
                `underlying_symbol`).
            trade: FUTURE or OPTION (TRADE_INSTRUMENT).
            calendar: the NSE calendar (expiry exit dates skip holidays).
            pricer: prices a contract from its underlying.
            option_min_days_to_expiry: OPTION_MIN_DAYS_TO_EXPIRY.
            expiry_exit_sessions: EXPIRY_EXIT_SESSIONS (at least 1).
            contracts: the first contracts; more come with `add_contracts`.

        Raises:
            ValueError: `trade` is EQUITY (use StockRouter) or expiry_exit_sessions is below 1.
        """
        if trade is InstrumentKind.EQUITY:
            raise ValueError("ContractBook trades futures or options; StockRouter trades stocks")
        if expiry_exit_sessions < 1:
            raise ValueError("expiry_exit_sessions must be at least 1")
        self.trade = trade
        self.calendar = calendar
        self.pricer = pricer
        self.option_min_days_to_expiry = option_min_days_to_expiry
        self.expiry_exit_sessions = expiry_exit_sessions
        self._underlying_by_symbol = {u.trading_symbol: u.instrument_key for u in underlyings}
        self._contracts: dict[str, Instrument] = {}
        self._underlying_of: dict[str, str] = {}
        self._by_underlying: dict[str, list[Instrument]] = {}
        self._exit_dates: dict[str, date] = {}
        self.add_contracts(contracts)

    def add_contracts(self, contracts: Iterable[Instrument]) -> int:
        """Learn more contracts (a new session's chain); known keys and contracts of other stocks
        are skipped. Returns how many were added.

        Raises:
            ValueError: a future or option without an expiry date.
        """
        added = 0
        for contract in contracts:
            key = contract.instrument_key
            if key in self._contracts or contract.kind is InstrumentKind.EQUITY:
                continue
            underlying = self._underlying_by_symbol.get(contract.underlying_symbol or "")
            if underlying is None:
                continue
            self._exit_dates[key] = expiry_exit_date(
                contract_expiry(contract), self.expiry_exit_sessions, self.calendar
            )
            self._contracts[key] = contract
            self._underlying_of[key] = underlying
            self._by_underlying.setdefault(underlying, []).append(contract)
            added += 1
        return added

    def contracts_of(self, underlying_key: str) -> Sequence[Instrument]:
        """The known contracts of one stock (futures and options), in the order learnt."""
        return self._by_underlying.get(underlying_key, ())

    def route(
        self,
        underlying: Instrument,
        *,
        direction: Direction,
        spot_paise: int,
        at_ms: int,
        trading_date: date,
    ) -> Route:
        """Choose the future or at-the-money option for a signal and price it.

        Returns:
            The contract, the position direction (LONG for an option) and its price; or no
            instrument with rule NO_PRICE (the stock has no last price) or NO_CONTRACT.
        """
        if spot_paise <= 0:
            return Route(
                instrument=None,
                direction=None,
                price_paise=0,
                reason=f"no last price for {underlying.trading_symbol} to choose a contract",
                rule=RiskRule.NO_PRICE,
            )
        choice = select_contract(
            underlying=underlying,
            contracts=self.contracts_of(underlying.instrument_key),
            spot_paise=spot_paise,
            direction=direction,
            trading_date=trading_date,
            calendar=self.calendar,
            trade=self.trade,
            option_min_days_to_expiry=self.option_min_days_to_expiry,
            expiry_exit_sessions=self.expiry_exit_sessions,
        )
        if choice.instrument is None or choice.direction is None:
            return Route(
                instrument=None,
                direction=None,
                price_paise=0,
                reason=choice.reason,
                rule=RiskRule.NO_CONTRACT,
            )
        price = self.pricer.price_paise(choice.instrument, spot_paise=spot_paise, at_ms=at_ms)
        return Route(
            instrument=choice.instrument,
            direction=choice.direction,
            price_paise=price,
            reason=choice.reason,
            exit_date=choice.exit_date,
        )

    def instrument_or_none(self, instrument_key: str) -> Instrument | None:
        """The contract with that key, or None."""
        return self._contracts.get(instrument_key)

    def underlying_key(self, instrument_key: str) -> str:
        """The stock of a contract; the key itself for anything else."""
        return self._underlying_of.get(instrument_key, instrument_key)

    def signal_direction(self, instrument_key: str, position_direction: Direction) -> Direction:
        """A put position stands for the opposite signal (a bought put is a short view)."""
        contract = self._contracts.get(instrument_key)
        if contract is not None and contract.option_type is OptionType.PUT:
            return Direction.SHORT if position_direction is Direction.LONG else Direction.LONG
        return position_direction

    def exit_date(self, instrument_key: str) -> date | None:
        """The contract's expiry exit date (EXPIRY_EXIT_SESSIONS before expiry), or None."""
        return self._exit_dates.get(instrument_key)

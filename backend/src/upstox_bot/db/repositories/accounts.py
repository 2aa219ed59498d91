"""Accounts and their daily snapshots (domain.AccountSnapshot)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from upstox_bot.db.models import AccountDayRow, AccountMode, AccountRow
from upstox_bot.db.repositories._writes import execute_count, insert_ignore, upsert
from upstox_bot.domain import IST, AccountSnapshot
from upstox_bot.errors import NotFound

SNAPSHOT_COLUMNS = (
    "capital_paise",
    "realised_pnl_paise",
    "unrealised_pnl_paise",
    "charges_paise",
    "open_positions",
    "trades",
    "orders",
    "loss_limit_paise",
    "loss_limit_hit",
    "kill_switch",
    "updated_at",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountRecord:
    """A trading account and the switches a person controls."""

    name: str
    mode: AccountMode
    starting_capital_paise: int
    kill_switch: bool
    kill_switch_reason: str | None
    live_trading_enabled: bool
    paper_started_at: datetime | None
    created_at: datetime
    updated_at: datetime


def _record(row: AccountRow) -> AccountRecord:
    return AccountRecord(
        name=row.name,
        mode=AccountMode(row.mode),
        starting_capital_paise=row.starting_capital_paise,
        kill_switch=row.kill_switch,
        kill_switch_reason=row.kill_switch_reason,
        live_trading_enabled=row.live_trading_enabled,
        paper_started_at=row.paper_started_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def snapshot_values(snapshot: AccountSnapshot, account: str, at: datetime) -> dict[str, Any]:
    """Column values of an account_days row for `snapshot`, written at `at`."""
    return {
        "account": account,
        "trading_date": date.fromisoformat(snapshot.trading_date),
        "capital_paise": snapshot.capital_paise,
        "realised_pnl_paise": snapshot.realised_pnl_paise,
        "unrealised_pnl_paise": snapshot.unrealised_pnl_paise,
        "charges_paise": snapshot.charges_paise,
        "open_positions": snapshot.open_positions,
        "trades": snapshot.trades,
        "orders": snapshot.orders,
        "loss_limit_paise": snapshot.loss_limit_paise,
        "loss_limit_hit": snapshot.loss_limit_hit,
        "kill_switch": snapshot.kill_switch,
        "updated_at": at,
    }


def snapshot_from_row(row: AccountDayRow) -> AccountSnapshot:
    """The domain snapshot stored in `row`."""
    return AccountSnapshot(
        trading_date=row.trading_date.isoformat(),
        capital_paise=row.capital_paise,
        realised_pnl_paise=row.realised_pnl_paise,
        unrealised_pnl_paise=row.unrealised_pnl_paise,
        charges_paise=row.charges_paise,
        open_positions=row.open_positions,
        trades=row.trades,
        orders=row.orders,
        loss_limit_paise=row.loss_limit_paise,
        loss_limit_hit=row.loss_limit_hit,
        kill_switch=row.kill_switch,
    )


class AccountRepository:
    """Reads and changes accounts; the daily snapshots are written by the journal."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def get_or_none(self, name: str) -> AccountRecord | None:
        """The account called `name`, or None."""
        row = self._session.scalar(
            select(AccountRow)
            .where(AccountRow.name == name)
            .execution_options(populate_existing=True)
        )
        return _record(row) if row is not None else None

    def get(self, name: str) -> AccountRecord:
        """The account called `name`.

        Raises:
            NotFound: there is no such account.
        """
        record = self.get_or_none(name)
        if record is None:
            raise NotFound(f"account {name!r} not found")
        return record

    def get_or_create(
        self, name: str, *, mode: AccountMode, starting_capital_paise: int, at: datetime
    ) -> AccountRecord:
        """The account called `name`, created with these values if it does not exist yet.

        An existing account keeps its stored mode and capital. A new paper account starts
        its paper history at `at`.
        """
        insert_ignore(
            self._session,
            AccountRow,
            {
                "name": name,
                "mode": mode.value,
                "starting_capital_paise": starting_capital_paise,
                "kill_switch": False,
                "kill_switch_reason": None,
                "live_trading_enabled": False,
                "paper_started_at": at if mode is AccountMode.PAPER else None,
                "created_at": at,
                "updated_at": at,
            },
            conflict=["name"],
        )
        return self.get(name)

    def set_kill_switch(
        self, name: str, *, on: bool, reason: str | None, at: datetime
    ) -> AccountRecord:
        """Turn the account's kill switch on (with a reason) or off.

        Raises:
            NotFound: there is no such account.
        """
        return self._update(name, at, kill_switch=on, kill_switch_reason=reason if on else None)

    def set_live_trading(self, name: str, *, enabled: bool, at: datetime) -> AccountRecord:
        """Set the account's live-trading switch (the policy that allows it lives in risk/).

        Raises:
            NotFound: there is no such account.
        """
        return self._update(name, at, live_trading_enabled=enabled)

    def set_mode(self, name: str, *, mode: AccountMode, at: datetime) -> AccountRecord:
        """Switch the account between paper and live.

        Raises:
            NotFound: there is no such account.
        """
        current = self.get(name)
        values: dict[str, Any] = {"mode": mode.value}
        if mode is AccountMode.PAPER and current.paper_started_at is None:
            values["paper_started_at"] = at
        return self._update(name, at, **values)

    def latest_snapshot(
        self, name: str, on_or_before: date | None = None
    ) -> AccountSnapshot | None:
        """The newest daily snapshot of the account, up to a trading date if given."""
        stmt = select(AccountDayRow).where(AccountDayRow.account == name)
        if on_or_before is not None:
            stmt = stmt.where(AccountDayRow.trading_date <= on_or_before)
        row = self._session.scalar(
            stmt.order_by(AccountDayRow.trading_date.desc())
            .limit(1)
            .execution_options(populate_existing=True)
        )
        return snapshot_from_row(row) if row is not None else None

    def snapshots(self, name: str, start_date: date, end_date: date) -> list[AccountSnapshot]:
        """The daily snapshots from `start_date` to `end_date` (inclusive), oldest first."""
        rows = self._session.scalars(
            select(AccountDayRow)
            .where(
                AccountDayRow.account == name,
                AccountDayRow.trading_date >= start_date,
                AccountDayRow.trading_date <= end_date,
            )
            .order_by(AccountDayRow.trading_date)
            .execution_options(populate_existing=True)
        )
        return [snapshot_from_row(row) for row in rows]

    def trading_days(self, name: str, since: date | None = None) -> int:
        """How many trading dates have a snapshot (e.g. days of paper history since a date)."""
        stmt = select(func.count()).select_from(AccountDayRow).where(AccountDayRow.account == name)
        if since is not None:
            stmt = stmt.where(AccountDayRow.trading_date >= since)
        return self._session.scalar(stmt) or 0

    def paper_days(self, name: str) -> int:
        """Trading days of paper history of the account (snapshots since its paper start;
        0 for an account that does not exist yet)."""
        record = self.get_or_none(name)
        if record is None:
            return 0
        since = record.paper_started_at.astimezone(IST).date() if record.paper_started_at else None
        return self.trading_days(name, since=since)

    def save_snapshot(self, name: str, snapshot: AccountSnapshot, at: datetime) -> None:
        """Insert or replace the account's snapshot for its trading date."""
        upsert(
            self._session,
            AccountDayRow,
            snapshot_values(snapshot, name, at),
            conflict=["account", "trading_date"],
            update=SNAPSHOT_COLUMNS,
        )

    def _update(self, name: str, at: datetime, **values: Any) -> AccountRecord:
        touched = execute_count(
            self._session,
            update(AccountRow)
            .where(AccountRow.name == name)
            .values(updated_at=at, **values)
            .execution_options(synchronize_session=False),
        )
        if touched == 0:
            raise NotFound(f"account {name!r} not found")
        return self.get(name)

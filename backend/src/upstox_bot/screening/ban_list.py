"""The NSE F&O ban list: stocks in the ban period take no new positions.

NSE publishes the list daily (commonly ``https://nsearchives.nseindia.com/content/fo/fo_secban.csv``;
the URL is not confirmed by Upstox, which has no API for it). Its usual shape is a title line
naming the trade date, then one ``<serial>,<SYMBOL>`` line per security::

    Securities in Ban For Trade Date 24-NOV-2026:
    1,IDEA
    2,SAIL

:func:`parse_ban_list` also reads a plain list (one symbol per line, or comma separated) so that
a trader can keep the file by hand. Plain Python, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime

_DATE = re.compile(r"(\d{1,2})[-/ ]([A-Za-z]{3}|\d{1,2})[-/ ](\d{4})")
_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9&\-]{0,29}$")
_TITLE = re.compile(r"\bban\b|\bdate\b", re.IGNORECASE)
_NOT_SYMBOLS = frozenset({"SYMBOL", "SR", "SRNO", "SERIAL", "NO", "SECURITY", "NIL", "NONE"})


@dataclass(frozen=True, slots=True, kw_only=True)
class BanList:
    """Symbols in the F&O ban period, and the trade date the list says it is for (if any)."""

    symbols: frozenset[str]
    trade_date: date | None = None

    def is_stale(self, trading_date: date) -> bool:
        """True when the list names a trade date other than ``trading_date``.

        A list without a date is taken as current (a hand-kept file).
        """
        return self.trade_date is not None and self.trade_date != trading_date


def _parse_date(line: str) -> date | None:
    match = _DATE.search(line)
    if match is None:
        return None
    day, month, year = match.groups()
    text = f"{day}-{month.title()}-{year}"
    fmt = "%d-%b-%Y" if month.isalpha() else "%d-%m-%Y"
    try:
        return datetime.strptime(text, fmt).date()  # noqa: DTZ007 - a calendar date, no time
    except ValueError:
        return None


def parse_ban_list(text: str) -> BanList:
    """Read a ban-list file (NSE's ``fo_secban.csv`` or a plain list of symbols).

    Lines that name the trade date ("Securities in Ban For Trade Date 24-NOV-2026:") give the
    date; every other non-empty line contributes its last comma-separated field when that looks
    like an NSE symbol (serial numbers and headers are skipped).
    """
    symbols: set[str] = set()
    trade_date: date | None = None
    for raw in text.splitlines():
        line = raw.strip().lstrip("\ufeff")
        if not line or line.startswith("#"):
            continue
        if _TITLE.search(line):
            trade_date = trade_date or _parse_date(line)
            continue
        fields = line.split(",")
        for field in fields[-1:] if _serial(line) else fields:
            candidate = field.strip().strip('"').upper()
            if (
                _SYMBOL.match(candidate)
                and not candidate.isdigit()
                and candidate not in _NOT_SYMBOLS
            ):
                symbols.add(candidate)
    return BanList(symbols=frozenset(symbols), trade_date=trade_date)


def _serial(line: str) -> bool:
    # "1,IDEA" (NSE's shape): only the last field is the symbol.
    return "," in line and line.split(",", 1)[0].strip().strip('"').isdigit()

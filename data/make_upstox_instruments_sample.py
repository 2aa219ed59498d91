"""Build the sample Upstox instrument master shipped with upstox-bot (run: python make_...py).

Writes ``backend/src/upstox_bot/data/upstox_instruments_sample.json.gz``: a gzip of one JSON
array of flat records shaped exactly like Upstox's ``NSE.json.gz`` (field names, types, key
formats, ``tick_size`` in paise, ``expiry`` in epoch ms of 23:59:59 IST). It holds:

- the 92 F&O stocks of ``fno_universe.csv``: their NSE_EQ row, three monthly futures and, on the
  near month, the at-the-money strike and one strike either side as CE and PE;
- the index rows of NIFTY, BANKNIFTY, FINNIFTY, MIDCPNIFTY, NIFTYNXT50, India VIX and Nifty IT,
  with three monthly futures of the five F&O indices and near-month options on them
  (``underlying_type`` ``INDEX``), plus weekly NIFTY options;
- four cash-only stocks (no derivatives), one of them in the BE series.

Symbols, names, ISINs and lot sizes of the F&O stocks are real (from ``fno_universe.csv``);
exchange tokens, freeze quantities and the cash-only stocks are invented. The output is
deterministic (gzip mtime 0), so re-running it gives the same bytes.
"""

from __future__ import annotations

import csv
import gzip
import json
import sys
from datetime import date, datetime, time
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

IST = ZoneInfo("Asia/Kolkata")
ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DATA = ROOT / "backend" / "src" / "upstox_bot" / "data"
OUTPUT = PACKAGE_DATA / "upstox_instruments_sample.json.gz"
MONTHLY_EXPIRIES = (
    date(2026, 12, 29),
    date(2027, 1, 25),  # the last Tuesday, 26 January, is Republic Day: the Monday before
    date(2027, 2, 23),
)  # last Tuesdays, moved to the trading day before a holiday
WEEKLY_NIFTY_EXPIRIES = (date(2026, 12, 1), date(2026, 12, 8))

# (underlying symbol, index name as Upstox keys it, exchange token, lot, freeze qty, level)
INDICES: tuple[tuple[str, str, str, int | None, float, Decimal], ...] = (
    ("NIFTY", "Nifty 50", "26000", 75, 1800.0, Decimal(26050)),
    ("BANKNIFTY", "Nifty Bank", "26009", 35, 600.0, Decimal(58400)),
    ("FINNIFTY", "Nifty Fin Service", "26037", 65, 1800.0, Decimal(27300)),
    ("MIDCPNIFTY", "NIFTY MID SELECT", "26074", 140, 2800.0, Decimal(13450)),
    ("NIFTYNXT50", "Nifty Next 50", "26013", 25, 600.0, Decimal(70100)),
    ("INDIA VIX", "India VIX", "26017", None, 0.0, Decimal("12.4")),
    ("NIFTY IT", "Nifty IT", "26008", None, 0.0, Decimal(37200)),
)
CASH_ONLY = (  # invented: symbol, name, ISIN, token, series, tick paise
    ("SAMPLEAGRO", "SAMPLE AGRO PRODUCTS LTD", "INE000S01011", "90001", "EQ", 1.0),
    ("SAMPLEPHARM", "SAMPLE PHARMA LTD", "INE000S01029", "90002", "EQ", 5.0),
    ("SAMPLETEXT", "SAMPLE TEXTILES LTD", "INE000S01037", "90003", "EQ", 1.0),
    ("SAMPLEINFRA", "SAMPLE INFRA PROJECTS LTD", "INE000S01045", "90004", "BE", 1.0),
)


def expiry_ms(day: date) -> int:
    """Epoch ms of 23:59:59 IST on ``day``, as the instrument file writes expiries."""
    return int(datetime.combine(day, time(23, 59, 59), tzinfo=IST).timestamp()) * 1000


def contract_date(day: date) -> str:
    return day.strftime("%d %b %y").upper()


def strike_step(price: Decimal) -> Decimal:
    for step in (Decimal("2.5"), Decimal(5), Decimal(10), Decimal(20), Decimal(50)):
        if price / step <= 40:
            return step
    return Decimal(100)


def number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


class Builder:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self._token = 50000

    def token(self) -> str:
        self._token += 1
        return str(self._token)

    def derivative(
        self,
        *,
        symbol: str,
        name: str,
        underlying_key: str,
        underlying_type: str,
        expiry: date,
        kind: str,
        lot: int,
        freeze: float,
        tick: float,
        strike: Decimal = Decimal(0),
        weekly: bool = False,
    ) -> None:
        token = self.token()
        if kind == "FUT":
            trading_symbol = f"{symbol} FUT {contract_date(expiry)}"
        else:
            trading_symbol = f"{symbol} {number(strike)} {kind} {contract_date(expiry)}"
        self.records.append(
            {
                "weekly": weekly,
                "segment": "NSE_FO",
                "name": name,
                "exchange": "NSE",
                "expiry": expiry_ms(expiry),
                "instrument_type": kind,
                "asset_symbol": symbol,
                "underlying_symbol": symbol,
                "instrument_key": f"NSE_FO|{token}",
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

    def options(
        self,
        *,
        symbol: str,
        name: str,
        underlying_key: str,
        underlying_type: str,
        expiry: date,
        lot: int,
        freeze: float,
        spot: Decimal,
        weekly: bool = False,
    ) -> None:
        step = strike_step(spot)
        atm = (spot / step).to_integral_value(rounding=ROUND_HALF_UP) * step
        for offset in (-1, 0, 1):
            for kind in ("CE", "PE"):
                self.derivative(
                    symbol=symbol,
                    name=name,
                    underlying_key=underlying_key,
                    underlying_type=underlying_type,
                    expiry=expiry,
                    kind=kind,
                    lot=lot,
                    freeze=freeze,
                    tick=5.0,
                    strike=atm + offset * step,
                    weekly=weekly,
                )


def equity(
    symbol: str, name: str, isin: str, token: str, tick: float, series: str = "EQ"
) -> dict[str, Any]:
    return {
        "segment": "NSE_EQ",
        "name": name,
        "exchange": "NSE",
        "isin": isin,
        "instrument_type": series,
        "instrument_key": f"NSE_EQ|{isin}",
        "lot_size": 1,
        "freeze_quantity": 100000.0,
        "exchange_token": token,
        "tick_size": tick,
        "trading_symbol": symbol,
        "short_name": name.title(),
        "security_type": "NORMAL",
    }


def build() -> list[dict[str, Any]]:
    builder = Builder()
    with (PACKAGE_DATA / "fno_universe.csv").open(
        encoding="utf-8", newline=""
    ) as handle:
        stocks = list(csv.DictReader(handle))
    for n, row in enumerate(stocks):
        tick = float(row["tick_size_paise"])
        builder.records.append(
            equity(
                row["trading_symbol"],
                row["name"].upper(),
                row["isin"],
                str(10001 + n),
                tick,
            )
        )
    for row in stocks:
        symbol, name, key = (
            row["trading_symbol"],
            row["name"].upper(),
            row["instrument_key"],
        )
        lot = int(row["lot_size"])
        freeze = float(lot * 20)
        tick = float(row["tick_size_paise"])
        spot = Decimal(row["approx_price_paise"]) / 100
        for expiry in MONTHLY_EXPIRIES:
            builder.derivative(
                symbol=symbol,
                name=name,
                underlying_key=key,
                underlying_type="EQUITY",
                expiry=expiry,
                kind="FUT",
                lot=lot,
                freeze=freeze,
                tick=tick,
            )
        builder.options(
            symbol=symbol,
            name=name,
            underlying_key=key,
            underlying_type="EQUITY",
            expiry=MONTHLY_EXPIRIES[0],
            lot=lot,
            freeze=freeze,
            spot=spot,
        )
    for symbol, index_name, token, lot, freeze, level in INDICES:
        key = f"NSE_INDEX|{index_name}"
        builder.records.append(
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
        if lot is None:
            continue
        for expiry in MONTHLY_EXPIRIES:
            builder.derivative(
                symbol=symbol,
                name=symbol,
                underlying_key=key,
                underlying_type="INDEX",
                expiry=expiry,
                kind="FUT",
                lot=lot,
                freeze=freeze,
                tick=10.0,
            )
        builder.options(
            symbol=symbol,
            name=symbol,
            underlying_key=key,
            underlying_type="INDEX",
            expiry=MONTHLY_EXPIRIES[0],
            lot=lot,
            freeze=freeze,
            spot=level,
        )
        if symbol == "NIFTY":
            for expiry in WEEKLY_NIFTY_EXPIRIES:
                builder.options(
                    symbol=symbol,
                    name=symbol,
                    underlying_key=key,
                    underlying_type="INDEX",
                    expiry=expiry,
                    lot=lot,
                    freeze=freeze,
                    spot=level,
                    weekly=True,
                )
    for symbol, name, isin, token, series, tick in CASH_ONLY:
        builder.records.append(equity(symbol, name, isin, token, tick, series))
    return builder.records


def main() -> None:
    records = build()
    payload = json.dumps(records, separators=(",", ":")).encode("utf-8")
    OUTPUT.write_bytes(gzip.compress(payload, compresslevel=9, mtime=0))
    sys.stdout.write(
        f"{OUTPUT.name}: {len(records)} records, near month {MONTHLY_EXPIRIES[0]}\n"
    )


if __name__ == "__main__":
    main()

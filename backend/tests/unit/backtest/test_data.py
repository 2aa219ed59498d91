"""Reading bars: columns, time zones, daily rows, folders, and errors that name the place."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from tests.support.factories import ist_ms
from upstox_bot.backtest.data import DataError, load_bars, parse_paise, write_csv
from upstox_bot.feed.replay import DAILY_INTERVAL_S


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_columns_are_case_insensitive_extra_ignored_naive_is_ist(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "RELIANCE.csv",
        "Symbol,DateTime,Open,HIGH,low,Close,Volume,OI\n"
        "x,2026-11-25 09:15:00,1300.5,1302,1299.95,1301,1000,7\n"
        "x,2026-11-25T09:20:00+05:30,1301,1303,1300,1302.25,900,7\n",
    )
    data = load_bars(path)
    (series,) = data.series
    assert series.instrument.instrument_key == "NSE_EQ|INE002A01018"  # known F&O stock
    assert series.instrument.lot_size == 1
    assert data.interval_s == 300
    assert series.start_ms.tolist() == [ist_ms(9, 15), ist_ms(9, 20)]
    assert series.open.tolist() == [130_050, 130_100]
    assert series.low.tolist() == [129_995, 130_000]
    assert series.close.tolist() == [130_100, 130_225]
    assert series.volume.tolist() == [1000, 900]


def test_date_only_rows_are_daily_bars_at_the_session_open(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "ACME.csv",
        "date,open,high,low,close\n2026-11-24,10,11,9,10.5\n2026-11-25,10.5,11,10,11\n",
    )
    data = load_bars(path)
    assert data.interval_s == DAILY_INTERVAL_S
    assert data.series[0].start_ms.tolist() == [
        ist_ms(9, 15, day=date(2026, 11, 24)),
        ist_ms(9, 15, day=date(2026, 11, 25)),
    ]
    assert data.series[0].instrument.instrument_key == "ACME"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("timestamp,open,high,low,close\n2026-11-25 09:15:00,abc,1,1,1\n", "line 2 column open"),
        ("timestamp,open,high,low,close\nyesterday,1,1,1,1\n", "line 2 column timestamp"),
        ("timestamp,open,high,low\n", "missing column(s) close"),
        ("open,high,low,close\n", "no time column"),
        (
            "timestamp,open,high,low,close\n2026-11-25 09:15:00,10,9,8,10\n",
            "line 2 column high/low",
        ),
        (
            "timestamp,open,high,low,close\n2026-11-25 09:16:00,1,1,1,1\n"
            "2026-11-25 09:15:00,1,1,1,1\n",
            "line 3 column time",
        ),
        (
            "timestamp,open,high,low,close\n2026-11-25 09:15:00,1,1,1,1\n"
            "2026-11-25 09:20:00,1,1,1,1\n2026-11-25 09:27:00,1,1,1,1\n",
            "line 4 column time: a 5-minute bar",
        ),
    ],
)
def test_bad_input_names_file_line_and_column(tmp_path: Path, body: str, message: str) -> None:
    path = _write(tmp_path / "BAD.csv", body)
    with pytest.raises(DataError) as error:
        load_bars(path)
    assert str(path) in str(error.value)
    assert message in str(error.value)


def test_folder_is_one_symbol_per_file_and_symbols_filter(tmp_path: Path) -> None:
    row = (
        "timestamp,open,high,low,close\n2026-11-25 09:15:00,1,1,1,1\n2026-11-25 15:30:00,1,1,1,1\n"
    )
    _write(tmp_path / "AAA.csv", row)
    _write(tmp_path / "BBB.csv", row)
    data = load_bars(tmp_path)
    assert [s.instrument.trading_symbol for s in data.series] == ["AAA", "BBB"]
    assert data.skipped_bars == 2  # 15:30 is after the session
    assert [s.instrument.trading_symbol for s in load_bars(tmp_path, symbols=["bbb"]).series] == [
        "BBB"
    ]
    with pytest.raises(DataError, match="no data for CCC"):
        load_bars(tmp_path, symbols=["CCC"])


def test_written_csv_reads_back_the_same_bars(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "X.csv",
        "timestamp,open,high,low,close,volume\n2026-11-25 09:15:00,1.05,1.1,1,1.1,5\n",
    )
    series = load_bars(path).series[0]
    write_csv(tmp_path / "out" / "X.csv", series)
    again = load_bars(tmp_path / "out" / "X.csv").series[0]
    assert again.start_ms.tolist() == series.start_ms.tolist()
    assert again.close.tolist() == series.close.tolist() == [110]


def test_parse_paise_rounds_half_up_beyond_two_places() -> None:
    assert parse_paise("12.345") == 1235
    assert parse_paise("7") == 700
    assert parse_paise("0.5") == 50
    with pytest.raises(ValueError, match="x"):
        parse_paise("x")

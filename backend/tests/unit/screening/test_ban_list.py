"""The NSE F&O ban list file: NSE's shape and a hand-kept list."""

from __future__ import annotations

from datetime import date

from upstox_bot.screening.ban_list import parse_ban_list

NSE_FILE = """Securities in Ban For Trade Date 24-NOV-2026:
1,IDEA
2,SAIL
3,M&M
"""


def test_nse_file_gives_symbols_and_trade_date() -> None:
    ban = parse_ban_list(NSE_FILE)
    assert ban.symbols == {"IDEA", "SAIL", "M&M"}
    assert ban.trade_date == date(2026, 11, 24)
    assert not ban.is_stale(date(2026, 11, 24))
    assert ban.is_stale(date(2026, 11, 25))


def test_nse_file_with_no_securities_in_ban_is_empty() -> None:
    ban = parse_ban_list("Securities in Ban For Trade Date 25-NOV-2026: NIL\n")
    assert ban.symbols == frozenset()
    assert ban.trade_date == date(2026, 11, 25)


def test_hand_kept_list_one_per_line_or_commas_has_no_date() -> None:
    ban = parse_ban_list("# my list\nidea\n\nSAIL, RBLBANK\n")
    assert ban.symbols == {"IDEA", "SAIL", "RBLBANK"}
    assert ban.trade_date is None
    assert not ban.is_stale(date(2030, 1, 1))


def test_headers_and_serial_numbers_are_not_symbols() -> None:
    ban = parse_ban_list('"Sr No","Symbol"\n"1","IDEA"\n')
    assert ban.symbols == {"IDEA"}

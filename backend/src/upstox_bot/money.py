"""The one display format of money: rupees with Indian digit grouping, e.g. -₹1,23,456.78.

Every place that shows an amount to a person (the console, the CLI, alerts, risk refusals, the
dashboard's app.js) writes it this way: the sign first, then the rupee sign, then the amount
grouped in thousands, lakhs and crores, always with two decimals (paise). A plain number with
no grouping is for machines (the API's JSON and the CSV files), never for people.
"""

from __future__ import annotations

from decimal import Decimal

RUPEE = "₹"


def _grouped(whole: str) -> str:
    """Digits grouped the Indian way: the last three, then pairs (12345678 -> 1,23,45,678)."""
    head, tail = whole[:-3], whole[-3:]
    groups: list[str] = []
    while len(head) > 2:
        groups.insert(0, head[-2:])
        head = head[:-2]
    if head:
        groups.insert(0, head)
    return ",".join([*groups, tail])


def format_rupees(paise: int, *, signed: bool = False) -> str:
    """Integer paise for a person: 12345678 -> "₹1,23,456.78", -5 -> "-₹0.05".

    Args:
        signed: also mark a positive amount with "+" (a P&L); a negative one always has "-".
    """
    sign = "-" if paise < 0 else ("+" if signed and paise > 0 else "")
    whole, fraction = divmod(abs(paise), 100)
    return f"{sign}{RUPEE}{_grouped(str(whole))}.{fraction:02d}"


def format_amount(rupees: Decimal | int | float, *, signed: bool = False) -> str:
    """Rupees (a Decimal or a number) in the same format, rounded half up to the paisa."""
    value = Decimal(str(rupees)) if not isinstance(rupees, Decimal) else rupees
    paise = int((value * 100).quantize(Decimal(1), rounding="ROUND_HALF_UP"))
    return format_rupees(paise, signed=signed)

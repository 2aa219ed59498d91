"""The HTML report of a backtest: one self-contained page (inline CSS and SVG, no scripts).

It shows the summary, the equity curve, the drawdown, the monthly returns and the trade list.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from html import escape

from upstox_bot.backtest.models import BacktestResult, EquityPoint
from upstox_bot.money import format_rupees

MAX_TRADE_ROWS = 5000
_WIDTH, _HEIGHT, _PAD = 900, 260, 40
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2330}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;font-size:13px}td,th{padding:4px 8px;border-bottom:1px solid #e3e6ec}
th{text-align:left;background:#f4f6f9}td.n{text-align:right;font-variant-numeric:tabular-nums}
.pos{color:#137333}.neg{color:#b3261e}.grid{display:grid;grid-template-columns:repeat(4,auto);
gap:4px 24px;width:max-content}.k{color:#5f6673}svg{background:#fbfcfd;border:1px solid #e3e6ec}
"""


def _rupees(paise: int) -> str:
    return format_rupees(paise)


def _price(paise: int | Decimal) -> str:
    """A price: two decimals, or as many as the data had (split-adjusted history)."""
    if isinstance(paise, int) or paise == paise.to_integral_value():
        return _rupees(int(paise))
    return f"₹{paise / 100:,}"


def _num(value: float | None, suffix: str = "", places: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{places}f}{suffix}"


def _sign_class(value: float | int | None) -> str:
    if value is None or value == 0:
        return ""
    return "pos" if value > 0 else "neg"


def _polyline_svg(
    points: Sequence[tuple[date, float]], *, colour: str, label: str, fill: bool = False
) -> str:
    """A line chart of (date, value) in an inline SVG, with the min and max labelled."""
    if not points:
        return "<p>No sessions.</p>"
    values = [v for _, v in points]
    low, high = min(values), max(values)
    if high == low:
        high, low = high + 1, low - 1
    n = len(points)
    inner_w, inner_h = _WIDTH - 2 * _PAD, _HEIGHT - 2 * _PAD

    def xy(i: int, v: float) -> tuple[float, float]:
        x = _PAD + (inner_w * i / (n - 1) if n > 1 else inner_w / 2)
        y = _PAD + inner_h * (high - v) / (high - low)
        return round(x, 1), round(y, 1)

    coords = [xy(i, v) for i, v in enumerate(values)]
    path = " ".join(f"{x},{y}" for x, y in coords)
    area = ""
    if fill:
        top = xy(0, min(max(0.0, low), high))[1]
        area = (
            f'<polygon points="{coords[0][0]},{top} {path} {coords[-1][0]},{top}" '
            f'fill="{colour}" fill-opacity="0.15" stroke="none"/>'
        )
    first, last = points[0][0].isoformat(), points[-1][0].isoformat()
    return (
        f'<svg viewBox="0 0 {_WIDTH} {_HEIGHT}" width="{_WIDTH}" height="{_HEIGHT}" '
        f'role="img" aria-label="{escape(label)}">{area}'
        f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
        f'<text x="4" y="{_PAD - 6}" font-size="11">{escape(f"{high:,.2f}")}</text>'
        f'<text x="4" y="{_HEIGHT - _PAD + 14}" font-size="11">{escape(f"{low:,.2f}")}</text>'
        f'<text x="{_PAD}" y="{_HEIGHT - 6}" font-size="11">{first}</text>'
        f'<text x="{_WIDTH - _PAD}" y="{_HEIGHT - 6}" font-size="11" text-anchor="end">{last}'
        "</text></svg>"
    )


def drawdown_series(capital_paise: int, equity: Sequence[EquityPoint]) -> list[tuple[date, float]]:
    """Drawdown in percent below the running peak (0 or negative) at each session's close."""
    peak = capital_paise
    out = []
    for point in equity:
        peak = max(peak, point.equity_paise)
        out.append((point.day, -(peak - point.equity_paise) / peak * 100 if peak > 0 else 0.0))
    return out


def monthly_returns(
    capital_paise: int, equity: Sequence[EquityPoint]
) -> dict[tuple[int, int], float]:
    """Return in percent of each (year, month): its last close over the previous month's last
    close (the starting capital before the first month)."""
    month_end: dict[tuple[int, int], int] = {}
    for point in equity:
        month_end[(point.day.year, point.day.month)] = point.equity_paise
    out: dict[tuple[int, int], float] = {}
    previous = capital_paise
    for month in sorted(month_end):
        value = month_end[month]
        out[month] = (value / previous - 1) * 100 if previous > 0 else 0.0
        previous = value
    return out


def _monthly_table(returns: dict[tuple[int, int], float]) -> str:
    if not returns:
        return "<p>No sessions.</p>"
    years = sorted({y for y, _ in returns})
    head = "".join(f"<th>{m}</th>" for m in _MONTHS)
    rows = []
    for year in years:
        cells = []
        for month in range(1, 13):
            value = returns.get((year, month))
            if value is None:
                cells.append("<td></td>")
            else:
                cells.append(f'<td class="n {_sign_class(value)}">{value:.2f}%</td>')
        rows.append(f"<tr><th>{year}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th>Year</th>{head}</tr>{''.join(rows)}</table>"


def _trade_table(result: BacktestResult) -> str:
    trades = result.trades
    if not trades:
        return "<p>No closed trades.</p>"
    shown = trades[:MAX_TRADE_ROWS]
    rows = []
    for i, t in enumerate(shown, start=1):
        rows.append(
            f"<tr><td class=n>{i}</td><td>{escape(t.symbol)}</td><td>{t.side}</td>"
            f"<td class=n>{t.quantity}</td>"
            f"<td>{t.entry_time:%Y-%m-%d %H:%M:%S}</td>"
            f"<td class=n>{_price(t.entry_price_paise)}</td>"
            f"<td>{t.exit_time:%Y-%m-%d %H:%M:%S}</td>"
            f"<td class=n>{_price(t.exit_price_paise)}</td>"
            f"<td class=n>{_rupees(t.charges_paise)}</td>"
            f'<td class="n {_sign_class(t.pnl_paise)}">{_rupees(t.pnl_paise)}</td>'
            f"<td>{escape(t.exit_reason)}</td></tr>"
        )
    more = (
        f"<p>First {MAX_TRADE_ROWS} of {len(trades)} trades; the JSON output has them all.</p>"
        if len(trades) > MAX_TRADE_ROWS
        else ""
    )
    return (
        "<table><tr><th>#</th><th>Symbol</th><th>Side</th><th>Qty</th><th>Entry time (IST)</th>"
        "<th>Entry</th><th>Exit time (IST)</th><th>Exit</th><th>Charges</th><th>Net P&amp;L</th>"
        f"<th>Exit reason</th></tr>{''.join(rows)}</table>{more}"
    )


def render_html(result: BacktestResult) -> str:
    """The report page of a result, as one self-contained HTML document."""
    s = result.summary
    capital = s.start_capital_paise
    equity_points = [(p.day, p.equity_paise / 100) for p in result.equity]
    drawdown = drawdown_series(capital, result.equity)
    figures = [
        ("Net P&amp;L", _rupees(s.net_pnl_paise), _sign_class(s.net_pnl_paise)),
        ("Return", _num(s.return_pct, "%"), _sign_class(s.return_pct)),
        ("CAGR", _num(s.cagr_pct, "%"), _sign_class(s.cagr_pct)),
        ("Sharpe", _num(s.sharpe), ""),
        ("Sortino", _num(s.sortino), ""),
        ("Max drawdown", _num(s.max_drawdown_pct, "%"), ""),
        ("Win rate", _num(s.win_rate_pct, "%"), ""),
        ("Profit factor", _num(s.profit_factor), ""),
        ("Exposure", _num(s.exposure_pct, "%"), ""),
        ("Trades", str(s.trade_count), ""),
        ("Charges", _rupees(s.charges_paise), ""),
        ("Final equity", _rupees(s.final_equity_paise), ""),
    ]
    grid = "".join(
        f'<div class="k">{name}</div><div class="{css}">{value}</div>'
        for name, value, css in figures
    )
    params = ", ".join(f"{k}={v}" for k, v in result.params.items())
    opened = ""
    if result.open_positions:
        rows = "".join(
            f"<tr><td>{escape(p.symbol)}</td><td>{p.side}</td><td class=n>{p.quantity}</td>"
            f"<td>{p.entry_time:%Y-%m-%d %H:%M:%S}</td>"
            f"<td class=n>{_price(p.entry_price_paise)}</td>"
            f"<td class=n>{_price(p.last_price_paise)}</td>"
            f'<td class="n {_sign_class(p.unrealised_pnl_paise)}">'
            f"{_rupees(p.unrealised_pnl_paise)}</td></tr>"
            for p in result.open_positions
        )
        opened = (
            "<h2>Open at the end of the data</h2><table><tr><th>Symbol</th><th>Side</th>"
            "<th>Qty</th><th>Entry time (IST)</th><th>Entry</th><th>Last</th>"
            f"<th>Unrealised</th></tr>{rows}</table>"
        )
    title = f"Backtest: {result.strategy} ({params}) on {', '.join(result.symbols)}"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{escape(title)}</h1>"
        f"<p>{result.timeframe} candles, {result.bars:,} bars, {s.sessions} sessions, starting "
        f"capital {_rupees(capital)}.</p>"
        f'<div class="grid">{grid}</div>'
        "<h2>Equity at each session's close (₹)</h2>"
        + _polyline_svg(equity_points, colour="#1a73e8", label="equity curve")
        + "<h2>Drawdown (%)</h2>"
        + _polyline_svg(drawdown, colour="#b3261e", label="drawdown", fill=True)
        + "<h2>Monthly returns</h2>"
        + _monthly_table(monthly_returns(capital, result.equity))
        + opened
        + f"<h2>Trades ({len(result.trades)})</h2>"
        + _trade_table(result)
        + "</body></html>"
    )

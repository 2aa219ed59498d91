"""`upstox-bot doctor`: the checks a trader runs before the open, each with what to fix.

Every check reads only: the token (the store, then ``GET /v2/user/profile``), the funds, the
market status, the market feed's authorize call (the single-use URI it returns is not used),
the stored instrument universe's age, the clock against Upstox's ``Date`` header, the live
switches and the paper history. Nothing is ordered, subscribed or changed. A check that fails
and would stop the bot from trading (or from trading safely) "blocks": the command then exits 1.
"""

from __future__ import annotations

import email.utils
import time as walltime
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from upstox_bot.clock import NseCalendar
from upstox_bot.config import Settings
from upstox_bot.db.models import SymbolRow
from upstox_bot.db.repositories.accounts import AccountRepository
from upstox_bot.db.session import session_scope
from upstox_bot.domain import IST
from upstox_bot.money import format_rupees
from upstox_bot.upstox.client import UpstoxClient
from upstox_bot.upstox.errors import UpstoxApiError, UpstoxAuthError, UpstoxServiceClosed
from upstox_bot.upstox.token_store import TokenStore, token_store_from_settings

FEED_AUTHORIZE_PATH = "/v3/feed/market-data-feed/authorize"
INSTRUMENT_FILE_READY = time(6, 0)  # Upstox refreshes the files at about 06:00 IST (API.md 2.1)
SKEW_WARN_S = 2.0
SKEW_FAIL_S = 30.0


class Verdict(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """One line of the checklist."""

    name: str
    verdict: Verdict
    detail: str
    fix: str = ""
    blocks: bool = False  # the bot cannot trade (safely) until it is fixed


LOG_IN = "log in: open /api/v1/auth/upstox/login while the API runs (see `upstox-bot login`)"


async def run_checks(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    now: datetime | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[Check]:
    """Run every check, in checklist order (see the module doc)."""
    at = now or datetime.now(UTC)
    store = token_store_from_settings(settings, sessions, now=at)
    checks = [token_check(store, at)]
    secret = store.access_token(at)
    token = secret.get_secret_value() if secret is not None else ""
    async with httpx.AsyncClient(transport=transport, timeout=10.0) as http:
        client = UpstoxClient(
            access_token=lambda: token,
            api_base_url=settings.UPSTOX_API_BASE_URL,
            transport=transport,
        )
        async with client:
            if token:
                checks.append(await _profile(client))
                checks.append(await _funds(client, settings))
                checks.append(await _market(client, at))
                checks.append(await _feed(http, settings, token))
            else:
                for name in ("profile", "funds", "market status", "feed authorize"):
                    checks.append(Check(name=name, verdict=Verdict.SKIP, detail="no usable token"))
        checks.append(await _clock(http, settings))
    checks.append(instruments_check(sessions, at))
    checks.append(switches_check(settings))
    checks.append(paper_check(settings, sessions))
    return checks


def token_check(store: TokenStore, at: datetime) -> Check:
    status = store.status(at)
    if not status.state.usable:
        return Check(
            name="token",
            verdict=Verdict.FAIL,
            detail=f"{status.state.value}: {status.reason}",
            fix=LOG_IN,
            blocks=True,
        )
    expires = (
        status.expires_at.astimezone(IST).strftime("%Y-%m-%d %H:%M IST")
        if (status.expires_at)
        else "unknown"
    )
    source = status.source.value if status.source else "?"
    verdict = Verdict.WARN if status.state.value == "expiring" else Verdict.OK
    return Check(
        name="token",
        verdict=verdict,
        detail=f"{status.state.value} ({source}), expires {expires}",
        fix=LOG_IN if verdict is Verdict.WARN else "",
    )


async def _profile(client: UpstoxClient) -> Check:
    try:
        profile = await client.profile()
    except UpstoxAuthError as exc:
        return Check(
            name="profile",
            verdict=Verdict.FAIL,
            detail=f"Upstox refused the token: {exc}",
            fix=LOG_IN,
            blocks=True,
        )
    except UpstoxApiError as exc:
        return Check(
            name="profile",
            verdict=Verdict.FAIL,
            detail=f"Upstox did not answer: {exc}",
            fix="check the network and UPSTOX_API_BASE_URL",
            blocks=True,
        )
    if not profile.is_active:
        return Check(
            name="profile",
            verdict=Verdict.FAIL,
            detail=f"user {profile.user_id} is not active",
            fix="contact Upstox support",
            blocks=True,
        )
    return Check(
        name="profile",
        verdict=Verdict.OK,
        detail=f"user {profile.user_id} ({profile.user_name}), segments "
        f"{', '.join(profile.exchanges)}",
    )


async def _funds(client: UpstoxClient, settings: Settings) -> Check:
    try:
        funds = await client.funds_and_margin()
    except UpstoxServiceClosed:
        return Check(
            name="funds",
            verdict=Verdict.WARN,
            detail="Upstox's funds service is closed (00:00-05:30 IST)",
            fix="run the doctor again after 05:30 IST",
        )
    except UpstoxApiError as exc:
        return Check(name="funds", verdict=Verdict.WARN, detail=f"not read: {exc}")
    available = funds.equity.available_margin_paise
    detail = f"available margin {format_rupees(available)}"
    if available <= 0:
        return Check(
            name="funds",
            verdict=Verdict.FAIL if settings.live_trading else Verdict.WARN,
            detail=detail,
            fix="add funds to the Upstox account",
            blocks=settings.live_trading,
        )
    return Check(name="funds", verdict=Verdict.OK, detail=detail)


async def _market(client: UpstoxClient, at: datetime) -> Check:
    calendar = NseCalendar.default()
    today = at.astimezone(IST).date()
    trading_day = calendar.is_trading_day(today)
    try:
        status = await client.market_status("NSE")
    except UpstoxApiError as exc:
        return Check(name="market status", verdict=Verdict.WARN, detail=f"not read: {exc}")
    day = "a trading day" if trading_day else "not a trading day (NSE holiday or weekend)"
    return Check(
        name="market status",
        verdict=Verdict.OK if trading_day else Verdict.WARN,
        detail=f"NSE {status.status}; today is {day}",
    )


async def _feed(http: httpx.AsyncClient, settings: Settings, token: str) -> Check:
    url = settings.UPSTOX_API_BASE_URL.rstrip("/") + FEED_AUTHORIZE_PATH
    try:
        answer = await http.get(
            url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}
        )
    except httpx.HTTPError as exc:
        return Check(
            name="feed authorize",
            verdict=Verdict.FAIL,
            detail=f"no answer: {type(exc).__name__}",
            fix="check the network",
            blocks=True,
        )
    if answer.status_code == 401:
        return Check(
            name="feed authorize",
            verdict=Verdict.FAIL,
            detail="the market feed refused the token (401)",
            fix=LOG_IN,
            blocks=True,
        )
    try:
        data = answer.json()["data"]
        uri = data.get("authorized_redirect_uri") or data.get("authorizedRedirectUri")
    except (ValueError, KeyError, TypeError, AttributeError):
        uri = None
    if answer.status_code != 200 or not isinstance(uri, str) or not uri.startswith("ws"):
        return Check(
            name="feed authorize",
            verdict=Verdict.FAIL,
            detail=f"HTTP {answer.status_code}, no websocket address",
            fix="check the app's plan and permissions on the Upstox developer console",
            blocks=True,
        )
    return Check(name="feed authorize", verdict=Verdict.OK, detail="a feed address was issued")


async def _clock(http: httpx.AsyncClient, settings: Settings) -> Check:
    """The local clock against the ``Date`` header of an Upstox answer (1 s resolution)."""
    today = datetime.now(IST).date().isoformat()
    url = settings.UPSTOX_API_BASE_URL.rstrip("/") + f"/v2/market/timings/{today}"
    sent = walltime.time()
    try:
        answer = await http.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        return Check(name="clock", verdict=Verdict.WARN, detail=f"not checked: {exc}")
    received = walltime.time()
    header = answer.headers.get("date")
    parsed = email.utils.parsedate_to_datetime(header) if header else None
    if parsed is None:
        return Check(name="clock", verdict=Verdict.WARN, detail="Upstox sent no Date header")
    # The server stamped its second somewhere in [sent, received]: the middle, give or take.
    skew = (sent + received) / 2 - (parsed.timestamp() + 0.5)
    detail = f"local clock {skew:+.1f} s from Upstox's"
    fix = "synchronise the clock (NTP: e.g. `timedatectl set-ntp true`)"
    if abs(skew) > SKEW_FAIL_S:
        return Check(name="clock", verdict=Verdict.FAIL, detail=detail, fix=fix, blocks=True)
    if abs(skew) > SKEW_WARN_S:
        return Check(name="clock", verdict=Verdict.WARN, detail=detail, fix=fix)
    return Check(name="clock", verdict=Verdict.OK, detail=detail)


def instruments_check(sessions: sessionmaker[Session], at: datetime) -> Check:
    """The stored universe: present, and refreshed since today's instrument files."""
    with session_scope(sessions) as session:
        count, refreshed = session.execute(
            select(func.count(), func.max(SymbolRow.updated_at)).where(
                SymbolRow.segment == "NSE_EQ",
                SymbolRow.is_active.is_(True),
                SymbolRow.liquidity_rank.is_not(None),
            )
        ).one()
    fix = "run `upstox-bot universe refresh` (after 06:00 IST)"
    if not count or refreshed is None:
        return Check(
            name="instruments",
            verdict=Verdict.FAIL,
            detail="no F&O universe stored",
            fix=fix,
            blocks=True,
        )
    if refreshed.tzinfo is None:
        refreshed = refreshed.replace(tzinfo=UTC)
    local = at.astimezone(IST)
    ready = datetime.combine(local.date(), INSTRUMENT_FILE_READY, tzinfo=IST)
    if local < ready:
        ready -= timedelta(days=1)
    age = at - refreshed
    hours = age.total_seconds() / 3600
    detail = f"{count} ranked F&O stocks, refreshed {hours:.1f} h ago"
    if refreshed < ready:
        return Check(
            name="instruments",
            verdict=Verdict.WARN,
            detail=f"{detail} (before today's files: lot sizes and contracts may have changed)",
            fix=fix,
        )
    return Check(name="instruments", verdict=Verdict.OK, detail=detail)


def switches_check(settings: Settings) -> Check:
    protection = settings.MARKET_PROTECTION
    band = "automatic" if protection == -1 else "none" if protection == 0 else f"{protection}%"
    algo = settings.UPSTOX_ALGO_NAME or "none"
    detail = (
        f"PAPER_TRADING={str(settings.PAPER_TRADING).lower()}, LIVE_TRADING_ENABLED="
        f"{str(settings.LIVE_TRADING_ENABLED).lower()}, market protection {band}, algo name "
        f"{algo}"
    )
    if not settings.live_trading:
        return Check(
            name="live switches",
            verdict=Verdict.OK,
            detail=f"{detail}: paper trading, no order reaches Upstox",
        )
    if protection == 0:
        return Check(
            name="live switches",
            verdict=Verdict.FAIL,
            detail=f"{detail}: Upstox refuses MARKET orders without protection",
            fix="set MARKET_PROTECTION=-1 (automatic) or a band of 1-25",
            blocks=True,
        )
    if settings.TOKEN_ENCRYPTION_KEY is None:
        return Check(
            name="live switches",
            verdict=Verdict.WARN,
            detail=f"{detail}; TOKEN_ENCRYPTION_KEY unset: the daily login cannot be stored",
            fix="set TOKEN_ENCRYPTION_KEY (see .env.example)",
        )
    return Check(
        name="live switches",
        verdict=Verdict.OK,
        detail=f"{detail}: LIVE, orders go to Upstox from this machine's IP (it must be the "
        "app's registered static IP)",
    )


def paper_check(settings: Settings, sessions: sessionmaker[Session]) -> Check:
    with session_scope(sessions) as session:
        days = AccountRepository(session).paper_days(settings.ACCOUNT_NAME)
    required = settings.PAPER_TRADING_DAYS_REQUIRED
    detail = f"{days} of {required} days of paper trading"
    if days >= required:
        return Check(name="paper history", verdict=Verdict.OK, detail=detail)
    if not settings.live_trading:
        return Check(
            name="paper history",
            verdict=Verdict.OK,
            detail=f"{detail}; live trading is refused until then",
        )
    if settings.LIVE_TRADING_FORCE_REASON:
        return Check(
            name="paper history",
            verdict=Verdict.WARN,
            detail=f"{detail}; live forced: {settings.LIVE_TRADING_FORCE_REASON}",
        )
    return Check(
        name="paper history",
        verdict=Verdict.FAIL,
        detail=f"{detail}: the bot refuses to start live",
        fix="keep paper trading, or start with --force-live REASON (audited)",
        blocks=True,
    )

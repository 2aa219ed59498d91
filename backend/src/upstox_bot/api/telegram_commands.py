"""Telegram commands: the trader asks the bot from a phone, besides receiving its alerts.

With TELEGRAM_COMMANDS=true, the process that serves the API long-polls the Bot API's
`getUpdates` and answers each text message from an allowed chat (TELEGRAM_COMMAND_CHAT_IDS,
else TELEGRAM_CHAT_ID) with `sendMessage`:

- /status: the account now (day P&L against the loss limit, positions, trades, kill switch);
- /positions: each open position with its stop and P&L;
- /pnl: today's P&L, trades, wins, best and worst;
- /kill [reason], /resume: the kill switch on or off, applied only after `/confirm CODE` from
  the same chat within TELEGRAM_CONFIRM_SECONDS. It goes through `apply_kill_switch`, the code
  path of POST /api/v1/risk/kill-switch, audited with the actor `telegram:<chat id>`.

Messages from any other chat get no answer (logged as telegram.command_refused). Source of the
protocol: the Telegram Bot API documentation, https://core.telegram.org/bots/api#getupdates
(long polling with `offset` = the last update_id + 1 acknowledges what came before; `timeout`
in seconds) and #sendmessage. The bot token is part of every URL and is never logged.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time as walltime
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import httpx

from upstox_bot.api.routers.account import read_account
from upstox_bot.api.routers.positions import live_positions, stored_positions
from upstox_bot.api.routers.risk import apply_kill_switch
from upstox_bot.api.schemas.control import KillSwitchUpdate
from upstox_bot.api.schemas.trading import AccountRead, PositionRead
from upstox_bot.db.repositories.trades import TradeRepository
from upstox_bot.db.session import session_scope
from upstox_bot.domain import IST
from upstox_bot.money import format_amount, format_rupees
from upstox_bot.monitoring.notifiers.telegram import RedactToken
from upstox_bot.runtime.control import KernelView

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger(__name__)

POLL_TIMEOUT_S = 25  # long poll: Telegram holds the request this long when there is nothing
RETRY_MIN_S = 1.0
RETRY_MAX_S = 30.0
MAX_TEXT_CHARS = 4096  # Telegram's limit for one message
HELP = (
    "Commands: /status, /positions, /pnl, /kill [reason] (kill switch on: no new entries, "
    "open positions closed if KILL_SWITCH_SQUARE_OFF), /resume (kill switch off), "
    "/confirm CODE (after /kill or /resume)."
)


@dataclass(slots=True)
class _Pending:
    active: bool
    reason: str
    code: str
    expires_at: float  # monotonic seconds


class TelegramCommands:
    """Answers the allowed chats' commands; run `run()` as a task, `close()` when done."""

    def __init__(
        self,
        app: FastAPI,
        *,
        base_url: str,
        token: str,
        allowed_chats: frozenset[str],
        confirm_s: float = 60.0,
        poll_timeout_s: int = POLL_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._app = app
        self._url = f"{base_url.rstrip('/')}/bot{token}"
        self._token = token
        self._allowed = allowed_chats
        self._confirm_s = confirm_s
        self._poll_timeout_s = poll_timeout_s
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(10.0, read=poll_timeout_s + 10.0), transport=transport
        )
        self._redact = RedactToken(token)
        logging.getLogger("httpx").addFilter(self._redact)
        self._offset: int | None = None
        self._pending: dict[str, _Pending] = {}
        self.answered = 0  # commands answered (for the tests and /metrics later)

    def __repr__(self) -> str:
        return f"TelegramCommands(chats={sorted(self._allowed)})"

    async def run(self) -> None:
        """Poll for updates until cancelled; a failing Telegram is retried with backoff."""
        delay = RETRY_MIN_S
        while True:
            try:
                updates = await self._get_updates()
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("telegram.poll_failed", extra={"error": self._scrub(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            delay = RETRY_MIN_S
            for update in updates:
                update_id = update.get("update_id")
                if isinstance(update_id, int):
                    self._offset = update_id + 1
                try:
                    await self._on_update(update)
                except Exception:  # one bad command must not stop the others
                    log.exception("telegram.command_failed")

    async def close(self) -> None:
        await self._client.aclose()
        logging.getLogger("httpx").removeFilter(self._redact)

    # --- the Bot API ---------------------------------------------------------------------------

    async def _get_updates(self) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"timeout": self._poll_timeout_s, "allowed_updates": ["message"]}
        if self._offset is not None:
            body["offset"] = self._offset
        response = await self._client.post(f"{self._url}/getUpdates", json=body)
        reply = response.json()
        if not response.is_success or not isinstance(reply, dict) or not reply.get("ok"):
            detail = reply.get("description") if isinstance(reply, dict) else None
            raise ValueError(f"getUpdates: HTTP {response.status_code} {detail or ''}".strip())
        result = reply.get("result")
        return [u for u in result if isinstance(u, dict)] if isinstance(result, list) else []

    async def send(self, chat_id: str, text: str) -> None:
        """Send one message (cut to Telegram's limit)."""
        if len(text) > MAX_TEXT_CHARS:
            text = text[: MAX_TEXT_CHARS - 1] + "…"
        body = {"chat_id": chat_id, "text": text, "disable_web_page_preview": True}
        try:
            response = await self._client.post(f"{self._url}/sendMessage", json=body)
            if not response.is_success:
                log.warning(
                    "telegram.reply_refused",
                    extra={"status": response.status_code, "chat_id": chat_id},
                )
        except httpx.HTTPError as exc:
            log.warning("telegram.reply_failed", extra={"error": self._scrub(exc)})

    def _scrub(self, exc: BaseException) -> str:
        return f"{type(exc).__name__}: {exc}".replace(self._token, "***")

    # --- commands --------------------------------------------------------------------------------

    async def _on_update(self, update: dict[str, Any]) -> None:
        message = update.get("message")
        if not isinstance(message, dict):
            return
        chat = message.get("chat")
        text = message.get("text")
        if not isinstance(chat, dict) or not isinstance(text, str):
            return
        chat_id = str(chat.get("id"))
        if chat_id not in self._allowed:
            log.warning("telegram.command_refused", extra={"chat_id": chat_id})
            return
        reply = await self.answer(chat_id, text.strip())
        await self.send(chat_id, reply)
        self.answered += 1

    async def answer(self, chat_id: str, text: str) -> str:
        """The reply to one command from an allowed chat."""
        word, _, rest = text.partition(" ")
        command = word.split("@", 1)[0].lower()  # "/status@my_bot" in groups
        if command == "/status":
            return await self._status()
        if command == "/positions":
            return await self._positions()
        if command == "/pnl":
            return await self._pnl()
        if command in ("/kill", "/resume"):
            active = command == "/kill"
            reason = rest.strip() or f"{command} from Telegram"
            code = f"{secrets.randbelow(10_000):04d}"
            self._pending[chat_id] = _Pending(
                active, reason, code, walltime.monotonic() + self._confirm_s
            )
            what = (
                "Turn the kill switch ON: no new entries, and open positions closed if "
                "KILL_SWITCH_SQUARE_OFF is set?"
                if active
                else "Turn the kill switch OFF and allow new entries again?"
            )
            return f"{what} Reply /confirm {code} within {self._confirm_s:g} s."
        if command == "/confirm":
            return await self._confirm(chat_id, rest.strip())
        return HELP

    async def _confirm(self, chat_id: str, code: str) -> str:
        pending = self._pending.get(chat_id)
        if pending is None:
            return "Nothing to confirm: send /kill or /resume first."
        if walltime.monotonic() > pending.expires_at:
            del self._pending[chat_id]
            return "That confirmation expired: send /kill or /resume again."
        if code != pending.code:
            return "Wrong code: nothing changed. Send the /confirm line you were given."
        del self._pending[chat_id]
        state = self._app.state
        settings = state.settings
        result = await apply_kill_switch(
            state.sessions,
            state.control,
            KillSwitchUpdate(active=pending.active, reason=pending.reason),
            account=settings.ACCOUNT_NAME,
            settings=settings,
            actor=f"telegram:{chat_id}",
        )
        if not result.active:
            return "Kill switch OFF: new entries allowed again."
        closing = (
            f"; closing {result.positions_closing} position(s)" if result.positions_closing else ""
        )
        where = (
            "" if result.applied_to_running_bot else " (stored: the bot applies it when it runs)"
        )
        return f"Kill switch ON: no new entries{closing}{where}."

    async def _account(self) -> AccountRead:
        state = self._app.state
        settings = state.settings
        with session_scope(state.sessions) as session:
            return await read_account(_view(state), session, settings.ACCOUNT_NAME, settings)

    async def _status(self) -> str:
        a = await self._account()
        at = a.as_of.astimezone(IST).strftime("%Y-%m-%d %H:%M IST") if a.as_of else "last stored"
        used = max(Decimal(0), -a.day_pnl)
        share = f" ({100 * used / a.daily_loss_limit:.0f}% used)" if a.daily_loss_limit else ""
        lines = [
            f"{a.account} ({'paper' if a.paper_trading else 'LIVE'}), {a.trading_date}, {at}",
            f"Day P&L {format_amount(a.day_pnl, signed=True)} (realised "
            f"{format_amount(a.realised_pnl, signed=True)}, unrealised "
            f"{format_amount(a.unrealised_pnl, signed=True)}, charges {format_amount(a.charges)})",
            f"Loss limit {format_amount(a.daily_loss_limit)}{share}"
            + (": HIT, no new entries" if a.loss_limit_hit else ""),
            f"{a.open_positions} open position(s), {a.trades} trade(s), {a.orders} order(s)",
            "Kill switch ON" + (f": {a.kill_switch_reason}" if a.kill_switch_reason else "")
            if a.kill_switch
            else "Kill switch off",
        ]
        return "\n".join(lines)

    async def _positions(self) -> str:
        state = self._app.state
        positions: list[PositionRead]
        view = _view(state)
        if view is not None:
            positions = live_positions(view)
        else:
            with session_scope(state.sessions) as session:
                positions = stored_positions(session, state.settings.ACCOUNT_NAME)
        if not positions:
            return "No open position."
        return "\n".join(
            f"{p.trading_symbol} {p.direction.value} {p.quantity} @ {format_amount(p.entry_price)}"
            f", last {format_amount(p.last_price)}, stop {format_amount(p.effective_stop)}, "
            f"P&L {format_amount(p.unrealised_pnl, signed=True)}"
            + (" (closing)" if p.exit_pending else "")
            for p in positions
        )

    async def _pnl(self) -> str:
        a = await self._account()
        day = a.trading_date or datetime.now(IST).date()
        state = self._app.state
        with session_scope(state.sessions) as session:
            trades = TradeRepository(session, state.settings.ACCOUNT_NAME).find(
                start_date=day, end_date=day, limit=100_000
            )
        wins = sum(1 for t in trades if t.net_pnl_paise > 0)
        lines = [
            f"P&L {day}: {format_amount(a.day_pnl, signed=True)}",
            f"realised {format_amount(a.realised_pnl, signed=True)} over {len(trades)} trade(s)"
            f" ({wins} won), charges {format_amount(a.charges)}",
            f"unrealised {format_amount(a.unrealised_pnl, signed=True)} on "
            f"{a.open_positions} open position(s)",
        ]
        if trades:
            best = max(trades, key=lambda t: t.net_pnl_paise)
            worst = min(trades, key=lambda t: t.net_pnl_paise)
            lines.append(
                f"best {format_rupees(best.net_pnl_paise, signed=True)}, worst "
                f"{format_rupees(worst.net_pnl_paise, signed=True)}"
            )
        return "\n".join(lines)


def start_commands(app: FastAPI) -> TelegramCommands | None:
    """The command poller for the app's settings, or None when TELEGRAM_COMMANDS is off."""
    settings = app.state.settings
    if not settings.TELEGRAM_COMMANDS or settings.TELEGRAM_BOT_TOKEN is None:
        return None
    return TelegramCommands(
        app,
        base_url=settings.TELEGRAM_API_BASE_URL,
        token=settings.TELEGRAM_BOT_TOKEN.get_secret_value(),
        allowed_chats=settings.telegram_command_chats,
        confirm_s=settings.TELEGRAM_CONFIRM_SECONDS,
    )


def _view(state: Any) -> KernelView | None:
    """The running kernel's view through the app's control port, if one runs."""
    control = state.control
    view: KernelView | None = control.view() if control is not None else None
    return view

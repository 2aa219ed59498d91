"""Alerts over real loopback servers: an HTTP receiver (Telegram, webhook) and aiosmtpd (email).

The receiver records every request (path, headers, JSON body) and answers as scripted; the SMTP
server is a real aiosmtpd on 127.0.0.1, with and without STARTTLS and login.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from tests.support.factories import ist
from upstox_bot.clock import SimClock
from upstox_bot.config import Settings
from upstox_bot.domain import AuditRecord
from upstox_bot.monitoring.alerts.delivery import RetryPolicy, deliver
from upstox_bot.monitoring.alerts.model import Alert, AlertKind, Severity, make_alert
from upstox_bot.monitoring.notifiers import (
    EmailNotifier,
    TelegramNotifier,
    WebhookNotifier,
    dispatcher_from_settings,
)

TOKEN = "123456:AAE-test-bot-token"
CHAT_ID = "-100123"
NO_WAIT = RetryPolicy(max_attempts=3, base_delay_s=0.0, max_delay_s=0.0)
BACKEND = Path(__file__).resolve().parents[2]


# --- the HTTP receiver -------------------------------------------------------------------------


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: dict[str, Any] = field(default_factory=lambda: {"ok": True, "result": {}})


class Receiver:
    """A loopback HTTP server standing in for the Telegram Bot API and a webhook."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.replies: list[Reply] = []  # answered in order; then 200 {"ok": true}
        self.answering = threading.Event()  # cleared: each request waits until it is set
        self.answering.set()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.requests.append(
                        Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    reply = receiver.replies.pop(0) if receiver.replies else Reply()
                receiver.answering.wait(60)
                payload = json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def at(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


# --- the SMTP server ---------------------------------------------------------------------------


class Mailbox:
    """An aiosmtpd handler that keeps every message; `refuse_rcpt` answers RCPT with a 550."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.refuse_rcpt = False

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.refuse_rcpt:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def messages(self) -> list[Message]:
        return [message_from_bytes(e.original_content or b"") for e in self.envelopes]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class SmtpServer:
    mailbox: Mailbox
    port: int
    controller: Controller


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    mailbox = Mailbox()
    port = _free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield SmtpServer(mailbox, port, controller)
    controller.stop()


def _self_signed(tmp: Path) -> tuple[Path, Path, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(pem)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file, pem


# --- helpers -----------------------------------------------------------------------------------


def alert(
    kind: AlertKind = AlertKind.FEED_DEAD, message: str = "no ticks for 60 s", **kw: Any
) -> Alert:
    values: dict[str, Any] = {"at": ist(10, 30), "key": "shard-0", "account": "paper"}
    return make_alert(kind, message, **(values | kw))


def all_channels(receiver: Receiver, smtp: SmtpServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "ALERT_CHANNELS": "telegram,webhook,email",
        "TELEGRAM_API_BASE_URL": receiver.url,
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_CHAT_ID": CHAT_ID,
        "ALERT_WEBHOOK_URL": f"{receiver.url}/hook",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": smtp.port,
        "SMTP_STARTTLS": False,
        "ALERT_EMAIL_FROM": "bot@example.test",
        "ALERT_EMAIL_TO": "trader@example.test,desk@example.test",
        "ALERT_TIMEOUT_SECONDS": 5,
    }
    return Settings(_env_file=None, **(values | overrides))


TELEGRAM_PATH = f"/bot{TOKEN}/sendMessage"


# --- each channel ------------------------------------------------------------------------------


def test_telegram_posts_send_message_to_the_bot_path(receiver: Receiver) -> None:
    channel = TelegramNotifier(base_url=receiver.url, bot_token=SecretStr(TOKEN), chat_id=CHAT_ID)
    try:
        channel.send(alert())
    finally:
        channel.close()
    [request] = receiver.requests
    assert request.path == TELEGRAM_PATH
    assert request.headers["content-type"] == "application/json"
    body = request.json()
    assert body["chat_id"] == CHAT_ID
    assert body["text"].splitlines() == [
        "[CRITICAL] Market data feed dead",
        "no ticks for 60 s",
        "account paper · 2026-11-25 10:30:00 IST",
    ]


def test_webhook_posts_the_alert_as_json(receiver: Receiver) -> None:
    channel = WebhookNotifier(url=SecretStr(f"{receiver.url}/hook"))
    try:
        channel.send(alert(data={"silent_s": 60}))
    finally:
        channel.close()
    [request] = receiver.at("/hook")
    body = request.json()
    assert body == {
        "kind": "feed_dead",
        "severity": "critical",
        "title": "Market data feed dead",
        "message": "no ticks for 60 s",
        "at": ist(10, 30).isoformat(),
        "key": "shard-0",
        "dedupe_key": "feed_dead:shard-0",
        "account": "paper",
        "data": {"silent_s": 60},
    }
    assert datetime.fromisoformat(body["at"]) == ist(10, 30)


def test_email_reaches_a_real_smtp_server(smtp: SmtpServer) -> None:
    channel = EmailNotifier(
        host="127.0.0.1",
        port=smtp.port,
        sender="bot@example.test",
        recipients=["trader@example.test", "desk@example.test"],
        starttls=False,
    )
    channel.send(alert(AlertKind.DAILY_LOSS_LIMIT_HIT, "Day P&L -₹2,150.50", key="2026-11-25"))
    [envelope] = smtp.mailbox.envelopes
    assert envelope.mail_from == "bot@example.test"
    assert envelope.rcpt_tos == ["trader@example.test", "desk@example.test"]
    [message] = smtp.mailbox.messages()
    assert message["Subject"] == "[upstox-bot paper] CRITICAL: Daily loss limit hit"
    assert message["To"] == "trader@example.test, desk@example.test"
    assert message["X-Upstox-Bot-Alert"] == "daily_loss_limit_hit"
    body = message.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "Day P&L -₹2,150.50" in body
    assert "2026-11-25 10:30:00 IST" in body


def test_email_over_starttls_with_login(tmp_path: Path) -> None:
    cert_file, key_file, pem = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert_file, key_file)
    logins: list[tuple[bytes, bytes]] = []

    def authenticator(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        logins.append((data.login, data.password))
        ok = data.password == b"s3cret-pass"
        return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535

    mailbox = Mailbox()
    port = _free_port()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_tls,
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
    )
    controller.start()
    try:
        client_tls = ssl.create_default_context(cadata=pem.decode())
        options: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": port,
            "sender": "bot@example.test",
            "recipients": ["trader@example.test"],
            "username": "bot",
            "ssl_context": client_tls,
        }
        EmailNotifier(**options, password=SecretStr("s3cret-pass")).send(alert())
        wrong = EmailNotifier(**options, password=SecretStr("wrong"))
        result = deliver(wrong, alert(), NO_WAIT)
        untrusted = EmailNotifier(**(options | {"ssl_context": None}), password=SecretStr("x"))
        tls_result = deliver(untrusted, alert(), NO_WAIT)
    finally:
        controller.stop()
    assert len(mailbox.envelopes) == 1
    assert logins[0] == (b"bot", b"s3cret-pass")
    assert (result.ok, result.attempts) == (False, 1)
    assert result.error.startswith("login refused (535)")
    assert "wrong" not in result.error
    assert (tls_result.ok, tls_result.attempts) == (False, 1)
    assert "certificate" in tls_result.error


# --- the dispatcher over all three channels ------------------------------------------------------


def test_dispatcher_sends_on_every_channel_and_deduplicates(
    receiver: Receiver, smtp: SmtpServer
) -> None:
    clock = SimClock(ist(10, 0))
    settings = all_channels(receiver, smtp, ALERT_DEDUPE_SECONDS=120)
    with dispatcher_from_settings(settings, clock=clock, retry=NO_WAIT) as alerts:
        alerts.notify(AlertKind.FEED_DEAD, "no ticks for 60 s", key="shard-0")
        alerts.notify(AlertKind.FEED_DEAD, "no ticks for 90 s", key="shard-0")
        assert alerts.wait_idle(10)
        first = (len(receiver.at(TELEGRAM_PATH)), len(receiver.at("/hook")))
        clock.advance(121)
        alerts.notify(AlertKind.FEED_DEAD, "no ticks for 181 s", key="shard-0")
        assert alerts.wait_idle(10)
        stats = alerts.stats()
    assert first == (1, 1)
    texts = [r.json()["text"].splitlines()[1] for r in receiver.at(TELEGRAM_PATH)]
    assert texts == ["no ticks for 60 s", "no ticks for 181 s"]
    assert [r.json()["message"] for r in receiver.at("/hook")] == texts
    assert len(smtp.mailbox.envelopes) == 2
    assert (stats.sent, stats.failed, stats.suppressed_dedupe) == (6, 0, 1)
    assert stats.channels["email"].sent == 2


def test_engine_audit_records_reach_the_webhook(receiver: Receiver, smtp: SmtpServer) -> None:
    settings = all_channels(receiver, smtp, ALERT_CHANNELS="webhook")
    record = AuditRecord(
        event="risk.daily_loss_limit_hit",
        entity="account",
        entity_id="paper",
        at=ist(11, 2),
        data={"day_pnl_paise": -215_050, "limit_paise": 200_000},
    )
    with dispatcher_from_settings(settings, clock=SimClock(ist(11, 2)), retry=NO_WAIT) as alerts:
        alerts.on_audit(record)
        assert alerts.wait_idle(10)
    [request] = receiver.at("/hook")
    body = request.json()
    assert (body["kind"], body["severity"], body["account"]) == (
        "daily_loss_limit_hit",
        "critical",
        "paper",
    )
    assert body["data"] == {"day_pnl_paise": -215_050, "limit_paise": 200_000}


# --- failures: counted, bounded, never raised, secrets hidden -------------------------------------


def test_a_failing_receiver_is_retried_then_counted(receiver: Receiver, smtp: SmtpServer) -> None:
    receiver.replies = [Reply(500, {"error": "boom"})] * 3
    settings = all_channels(receiver, smtp, ALERT_CHANNELS="webhook")
    with dispatcher_from_settings(settings, clock=SimClock(ist(10, 0)), retry=NO_WAIT) as alerts:
        alerts.notify(AlertKind.ORDER_REJECTED, "order x rejected", key="x")
        assert alerts.wait_idle(10)
        failed = alerts.stats()
        alerts.notify(AlertKind.ORDER_REJECTED, "order y rejected", key="y")
        assert alerts.wait_idle(10)
        recovered = alerts.stats()
    assert len(receiver.at("/hook")) == 3 + 1
    assert (failed.sent, failed.failed) == (0, 1)
    assert (recovered.sent, recovered.failed) == (1, 1)


def test_a_telegram_refusal_is_not_retried_and_never_shows_the_token(
    receiver: Receiver, smtp: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.replies = [
        Reply(400, {"ok": False, "error_code": 400, "description": f"chat not found {TOKEN}"})
    ]
    settings = all_channels(receiver, smtp, ALERT_CHANNELS="telegram")
    caplog.set_level(logging.DEBUG)
    with dispatcher_from_settings(settings, clock=SimClock(ist(10, 0)), retry=NO_WAIT) as alerts:
        alerts.notify(AlertKind.TOKEN_EXPIRED, "log in again")
        assert alerts.wait_idle(10)
        stats = alerts.stats()
    assert len(receiver.requests) == 1
    assert stats.channels["telegram"].failed == 1
    failure = next(r for r in caplog.records if r.getMessage() == "alert.failed")
    assert failure.error == "HTTP 400: chat not found ***"  # type: ignore[attr-defined]
    assert TOKEN not in caplog.text
    assert all(TOKEN not in str(vars(r)) for r in caplog.records)


def test_telegram_flood_control_is_retried(receiver: Receiver) -> None:
    receiver.replies = [Reply(429, {"ok": False, "parameters": {"retry_after": 0}})]
    channel = TelegramNotifier(base_url=receiver.url, bot_token=SecretStr(TOKEN), chat_id=CHAT_ID)
    try:
        result = deliver(channel, alert(), NO_WAIT)
    finally:
        channel.close()
    assert (result.ok, result.attempts) == (True, 2)


def test_an_smtp_refusal_is_counted_and_not_retried(receiver: Receiver, smtp: SmtpServer) -> None:
    smtp.mailbox.refuse_rcpt = True
    settings = all_channels(receiver, smtp, ALERT_CHANNELS="email,webhook")
    with dispatcher_from_settings(settings, clock=SimClock(ist(10, 0)), retry=NO_WAIT) as alerts:
        alerts.notify(AlertKind.WORKER_DOWN, "orders worker silent")
        assert alerts.wait_idle(10)
        stats = alerts.stats()
    assert smtp.mailbox.envelopes == []
    assert stats.channels["email"].failed == 1
    assert stats.channels["webhook"].sent == 1  # one channel failing does not stop the others


def test_an_smtp_server_that_is_down_is_retried_then_counted() -> None:
    closed_port = _free_port()
    channel = EmailNotifier(
        host="127.0.0.1",
        port=closed_port,
        sender="bot@example.test",
        recipients=["trader@example.test"],
        starttls=False,
        timeout_s=2,
    )
    result = deliver(channel, alert(), NO_WAIT)
    assert (result.ok, result.attempts) == (False, 3)
    assert "refused" in result.error.lower()


def test_a_slow_receiver_never_blocks_notify(receiver: Receiver, smtp: SmtpServer) -> None:
    receiver.answering.clear()  # the receiver answers nothing until the alerts are all notified
    settings = all_channels(receiver, smtp, ALERT_CHANNELS="webhook", ALERT_RATE_PER_MINUTE=100)
    alerts = dispatcher_from_settings(settings, clock=SimClock(ist(10, 0)), retry=NO_WAIT)
    alerts.start()
    try:
        for n in range(20):
            alerts.notify(AlertKind.ORDER_REJECTED, f"order {n} rejected", key=str(n))
        queued = alerts.stats().queued
    finally:
        receiver.answering.set()
        alerts.close(timeout_s=10)
    assert queued >= 19  # all but the one the worker is sending sit in the queue
    assert alerts.stats().sent == 20


# --- the CLI -----------------------------------------------------------------------------------


def run_cli(tmp: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("ALERT_", "TELEGRAM_", "SMTP_"))
    }
    full_env |= {"DATA_DIR": str(tmp), **env}
    return subprocess.run(
        [sys.executable, "-m", "upstox_bot.cli", "alert", "test", *args],
        env=full_env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def cli_env(receiver: Receiver, smtp: SmtpServer) -> dict[str, str]:
    return {
        "ALERT_CHANNELS": "telegram,webhook,email",
        "TELEGRAM_API_BASE_URL": receiver.url,
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_CHAT_ID": CHAT_ID,
        "ALERT_WEBHOOK_URL": f"{receiver.url}/hook",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp.port),
        "SMTP_STARTTLS": "false",
        "ALERT_EMAIL_FROM": "bot@example.test",
        "ALERT_EMAIL_TO": "trader@example.test",
        "ACCOUNT_NAME": "desk",
    }


def test_cli_alert_test_reports_ok_on_every_channel(
    tmp_path: Path, receiver: Receiver, smtp: SmtpServer
) -> None:
    done = run_cli(tmp_path, cli_env(receiver, smtp))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == ["telegram: ok", "webhook: ok", "email: ok"]
    [telegram] = receiver.at(TELEGRAM_PATH)
    assert telegram.json()["text"].startswith("[INFO] Test alert\n")
    [hook] = receiver.at("/hook")
    assert (hook.json()["kind"], hook.json()["account"]) == ("test", "desk")
    [message] = smtp.mailbox.messages()
    assert message["Subject"] == "[upstox-bot desk] INFO: Test alert"
    assert TOKEN not in done.stdout + done.stderr


def test_cli_alert_test_exits_1_naming_the_failed_channel(
    tmp_path: Path, receiver: Receiver, smtp: SmtpServer
) -> None:
    receiver.replies = [Reply(403, {"error": "forbidden"})]
    done = run_cli(tmp_path, cli_env(receiver, smtp), "--channel", "webhook", "--channel", "email")
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.splitlines() == ["webhook: failed: HTTP 403: Forbidden", "email: ok"]
    assert receiver.at(TELEGRAM_PATH) == []


def test_cli_alert_test_without_channels_says_what_to_set(tmp_path: Path) -> None:
    done = run_cli(tmp_path, {})
    assert done.returncode == 2
    assert "ALERT_CHANNELS" in done.stderr
    missing = run_cli(tmp_path, {}, "--channel", "telegram")
    assert missing.returncode == 2
    assert "TELEGRAM_BOT_TOKEN" in missing.stderr


def test_severity_enum_is_what_the_webhook_sends() -> None:
    assert [s.value for s in Severity] == ["info", "warning", "critical"]

"""No secret in a log line, in either format: API keys, tokens, the OAuth code and state, and the
configured secrets, wherever they appear (uvicorn's own lines included)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from upstox_bot.monitoring.logging import configure_logging, redact

API_KEY = "ubk_Zx8yQpL0mN3vR6tW9aBcDeFgHiJkLmNoPqRsTuV"
JWT = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTYifQ.c2lnbmF0dXJlLXBhcnQ"
UPSTOX_SECRET = "upstox-secret-9f8e7d6c"
CHAT_ID = "-1001234567890"


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Logging as the bot's processes have it (uvicorn runs with log_config=None: its loggers
    propagate to the root), whatever earlier tests left; restored afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    named = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "uvicorn.access", "httpx")]
    saved = [(lg, lg.level, list(lg.handlers), lg.propagate, lg.disabled) for lg in named]
    for lg in named:
        lg.setLevel(logging.NOTSET)
        lg.handlers.clear()
        lg.propagate = True
        lg.disabled = False
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for lg, lg_level, lg_handlers, propagate, disabled in saved:
        lg.setLevel(lg_level)
        lg.handlers[:] = lg_handlers
        lg.propagate = propagate
        lg.disabled = disabled


def _log_everything() -> None:
    logging.getLogger("uvicorn.error").info(
        '%s - "WebSocket %s" [accepted]',
        "127.0.0.1:50312",
        f"/api/v1/ws?channels=positions&api_key={API_KEY}",
    )
    logging.getLogger("uvicorn.access").warning(
        '%s - "%s %s HTTP/%s" %d',
        "127.0.0.1:50313",
        "GET",
        "/api/v1/auth/upstox/callback?code=one-time-code-123&state=state-456",
        "1.1",
        200,
    )
    log = logging.getLogger("upstox_bot.test")
    log.warning("upstox.call", extra={"token": JWT, "url": f"https://x/?access_token={JWT}"})
    log.warning("headers %s", {"X-API-Key": API_KEY, "Authorization": f"Bearer {JWT}"})
    log.warning("telegram chat %s with app secret %s", CHAT_ID, UPSTOX_SECRET)
    try:
        raise RuntimeError(f"Upstox refused {UPSTOX_SECRET} for key {API_KEY}")
    except RuntimeError:
        log.exception("upstox.failed")


SECRETS = (API_KEY, JWT, UPSTOX_SECRET, CHAT_ID, "one-time-code-123", "state-456")


@pytest.mark.usefixtures("restored_logging")
def test_json_lines_carry_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json", secrets=[UPSTOX_SECRET, CHAT_ID])
    _log_everything()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 6
    for line in lines:
        json.loads(line)  # still one JSON object per line
        for secret in SECRETS:
            assert secret not in line, line
    assert "api_key=***" in lines[0]
    assert "code=***&state=***" in lines[1]
    assert '"exc": "Traceback' in lines[5]  # the traceback is kept, its secrets are not


@pytest.mark.usefixtures("restored_logging")
def test_console_lines_carry_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "console", secrets=[UPSTOX_SECRET, CHAT_ID])
    _log_everything()
    out = capsys.readouterr()
    text = out.out + out.err
    assert "WebSocket" in text
    assert "upstox.failed" in text
    for secret in SECRETS:
        assert secret not in text


def test_redact_leaves_ordinary_text_alone() -> None:
    text = "order sig-abc-entry filled at 101.50; key revoked; keyboard; state machine ok"
    assert redact(text) == text
    assert redact("GET /api/v1/trades?instrument_key=NSE_EQ|X&limit=5") == (
        "GET /api/v1/trades?instrument_key=NSE_EQ|X&limit=5"
    )

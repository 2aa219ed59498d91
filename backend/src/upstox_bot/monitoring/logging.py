"""Logging set-up: JSON lines for services, Rich for the terminal. Configured once per process.

Every record passes `RedactingFilter` on its way out, in both formats and from every logger
(uvicorn's access and WebSocket lines included): API keys, bearer tokens, JWTs (Upstox access
tokens), secret-named query parameters and header values, and the configured secrets' own values
are written as `***`, in the message, in the context values and in tracebacks.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_SECRET_WORDS = ("token", "secret", "password", "api_key", "authorization")
MASK = "***"
MIN_SECRET_CHARS = 6  # shorter configured values are not searched for (they would mask words)

# What a secret looks like wherever it appears in text.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # API keys of this bot (db/repositories/api_keys.py KEY_PREFIX).
    (re.compile(r"ubk_[A-Za-z0-9_\-]{4,}"), "ubk_" + MASK),
    # JWTs: Upstox access tokens are JWTs.
    (re.compile(r"eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*"), MASK),
    # Secret-named query parameters: ?api_key=..., the OAuth callback's code and state.
    (
        re.compile(
            r"(?i)([?&;](?:api_?key|key|token|access_token|refresh_token|id_token|code|state"
            r"|ticket|secret|client_secret|password|passwd|sig|signature)=)[^&\s\"'#;]+"
        ),
        r"\1" + MASK,
    ),
    # Header-like pairs: Authorization: Bearer ..., X-API-Key: ..., "api_key": "...".
    (
        re.compile(
            r"(?i)((?:authorization|x-api-key|api_key|access_token|password|secret)"
            r"[\"']?\s*[:=]\s*[\"']?(?:bearer\s+|basic\s+|token\s+)?)[^\s\"',;&}]+"
        ),
        r"\1" + MASK,
    ),
)


def _redact_key(key: str, value: Any) -> Any:
    return MASK if any(word in key.lower() for word in _SECRET_WORDS) else value


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every secret it holds written as `***`."""
    for value in secrets:
        if value in text:
            text = text.replace(value, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Redact secrets from a record's message, string context values and traceback.

    Attach to a handler: it then sees every record that handler writes, whatever the logger.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(
            sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)
        )

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, self.secrets)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        for key, value in list(vars(record).items()):
            if key in _STANDARD or key.startswith("_"):
                continue
            if isinstance(value, str):
                setattr(record, key, redact(value, self.secrets))
        if record.exc_info and record.exc_info[1] is not None:
            text = record.exc_text or "".join(traceback.format_exception(*record.exc_info))
            clean = redact(text, self.secrets)
            if clean != text:
                # The traceback shows a secret: write the redacted text instead of the exception.
                record.exc_text, record.exc_info = clean, None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, event, and the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = _redact_key(key, value)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            payload["exc"] = record.exc_text
        return json.dumps(payload, default=str)


def _extras(record: logging.LogRecord) -> str:
    """The record's context as ` key=value` pairs (secrets blanked), for the console format."""
    parts = [
        f"{key}={_redact_key(key, value)}"
        for key, value in vars(record).items()
        if key not in _STANDARD and not key.startswith("_")
    ]
    return (" " + " ".join(parts)) if parts else ""


def _console_handler() -> logging.Handler:
    from rich.console import ConsoleRenderable
    from rich.logging import RichHandler
    from rich.text import Text

    class ConsoleHandler(RichHandler):
        """Rich's handler, with each event's context after its name: `strategy.file_error`
        alone tells nothing, `strategy.file_error path=... error=...` does."""

        def render_message(self, record: logging.LogRecord, message: str) -> ConsoleRenderable:
            rendered = super().render_message(record, message)
            extras = _extras(record)
            if extras and isinstance(rendered, Text):
                rendered.append(extras, style="dim")
            return rendered

    return ConsoleHandler(rich_tracebacks=True, show_path=False, markup=False)


def configure_logging(
    level: str = "INFO", fmt: str = "console", secrets: Iterable[str] = ()
) -> None:
    """Route every logger to stderr as JSON lines (fmt="json") or through Rich (console),
    redacting secrets (`secrets`: the configured secret values, searched for literally)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if fmt == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    else:
        handler = _console_handler()
    handler.addFilter(RedactingFilter(secrets))
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("uvicorn.access", "httpx", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))

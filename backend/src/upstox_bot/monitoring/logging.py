"""Logging set-up: JSON lines for services, Rich for the terminal. Configured once per process."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_SECRET_WORDS = ("token", "secret", "password", "api_key", "authorization")


def _redact(key: str, value: Any) -> Any:
    return "***" if any(word in key.lower() for word in _SECRET_WORDS) else value


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
                payload[key] = _redact(key, value)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def _extras(record: logging.LogRecord) -> str:
    """The record's context as ` key=value` pairs (secrets blanked), for the console format."""
    parts = [
        f"{key}={_redact(key, value)}"
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


def configure_logging(level: str = "INFO", fmt: str = "console") -> None:
    """Route every logger to stderr as JSON lines (fmt="json") or through Rich (console)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if fmt == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    else:
        handler = _console_handler()
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("uvicorn.access", "httpx", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))

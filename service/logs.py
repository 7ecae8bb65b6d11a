"""Logging for every process of the service: one line per record, as JSON (for log shippers) or as text (for
a person at a terminal), with the id of the HTTP request being served, when there is one, on every line.

The request id lives in a context variable: the API's request middleware sets it for the request's task,
and Starlette copies the context into the threads where synchronous routes and dependencies run, so the
lines of the command handlers and stores under a request carry it too."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["json", "text"]

REQUEST_ID: ContextVar[str | None] = ContextVar("ledger_request_id", default=None)
"""The id of the HTTP request this code runs for (X-Request-Id), or None outside a request."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has: whatever else a record holds came from ``extra=`` and is logged as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "request_id",
                                                                         "color_message"}  # uvicorn's


class RequestIdFilter(logging.Filter):
    """Puts the current request id on every record that passes the handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "request_id"?, <extra fields>..., "exception"?}``, one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "request_id", None):
            line["request_id"] = record.request_id  # type: ignore[attr-defined]
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The usual line, with the request id appended when there is one."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{text} [request_id={request_id}]" if request_id else text


def resolve_format(setting: str | None, stream: Any = None) -> LogFormat:
    """The format asked for, else text on a terminal and JSON elsewhere (a container, a service manager)."""
    if setting in ("json", "text"):
        return setting  # type: ignore[return-value]
    stream = stream if stream is not None else sys.stderr
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


def configure(log_format: str | None = None, *, level: int = logging.INFO, stream: Any = None,
              force: bool = False) -> LogFormat:
    """Route every logger (uvicorn's included) to one handler on stderr in the chosen format. uvicorn's access
    log is silenced: the API writes its own line per request (``api.observability``). As logging.basicConfig,
    it leaves alone a root logger that already has handlers (a test runner's, an embedding program's), unless
    ``force``."""
    chosen = resolve_format(log_format, stream)
    root = logging.getLogger()
    if root.handlers and not force and not all(getattr(h, "_ledger", False) for h in root.handlers):
        return chosen
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    handler._ledger = True  # type: ignore[attr-defined]
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    return chosen


def configure_from_environment() -> LogFormat:
    """For a process's start: LEDGER_LOG_FORMAT from the settings; when the settings cannot be read, the
    default (the process reports the settings' error itself right after)."""
    from service.settings import SettingsError, load_settings

    try:
        setting = load_settings().log_format
    except SettingsError:
        setting = None
    return configure(setting)

"""One logging setup for every service: stderr (journald), `text` or `json`, one level.

Nothing is written to files: under systemd, stderr goes to the journal, which rotates.
Structured fields ride on a record as `extra={"fields": {...}}`: JSON lines carry them
as top-level keys, text lines append them as `key=value`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, Literal, TextIO

LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]

TEXT_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
# Loggers that narrate routine steps at INFO; kept to warnings at any level but debug.
_CHATTY = ("alembic", "aiohttp.access")
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/@+,%")


def _fields(record: logging.LogRecord) -> Mapping[str, Any] | None:
    fields: Mapping[str, Any] | None = getattr(record, "fields", None)
    return fields


def _text_value(value: Any) -> str:
    """A field value for a text line: bare when it is one plain token, else JSON-quoted
    (a guest's path never breaks the line or fakes another field)."""
    if value is None:
        return "-"
    text = value if isinstance(value, str) else str(value)
    if text and all(ch in _PLAIN for ch in text):
        return text
    return json.dumps(text)


class TextFormatter(logging.Formatter):
    """`time pid LEVEL logger: message key=value ...`."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if not fields:
            return line
        pairs = " ".join(f"{key}={_text_value(value)}" for key, value in fields.items())
        head, newline, rest = line.partition("\n")  # a traceback stays below the fields
        return f"{head} {pairs}{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `ts`, `level`, `logger`, `pid`, `message`, the fields."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        millis = int((record.created - seconds) * 1000)
        document: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        fields = _fields(record)
        if fields:
            document.update(fields)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False, separators=(",", ":"), default=str)


def make_formatter(log_format: LogFormat) -> logging.Formatter:
    """The formatter of a `log_format` value."""
    return JsonFormatter() if log_format == "json" else TextFormatter()


def setup_logging(
    level: str = "info", log_format: LogFormat = "text", stream: TextIO | None = None
) -> None:
    """Send every record at `level` and above to stderr in `log_format`; replaces any
    handler set up before (a forked worker, a test calling it twice)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(make_formatter(log_format))
    root.addHandler(handler)
    numeric = logging.getLevelName(level.upper())
    root.setLevel(numeric if isinstance(numeric, int) else logging.INFO)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(
            logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
        )


class AccessLog:
    """One line per guest request, on logger `metastack.access` at INFO.

    `enabled` is decided once (the `access_log` switch and the level), so a storm with the
    access log off pays one attribute test per request.
    """

    __slots__ = ("enabled", "logger")

    def __init__(self, enabled: bool = True, name: str = "metastack.access") -> None:
        self.logger = logging.getLogger(name)
        self.enabled = enabled and self.logger.isEnabledFor(logging.INFO)

    def write(self, fields: Mapping[str, Any]) -> None:
        """Log one request: its fields are the line (`request key=value ...` as text)."""
        self.logger.info("request", extra={"fields": fields})

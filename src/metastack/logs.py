"""One logging setup for every service: stderr (journald), `text` or `json`, one level.

Nothing is written to files: under systemd, stderr goes to the journal, which rotates.
Structured fields ride on a record as `extra={"fields": {...}}`: JSON lines carry them
as top-level keys, text lines append them as `key=value`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Mapping
from typing import Any, Literal, TextIO

LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]

TEXT_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
# Loggers that narrate routine steps at INFO; kept to warnings at any level but debug.
_CHATTY = ("alembic", "aiohttp.access")
_PLAIN = re.compile(r"[\w.:/@+,%-]+", re.ASCII)
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)
# The handler setup_logging installed, and the PID it ran in (a forked worker runs it again).
_HANDLER: list[logging.StreamHandler[TextIO] | None] = [None]
_PID = [os.getpid()]


def _fields(record: logging.LogRecord) -> Mapping[str, Any] | None:
    fields: Mapping[str, Any] | None = getattr(record, "fields", None)
    return fields


def _text_value(value: Any) -> str:
    """A field value for a text line: bare when it is one plain token, else JSON-quoted
    (a guest's path never breaks the line or fakes another field)."""
    if value is None:
        return "-"
    text = value if isinstance(value, str) else str(value)
    if _PLAIN.fullmatch(text):
        return text
    return json.dumps(text)


class _Clock:
    """Formats a timestamp with one strftime per second, not per line."""

    def __init__(self, pattern: str, *, utc: bool) -> None:
        self.pattern = pattern
        self.convert = time.gmtime if utc else time.localtime  # logging's asctime: local
        self._second = -1
        self._stamp = ""

    def stamp(self, created: float) -> tuple[str, int]:
        seconds = int(created)
        if seconds != self._second:
            self._second = seconds
            self._stamp = time.strftime(self.pattern, self._convert(seconds))
        return self._stamp, int((created - seconds) * 1000)

    def _convert(self, seconds: int) -> time.struct_time:
        return (
            time.gmtime(seconds) if self.pattern.endswith("T%H:%M:%S") else time.localtime(seconds)
        )


class TextFormatter(logging.Formatter):
    """`time pid LEVEL logger: message key=value ...`."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._clock = _Clock("%Y-%m-%d %H:%M:%S", utc=False)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if not fields:
            return line
        head, newline, rest = line.partition("\n")  # a traceback stays below the fields
        return f"{head} {_pairs(fields)}{newline}{rest}"

    def access_line(self, created: float, logger: str, fields: Mapping[str, Any]) -> str:
        """What :meth:`format` makes of an INFO record `request` with `fields`."""
        stamp, millis = self._clock.stamp(created)
        return f"{stamp},{millis:03d} {_PID[0]} INFO {logger}: request {_pairs(fields)}"


def _pairs(fields: Mapping[str, Any]) -> str:
    return " ".join(f"{key}={_text_value(value)}" for key, value in fields.items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `ts`, `level`, `logger`, `pid`, `message`, the fields."""

    def __init__(self) -> None:
        super().__init__()
        self._clock = _Clock("%Y-%m-%dT%H:%M:%S", utc=True)

    def _ts(self, created: float) -> str:
        stamp, millis = self._clock.stamp(created)
        return f"{stamp}.{millis:03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": self._ts(record.created),
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
        return _JSON.encode(document)

    def access_line(self, created: float, logger: str, fields: Mapping[str, Any]) -> str:
        """What :meth:`format` makes of an INFO record `request` with `fields`."""
        document: dict[str, Any] = {
            "ts": self._ts(created),
            "level": "info",
            "logger": logger,
            "pid": _PID[0],
            "message": "request",
        }
        document.update(fields)
        return _JSON.encode(document)


def make_formatter(log_format: LogFormat) -> logging.Formatter:
    """The formatter of a `log_format` value."""
    return JsonFormatter() if log_format == "json" else TextFormatter()


def setup_logging(
    level: str = "info", log_format: LogFormat = "text", stream: TextIO | None = None
) -> None:
    """Send every record at `level` and above to stderr in `log_format`; replaces any
    handler set up before (a forked worker, a test calling it twice)."""
    # Neither format names the caller's file, line or thread: skip finding them for every
    # record (the logging HOWTO's "Optimization"), a few microseconds per access line.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(make_formatter(log_format))
    root.addHandler(handler)
    _HANDLER[0] = handler
    _PID[0] = os.getpid()
    numeric = logging.getLevelName(level.upper())
    root.setLevel(numeric if isinstance(numeric, int) else logging.INFO)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(
            logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
        )


class AccessLog:
    """One line per guest request, as logger `metastack.access` would write it at INFO.

    `enabled` is decided once (the `access_log` switch and the level), so a storm with the
    access log off pays one attribute test per request. The line goes straight to the
    handler :func:`setup_logging` installed, in its format, without a LogRecord: a third
    of the cost, and the agent writes one per request.
    """

    __slots__ = ("enabled", "logger")

    def __init__(self, enabled: bool = True, name: str = "metastack.access") -> None:
        self.logger = logging.getLogger(name)
        self.enabled = enabled and self.logger.isEnabledFor(logging.INFO)

    def write(self, fields: Mapping[str, Any]) -> None:
        """Log one request: its fields are the line (`request key=value ...` as text)."""
        handler = _HANDLER[0]
        formatter = handler.formatter if handler is not None else None
        if handler is None or not isinstance(formatter, TextFormatter | JsonFormatter):
            self.logger.info("request", extra={"fields": fields})
            return
        line = formatter.access_line(time.time(), self.logger.name, fields)
        handler.acquire()
        try:
            handler.stream.write(line + "\n")
            handler.stream.flush()
        except (OSError, ValueError):
            handler.handleError(logging.makeLogRecord({"msg": line}))
        finally:
            handler.release()

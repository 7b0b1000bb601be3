"""Structured logs: one JSON object per line on stdout, through the stdlib logging module.

Every line carries ``ts`` (ISO 8601, UTC, milliseconds), ``level``, ``msg``, ``function`` and
``logger``; anything passed as ``extra=`` (``invocation_id``, ``status``, ``duration_ms`` ...)
becomes a top-level field, and an exception becomes a ``traceback`` field.
"""
from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from typing import Any

from .wire import RUNTIME_LOGGER   # the ready line names it (wire.is_ready_line)

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}

FUNCTION_LOGGER = "gantry.function"


def _iso_utc(t: float) -> str:
    """``2026-01-02T03:04:05.678+00:00``: what datetime's isoformat gives, without importing
    datetime at the runtime's start."""
    whole = int(t)
    micro = round((t - whole) * 1e6)    # rounded to microseconds first, as datetime does
    if micro == 1_000_000:
        whole, micro = whole + 1, 0
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(whole))}.{micro // 1000:03d}+00:00"


class JsonFormatter(logging.Formatter):
    def __init__(self, function: str) -> None:
        super().__init__()
        self.function = function

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _iso_utc(record.created),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
            "function": self.function,
            "logger": record.name,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["traceback"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            out["traceback"] = record.exc_text
        return json.dumps(out, default=repr, ensure_ascii=False)


class InvocationLogger(logging.LoggerAdapter):
    """``ctx.logger``: adds the invocation's fields to every line, merged with the caller's ``extra``.

    An ``extra`` key that logging reserves (``name``, ``msg``, ``args`` ...) would make the
    stdlib raise; it is written with a trailing underscore instead (``name_``).
    """

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = dict(self.extra)
        for key, value in (kwargs.get("extra") or {}).items():
            extra[f"{key}_" if key in _STANDARD else key] = value
        kwargs["extra"] = extra
        return msg, kwargs


def setup_logging(function: str, level: str = "info") -> logging.Logger:
    """Route the root logger to stdout as JSON lines; return the runtime's own logger."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(function))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return logging.getLogger(RUNTIME_LOGGER)

"""Turn handler results and streamed items into bytes plus a content type."""
from __future__ import annotations

import json
import re
from typing import Any

from .response import Event

JSON = "application/json"
TEXT = "text/plain"          # always sent with charset=utf-8
BINARY = "application/octet-stream"
NDJSON = "application/x-ndjson"

_JSON_TYPES = (dict, list, tuple, int, float, bool, type(None))
_BYTES_TYPES = (bytes, bytearray, memoryview)


class BadResult(Exception):
    """The handler returned (or streamed) a value the runtime cannot send: 500 bad_result."""


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _json(value: Any) -> bytes:
    try:
        return dumps(value)
    except (TypeError, ValueError) as exc:  # a non-serialisable value nested inside, a cycle ...
        raise BadResult(f"result is not JSON serialisable: {exc}") from None


def encode_result(value: Any) -> tuple[bytes, str]:
    """A whole (non-streamed) result -> (body, content type)."""
    if isinstance(value, str):
        return value.encode(), TEXT
    if isinstance(value, _BYTES_TYPES):
        return bytes(value), BINARY
    if isinstance(value, _JSON_TYPES):
        return _json(value), JSON
    raise BadResult(f"unsupported result type {type(value).__name__!r}: "
                    "return dict, list, str, bytes, a number, bool, None or a generator")


def stream_content_type(first: Any) -> str:
    """A stream's content type, chosen from its first item."""
    if isinstance(first, str):
        return TEXT
    if isinstance(first, _BYTES_TYPES):
        return BINARY
    if isinstance(first, _JSON_TYPES):
        return NDJSON
    raise BadResult(f"unsupported stream item type {type(first).__name__!r}: "
                    "yield str, bytes, or JSON values (dict, list ...)")


def encode_item(item: Any) -> bytes:
    """One streamed item -> one chunk: str as UTF-8, bytes raw, JSON values as one line + newline."""
    if isinstance(item, str):
        return item.encode()
    if isinstance(item, _BYTES_TYPES):
        return bytes(item)
    if isinstance(item, _JSON_TYPES):
        return _json(item) + b"\n"
    raise BadResult(f"unsupported stream item type {type(item).__name__!r}")


def content_type_header(ctype: str) -> str:
    """The Content-Type header for a content type: plain text is always declared UTF-8."""
    return f"{TEXT}; charset=utf-8" if ctype == TEXT else ctype


def encode_body(value: Any, content_type: str | None) -> tuple[bytes, str | None]:
    """A ``Response`` body -> (bytes, content type): encoded by its type, labelled as asked.
    None is no body at all (a 204, a redirect), with no content type unless one was asked."""
    if value is None:
        return b"", content_type
    body, inferred = encode_result(value)
    return body, content_type or inferred


_LINES = re.compile(r"\r\n|\r|\n")


def sse_event(item: Any) -> bytes:
    """One Server-Sent Event: an ``Event``'s ``event:``, ``id:`` and ``retry:`` fields, then its
    data as ``data:`` lines (a str line by line, bytes as UTF-8, a JSON value as one line), then
    the blank line that dispatches it."""
    fields = []
    if isinstance(item, Event):
        if item.event is not None:
            fields.append(f"event: {item.event}\n")
        if item.id is not None:
            fields.append(f"id: {item.id}\n")
        if item.retry is not None:
            fields.append(f"retry: {item.retry}\n")
        item = item.data
    if isinstance(item, _BYTES_TYPES):
        try:
            item = bytes(item).decode()
        except UnicodeDecodeError:
            raise BadResult("an event's bytes must be UTF-8 text") from None
    if isinstance(item, str):
        data = item
    elif isinstance(item, _JSON_TYPES):
        data = _json(item).decode()
    else:
        raise BadResult(f"unsupported event type {type(item).__name__!r}: "
                        "yield str, a JSON value (dict, list ...) or gantry_runtime.Event")
    fields.extend(f"data: {line}\n" for line in _LINES.split(data))
    fields.append("\n")
    return "".join(fields).encode()

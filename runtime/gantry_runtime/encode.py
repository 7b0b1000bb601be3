"""Turn handler results and streamed items into bytes plus a content type."""
from __future__ import annotations

import json
from typing import Any

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

"""The query of a paged read of a Redis stream (function logs, the audit stream):
``after`` (a cursor, the last entry's id) and ``limit``, refused with 400 naming the field."""
from __future__ import annotations

import re

from aiohttp import web

from .errors import ApiError

MAX_STREAM_PART = 2**64 - 1  # each half of a Redis stream id is an unsigned 64-bit number
_STREAM_ID = re.compile(r"(\d{1,20})(?:-(\d{1,20}))?", re.ASCII)


def stream_id(value: str) -> bool:
    """A Redis stream id, "MS" or "MS-SEQ", ASCII digits, each part an unsigned 64-bit number."""
    found = _STREAM_ID.fullmatch(value)
    return found is not None and all(int(part) <= MAX_STREAM_PART for part in found.groups("0"))


def page(request: web.Request, most: int, cursor: str = "a cursor") -> tuple[str | None, int]:
    """(after, limit) of the request's query: limit 1 to MOST, 100 by default."""
    after = request.query.get("after") or None
    if after is not None and not stream_id(after):
        raise ApiError(400, "bad_request", f"after: expected {cursor} such as 1700000000000-0 "
                       f"(each part at most 2**64-1), got {after[:60]!r}")
    return after, whole_number(request, "limit", 100, most)


def whole_number(request: web.Request, name: str, default: int, most: int) -> int:
    """Query parameter NAME, a whole number from 1 to MOST (DEFAULT when absent); 400 naming
    it otherwise (ASCII digits only: int() would take other scripts' digits)."""
    raw = request.query.get(name, str(default))
    value = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 4 else 0
    if not 1 <= value <= most:
        raise ApiError(400, "bad_request", f"{name}: expected a whole number from 1 to {most}, got {raw[:30]!r}")
    return value

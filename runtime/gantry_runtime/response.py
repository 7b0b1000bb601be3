"""Responses a handler controls: ``Response`` (status, headers, content type, a body or a
stream), ``SSE`` (a stream of Server-Sent Events), ``Event`` (one event with a name or an id)
and the ``@sse`` decorator.

A function imports them inside its container (``from gantry_runtime import Response, SSE``),
so this module uses the standard library only.  Everything is checked when the object is
made: a bad status or header raises there, in the handler, and the caller gets 500
``function_error`` naming the problem (the traceback, in the log, points at the handler's line).
"""
from __future__ import annotations

import functools
import inspect
import re
from typing import Any, Callable, Iterable, Mapping

from .wire import EVENT_STREAM, FRAMING, HEADER_PREFIX, HOP_BY_HOP

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")   # a header name (RFC 9110 5.1)
_BAD_VALUE = re.compile(r"[\x00\r\n]")
_NO_BODY = (204, 304)
_BODY_TYPES = (str, bytes, bytearray, memoryview, dict, list, tuple, int, float, bool, type(None))


def is_stream(value: Any) -> bool:
    return inspect.isgenerator(value) or inspect.isasyncgen(value)


def _status(status: Any) -> int:
    if type(status) is not int or not 200 <= status <= 599:
        raise ValueError(f"Response status must be an int from 200 to 599, got {status!r}")
    return status


def _headers(headers: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> tuple[tuple[str, str], ...]:
    if headers is None:
        return ()
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    out = []
    for pair in pairs:
        try:
            name, value = pair
        except (TypeError, ValueError):
            raise TypeError(f"Response headers must be a dict or (name, value) pairs, got {pair!r}") from None
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise ValueError(f"Response header name {name!r} is not a valid HTTP header name")
        if not isinstance(value, str) or _BAD_VALUE.search(value):
            raise ValueError(f"Response header {name!r} must be a str without CR, LF or NUL, got {value!r}")
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in FRAMING:
            raise ValueError(f"Response header {name!r} is set by the platform, not by a handler "
                             "(hop-by-hop or framing)")
        if lower.startswith(HEADER_PREFIX):
            raise ValueError(f"Response header {name!r}: X-Gantry-* headers are the platform's")
        out.append((name, value))
    return tuple(out)


class Response:
    """An answer with a chosen status, headers and content type.

    ``body`` is what a handler may return anyway: str, bytes, a JSON value, or a generator or
    async generator (a stream).  ``content_type`` defaults to what the body's type implies
    (docs/runtime.md, "Results"); a ``Content-Type`` in ``headers`` is the same thing.
    """

    __slots__ = ("body", "status", "headers", "content_type")

    def __init__(self, body: Any = None, *, status: int = 200,
                 headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
                 content_type: str | None = None) -> None:
        if not (is_stream(body) or isinstance(body, _BODY_TYPES)):
            raise TypeError(f"Response body of type {type(body).__name__!r} is not supported: give str, "
                            "bytes, a JSON value (dict, list ...), or a generator")
        pairs = _headers(headers)
        for name, value in pairs:
            if name.lower() == "content-type":
                if content_type is not None and content_type != value:
                    raise ValueError(f"Response content_type {content_type!r} and header Content-Type "
                                     f"{value!r} disagree")
                content_type = value
        pairs = tuple(p for p in pairs if p[0].lower() != "content-type")
        if content_type is not None and (not isinstance(content_type, str) or not content_type
                                         or _BAD_VALUE.search(content_type)):
            raise ValueError(f"Response content_type must be a non-empty str, got {content_type!r}")
        status = _status(status)
        if status in _NO_BODY and (is_stream(body) or body not in (None, b"", "")):
            raise ValueError(f"a {status} Response has no body")
        self.body = body
        self.status = status
        self.headers = pairs
        self.content_type = content_type

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(self, "content_type"):       # set last in __init__: checked values stay checked
            raise AttributeError("a Response cannot be changed once made (make a new one)")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, content_type={self.content_type!r})"


class Event:
    """One Server-Sent Event with an event name, an id or a reconnection delay; ``data`` is a
    str (sent as is, one ``data:`` line per line) or a JSON value (sent as one line of JSON)."""

    __slots__ = ("data", "event", "id", "retry")

    def __init__(self, data: Any = "", *, event: str | None = None, id: str | int | None = None,
                 retry: int | None = None) -> None:
        if event is not None and (not isinstance(event, str) or _BAD_VALUE.search(event)):
            raise ValueError(f"Event name must be a str without CR, LF or NUL, got {event!r}")
        if id is not None:
            if type(id) is int:
                id = str(id)
            if not isinstance(id, str) or _BAD_VALUE.search(id):
                raise ValueError(f"Event id must be an int or a str without CR, LF or NUL, got {id!r}")
        if retry is not None and (type(retry) is not int or retry < 0):
            raise ValueError(f"Event retry must be milliseconds (an int >= 0), got {retry!r}")
        self.data, self.event, self.id, self.retry = data, event, id, retry


class SSE(Response):
    """A stream of Server-Sent Events (``text/event-stream``).  Each item of ``events`` (a
    generator, an async generator, or any iterable) is one event: a str, a JSON value, or an
    ``Event``.  Each goes to the client the moment it is produced.  If the stream fails, its last
    event is ``event: error`` with ``data: {"code": ..., "message": ...}``."""

    __slots__ = ()

    def __init__(self, events: Any, *, status: int = 200,
                 headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None) -> None:
        if not is_stream(events):
            if isinstance(events, (str, bytes, dict)) or not isinstance(events, Iterable):
                raise TypeError(f"SSE needs a generator, an async generator or an iterable of events, "
                                f"got {type(events).__name__!r}")
            events = (item for item in list(events))
        if _status(status) in _NO_BODY:
            raise ValueError(f"an SSE response cannot have status {status}")
        super().__init__(events, status=status, headers=headers, content_type=EVENT_STREAM)


def sse(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a generator (or async generator) handler so its items are Server-Sent Events:
    ``@sse`` then ``def handle(event, ctx): yield {...}`` is ``return SSE(gen(event, ctx))``."""
    if not (inspect.isgeneratorfunction(handler) or inspect.isasyncgenfunction(handler)):
        raise TypeError(f"@sse decorates a generator function, not {handler!r}")

    @functools.wraps(handler)
    def handle(event: Any, ctx: Any) -> SSE:
        return SSE(handler(event, ctx))

    return handle

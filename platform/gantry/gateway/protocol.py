"""The gateway's HTTP/1.1 connection: aiohttp's ``RequestHandler`` with a request-head
deadline and JSON answers to requests the parser rejects.

Why a subclass: aiohttp bounds a request head only through ``keepalive_timeout``, whose
deadline is set when the connection opens and after each response, and which doubles as
the idle keep-alive time (RequestHandler's default is 3630 s; a slowloris client that
trickles header bytes holds its connection that long).  Shortening it would also drop
legitimate idle keep-alive connections.  And a request the parser rejects is answered by
``RequestHandler.handle_error``: a text/plain 400 that echoes the offending bytes, with a
traceback logged for each.  Neither has a setting, so both live here, in one class.

The head deadline follows nginx's ``client_header_timeout``: a new connection must send a
complete request head within ``header_timeout``; on a kept-alive connection the clock
starts at the first byte of the next request (the idle time before it is
``keepalive_timeout``'s).  "Waiting for a head" is the condition aiohttp's own keep-alive
check uses: the connection's task waits on ``_waiter`` for the parser's next message.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import (BadStatusLine, HttpProcessingError, InvalidHeader, InvalidURLError,
                                     LineTooLong, PayloadEncodingError)
from aiohttp.web_protocol import RequestHandler
from gantry_runtime.wire import ERROR_CONTENT_TYPE, ErrorCode, error_body

log = logging.getLogger("gantry.gateway")

# what a rejected request is told (never its own bytes), most specific first
_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (LineTooLong, "request line or header too long"),
    (InvalidURLError, "malformed request target"),
    (BadStatusLine, "malformed request line"),
    (InvalidHeader, "malformed header"),
    (PayloadEncodingError, "malformed body framing"),
)


def rejection(exc: BaseException | None) -> str:
    """The fixed message for a parser error: no byte of the request in it."""
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "malformed request head"


class GatewayProtocol(RequestHandler):
    __slots__ = ("_header_timeout", "_head_timer")

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None

    # -- the head deadline -------------------------------------------------------------------
    def _awaiting_head(self) -> bool:
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def _arm(self) -> None:
        if self._header_timeout > 0 and self._head_timer is None:
            self._head_timer = self._loop.call_later(self._header_timeout, self._head_overdue)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_overdue(self) -> None:
        self._head_timer = None
        if self._awaiting_head():
            log.debug("closed a connection without a request head in time",
                      extra={"timeout": self._header_timeout})
            self.force_close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head():
            self._arm()          # no-op while armed: more bytes do not extend the deadline
        super().data_received(data)
        if not self._awaiting_head():
            self._disarm()       # a head (or a parser error) arrived

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    # -- requests the parser rejects ---------------------------------------------------------
    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)   # a bug: keep the traceback
        reason = rejection(exc)
        log.info("rejected a malformed request",
                 extra={"remote": request.remote, "reason": reason, "error": type(exc).__name__})
        if request.writer.output_size > 0:      # as aiohttp: too late for another response
            raise ConnectionError("response already started")
        resp = web.Response(status=status, body=error_body(ErrorCode.BAD_REQUEST, reason),
                            content_type=ERROR_CONTENT_TYPE)
        resp.force_close()
        return resp


class GatewayServer(web.Server):
    """aiohttp's low-level server, making GatewayProtocol connections."""

    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout

    def __call__(self) -> RequestHandler:
        return GatewayProtocol(self, loop=self._loop, header_timeout=self.header_timeout, **self._kwargs)

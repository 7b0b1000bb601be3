"""The gateway's front door: one asyncio Protocol per client connection that parses requests
with httptools (llhttp, Node's HTTP/1.1 parser) and serves invocations itself, with as few
Python objects per request as it can; every other request goes to the aiohttp application.

Why: a warm invocation through aiohttp's web server paid for its request, router, middleware
and response objects on top of the gateway's own work (docs/benchmarks.md has the profile).
The invoke path needs none of them: auth, the rate-limit decision, the pick and the forward
(gateway.invoke) run on a ``Call`` here, which offers the few things of aiohttp's request
they read, and the answer is written to the socket in one piece.

Routing happens per request, at the end of its head:

- ``POST /v1/invoke/NAME`` and a vLLM function's OpenAI-compatible routes (gateway.openai),
  without an ``Idempotency-Key``, are served here, and so is the coordination API
  (``/v1/coord/``: gateway.coord_api's handlers, found by the application's router, answer a
  Call as they would aiohttp's request);
- anything else (the admin API, coordination, /metrics, an idempotent invoke, a path with
  percent-escapes, any method or path this table does not know) goes to the connection's
  backend: aiohttp's protocol for the application (gateway.protocol.GatewayProtocol) fed the
  request's head as received and its body as it arrives, writing its answer straight to the
  client through a transport of ours that notes where each answer ends.

Requests on one connection are answered in order (HTTP/1.1 pipelining), whichever side
serves each.  The front keeps the contracts of gateway.protocol: a request head must arrive
within ``header_timeout``; an idle kept-alive connection is closed after
``keepalive_timeout`` (both checked by one sweep a few times per deadline, not by a timer per
request); a request the parser rejects is answered by a JSON 400 naming what was
wrong and none of its bytes; a client that goes away cancels the work its request started.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, NamedTuple

import httptools
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL
from gantry_runtime.httpserver import HttpDate, status_line
from gantry_runtime.wire import ERROR_CONTENT_TYPE, ErrorCode, error_body

from .appkeys import SETTINGS
from .errors import ApiError, answer_exception
from .protocol import GatewayProtocol, GatewayServer

log = logging.getLogger("gantry.gateway")

INVOKE_PREFIX = "/v1/invoke/"
COORD_PREFIX = "/v1/coord/"
COORD = "coord"              # the routes' key of the coordination API's route, when the front serves it
MAX_LINE = 8190              # bytes of the request target, or of one header: aiohttp's limits
MAX_HEADERS = 128
MAX_HEAD = 64 * 1024         # bytes of a whole request head
BODY_HIGH_WATER = 256 * 1024  # buffered request body bytes before the socket stops being read
MAX_QUEUED = 16              # pipelined requests waiting their turn before reading stops
LINGER = 10.0                # seconds an unread request body is still read (and dropped) after the answer,
                             # as aiohttp does: a client still sending it then reads the answer, not a reset

_REASONS = {                 # httptools' error -> the fixed message a caller gets (no byte of theirs)
    httptools.HttpParserInvalidMethodError: "malformed request line",
    httptools.HttpParserInvalidURLError: "malformed request target",
    httptools.HttpParserInvalidStatusError: "malformed request line",
}


class _TooLong(Exception):
    """A request line, a header or the head over the limits above."""


def _rejection(exc: Exception) -> str:
    if isinstance(exc, httptools.HttpParserCallbackError) and isinstance(exc.__context__, _TooLong):
        return "request line or header too long"
    for kind, reason in _REASONS.items():
        if isinstance(exc, kind):
            return reason
    text = str(exc).lower()
    if "header" in text:
        return "malformed header"
    if "chunk" in text or "content-length" in text or "transfer-encoding" in text:
        return "malformed body framing"
    if "version" in text or "http/" in text:
        return "malformed request line"
    return "malformed request head"


# -- writing answers --------------------------------------------------------------------------

def _head(status: int, headers, framing: bytes, close: bool) -> bytes:
    """A response head: the status line, HEADERS (a mapping with ``items()``), Date, the
    framing line(s) and Connection: close when the connection ends after this answer."""
    lines = [f"{k}: {v}\r\n" for k, v in headers.items()]
    return b"".join((status_line(status), "".join(lines).encode("utf-8", "surrogateescape"),
                     b"Date: %s\r\n" % HttpDate.now().encode(),
                     framing, b"Connection: close\r\n\r\n" if close else b"\r\n"))


class Stream:
    """A streamed answer to a Call (what gateway.invoke writes a long or unsized upstream
    body through): the subset of aiohttp's StreamResponse that gateway.invoke uses.  Chunked
    unless its length is known; an HTTP/1.0 client gets the body up to the connection's end."""
    __slots__ = ("status", "headers", "content_length", "prepared", "eof", "_call", "_chunked")

    def __init__(self, call: "Call", status: int, headers) -> None:
        self._call = call
        self.status, self.headers = status, headers
        self.content_length: int | None = None
        self.prepared = self.eof = False
        self._chunked = False

    async def prepare(self, request: Any = None) -> None:
        call = self._call
        front = call.front
        if front.gone:
            raise ConnectionError("the client went away")
        if self.content_length is not None:
            framing = b"Content-Length: %d\r\n" % self.content_length
        elif call.version_11:
            framing, self._chunked = b"Transfer-Encoding: chunked\r\n", True
        else:
            framing, call.keep_alive = b"", False      # HTTP/1.0: the body ends with the connection
        self.prepared = True
        front.transport.write(_head(self.status, self.headers, framing, not call.keep_alive))

    async def write(self, data: bytes) -> None:
        front = self._call.front
        if front.gone:
            raise ConnectionError("the client went away")
        if not data:
            return
        if self._chunked:
            front.transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            front.transport.write(data)
        if front.write_paused:
            await front.drained()

    async def write_eof(self) -> None:
        front = self._call.front
        if front.gone:
            raise ConnectionError("the client went away")
        if self._chunked:
            front.transport.write(b"0\r\n\r\n")
        self.eof = True


class Answer(NamedTuple):
    """A whole answer to a Call, as gateway.invoke builds it for the front."""
    status: int
    headers: Any           # a mapping with items(): CIMultiDict, dict
    body: bytes


# -- a request served here ---------------------------------------------------------------------

class Call:
    """One request the front serves: the few things of aiohttp's ``web.Request`` that
    gateway.invoke, gateway.coord_api, gateway.auth and gateway.tracing read (``app``,
    ``headers``, ``match_info``, ``method``, ``path``, ``rel_url``, ``query``, ``remote``,
    ``transport``, ``content_length``, ``content.readany()``, ``can_read_body``, ``read()``,
    item access), its body as it arrives, and its answer."""
    __slots__ = ("front", "app", "method", "path", "rel_url", "headers", "match_info", "route", "version_11",
                 "keep_alive",
                 "expect", "content_length", "_items", "_chunks", "_buffered", "_done", "_waiter",
                 "_failed", "task")

    def __init__(self, front: "FrontProtocol", method: str, path: str, match_info: Any, route, headers: CIMultiDict,
                 version_11: bool, keep_alive: bool, rel_url: URL | None = None) -> None:
        self.front, self.app = front, front.app
        self.method, self.path, self.route, self.headers = method, path, route, headers
        self.match_info, self.rel_url = match_info, rel_url
        self.version_11, self.keep_alive = version_11, keep_alive
        self.expect = headers.get("Expect", "").lower() == "100-continue"
        length = headers.get("Content-Length")
        self.content_length = int(length) if length is not None and length.isdigit() else None
        self._items: dict = {}
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._done = False
        self._failed: str | None = None     # its body was malformed: the reason
        self._waiter: asyncio.Future | None = None
        self.task: asyncio.Task | None = None

    # aiohttp's request is a mutable mapping (request[PRINCIPAL], request.get(TRACE))
    def __getitem__(self, key):
        return self._items[key]

    def __setitem__(self, key, value) -> None:
        self._items[key] = value

    def get(self, key, default=None):
        return self._items.get(key, default)

    @property
    def remote(self) -> str:
        return self.front.peer

    @property
    def transport(self) -> asyncio.Transport | None:
        return self.front.transport

    @property
    def content(self) -> "Call":
        return self

    @property
    def query(self):
        return self.rel_url.query

    @property
    def can_read_body(self) -> bool:
        return bool(self._chunks) or not self._done

    async def read(self) -> bytes:
        """The whole body, up to the gateway's GANTRY_MAX_BODY (aiohttp's client_max_size)."""
        limit = self.app[SETTINGS].max_body
        parts = []
        size = 0
        while chunk := await self.readany():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, ErrorCode.TOO_LARGE, "request body too large")
            parts.append(chunk)
        return b"".join(parts)

    def open_stream(self, status: int, headers) -> Stream:
        return Stream(self, status, headers)

    # -- the body -----------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        if self.task is not None and self.task.done():      # answered already: the rest is dropped
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > BODY_HIGH_WATER:
            self.front.pause_reading("body")
        self._wake()

    def end(self) -> None:
        self._done = True
        self._wake()

    def fail(self, reason: str) -> None:
        self._failed = reason
        self.keep_alive = False
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def readany(self) -> bytes:
        """The body bytes that have arrived since the last call (waiting for some); b"" at its end."""
        while True:
            if self._chunks:
                data = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
                self._chunks.clear()
                self._buffered = 0
                self.front.resume_reading("body")
                return data
            if self._failed is not None:
                raise ApiError(400, ErrorCode.BAD_REQUEST, self._failed)
            if self._done:
                return b""
            if self.front.gone:
                raise ConnectionError("the client went away")
            self._waiter = self.front.loop.create_future()
            await self._waiter

    # -- serving --------------------------------------------------------------------------------
    def start(self) -> None:
        if self.expect and not self._done:
            self.front.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.task = self.front.loop.create_task(self._serve())

    async def _serve(self) -> None:
        front = self.front
        try:
            resp = await front.server.serve(self, self.route)
        except asyncio.CancelledError:
            return                 # the client went away (connection_lost cancelled this)
        except Exception as exc:   # noqa: BLE001 - every error is a JSON answer, as error_middleware's
            resp = answer_exception(exc, self.method, self.path)
        if front.gone:
            return
        if isinstance(resp, Stream):
            if not resp.eof:       # cut off (an upstream break or timeout closed the connection)
                front.close()
                return
        else:
            self.write_response(resp)
        if self._done or self._failed is not None:
            front.finished(self)
        else:   # an unread body: read (and drop) it for a while first, even before closing, so that
            front.linger(self)   # a client still sending it reads the answer instead of a reset

    def write_response(self, resp: web.Response | Answer) -> None:
        body = resp.body or b""
        if not isinstance(body, (bytes, bytearray)):   # a handler's bug: the front writes bytes bodies only
            resp = answer_exception(TypeError(f"a {type(body).__name__} body, not bytes"), self.method, self.path)
            body = resp.body
        self.front.transport.writelines((_head(resp.status, resp.headers, b"Content-Length: %d\r\n" % len(body),
                                               not self.keep_alive), body))


# -- a request served by the aiohttp application -------------------------------------------------

class _Proxied:
    """A request for the backend: its head as received, its body as it arrives (re-chunked
    when it came chunked), buffered until its turn."""
    __slots__ = ("front", "parts", "chunked", "head_request", "keep_alive", "started", "done")

    def __init__(self, front: "FrontProtocol", head: bytes, chunked: bool, head_request: bool,
                 keep_alive: bool) -> None:
        self.front, self.parts, self.chunked = front, [head], chunked
        self.head_request, self.keep_alive = head_request, keep_alive
        self.started = self.done = False

    def _send(self, data: bytes) -> None:
        if self.started:
            self.front.backend.send(data)
        else:
            self.parts.append(data)

    def feed(self, data: bytes) -> None:
        self._send(b"%x\r\n%s\r\n" % (len(data), data) if self.chunked else data)

    def end(self) -> None:
        if self.chunked:
            self._send(b"0\r\n\r\n")
        self.done = True

    def start(self) -> None:
        self.started = True
        backend = self.front.open_backend()
        backend.expect(self)
        for part in self.parts:
            backend.send(part)
        self.parts.clear()


class _Backend(asyncio.Transport):
    """The aiohttp side of one client connection: a GatewayProtocol fed the requests the
    front does not serve, writing its answers through this transport to the client's (and
    parsed on the way only to know where each ends).  No socket in between: aiohttp sees the
    client's address, and its flow control is the client connection's."""

    def __init__(self, front: "FrontProtocol") -> None:
        super().__init__()
        self.front = front
        self.parser = httptools.HttpResponseParser(self)
        self.waiting: deque[_Proxied] = deque()
        self.closed = False
        server = front.server
        self.handler = GatewayProtocol(server, loop=server._loop, header_timeout=0, **server._kwargs)
        self.handler.connection_made(self)     # the front keeps the head deadline: header_timeout=0
        if front.write_paused:
            self.handler.pause_writing()

    def expect(self, req: _Proxied) -> None:
        self.waiting.append(req)

    def send(self, data: bytes) -> None:
        if not self.closed:
            self.handler.data_received(data)

    # -- what aiohttp's protocol calls ----------------------------------------------------------
    def write(self, data) -> None:
        if self.closed:
            return
        front = self.front
        if not front.gone:
            front.transport.write(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError as exc:
            log.error("the admin API's answer could not be parsed", extra={"error": repr(exc)})
            front.close()

    def writelines(self, lines) -> None:
        for data in lines:
            self.write(data)

    def is_closing(self) -> bool:
        return self.closed or self.front.gone

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        front = self.front
        if front.backend is self:
            front.backend = None
        front.loop.call_soon(self.handler.connection_lost, None)
        if self.waiting:           # it closed before its last answer: the client's connection ends too
            front.close()

    abort = close

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.front.peername
        return self.front.transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self.front.pause_reading("backend")

    def resume_reading(self) -> None:
        self.front.resume_reading("backend")

    def is_reading(self) -> bool:
        return "backend" not in self.front._read_pauses

    def get_write_buffer_size(self) -> int:
        return self.front.transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.front.transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.front.transport.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return False

    # -- the answers' ends ----------------------------------------------------------------------
    def on_headers_complete(self) -> None:
        if self.waiting and self.waiting[0].head_request and self.parser.get_status_code() >= 200:
            self.parser = httptools.HttpResponseParser(self)   # an answer to HEAD has no body
            self._answered()

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() >= 200:   # 1xx answers (100 Continue) are not the answer
            self._answered()

    def _answered(self) -> None:
        if self.waiting:
            req = self.waiting.popleft()
            if not self.front.gone:   # after this write returns: the front may start the next request
                self.front.loop.call_soon(self.front.finished, req)

    def lost(self, exc: BaseException | None) -> None:
        """The client's connection is gone."""
        if not self.closed:
            self.closed = True
            self.handler.connection_lost(exc)


# -- the connection --------------------------------------------------------------------------

class FrontProtocol(asyncio.Protocol):
    def __init__(self, server: "FrontServer") -> None:
        self.server = server
        self.app = server.app
        self.loop = server._loop
        self.routes = server.routes
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.peername: Any = None
        self.parser = httptools.HttpRequestParser(self)
        self.gone = False               # the connection is closed (or closing)
        self.closing = False            # close once the requests in hand are answered
        self.queue: deque = deque()     # requests in the order they came; the first is being answered
        self.receiving: Call | _Proxied | None = None
        self.backend: _Backend | None = None
        self.write_paused = False
        self._drain: asyncio.Future | None = None
        self._read_pauses: set[str] = set()
        self._url: list[bytes] = []
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        # deadlines, checked by FrontServer's sweep (no timer per request): loop times since
        # a head has been awaited (None: not awaiting one) and since the connection is idle
        self.head_since: float | None = None
        self.idle_since: float | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._rejected: str | None = None

    # -- transport callbacks --------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.peername = transport.get_extra_info("peername")
        self.peer = str(self.peername[0]) if isinstance(self.peername, (tuple, list)) else str(self.peername or "")
        self.server.fronts.add(self)
        self.head_since = self.loop.time()

    def connection_lost(self, exc) -> None:
        self.gone = True
        self.server.fronts.discard(self)
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        for req in self.queue:
            if isinstance(req, Call):
                if req.task is not None and not req.task.done():
                    req.task.cancel()      # handler cancellation: the forward closes its upstream connection
                req._wake()
        if self.backend is not None:
            self.backend.lost(exc)
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.backend is not None and not self.backend.closed:
            self.backend.handler.pause_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.backend is not None and not self.backend.closed:
            self.backend.handler.resume_writing()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    async def drained(self) -> None:
        if self.write_paused and not self.gone:
            self._drain = self.loop.create_future()
            await self._drain

    def data_received(self, data: bytes) -> None:
        if self._rejected is not None:
            return
        self.idle_since = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # an Upgrade (h2c, websocket) is not taken: the request is answered as HTTP/1.1
            # and what followed its head is parsed as the next request
            rest = data[exc.args[0]:]
            if rest:
                self.data_received(rest)
        except httptools.HttpParserError as exc:
            if isinstance(exc, httptools.HttpParserCallbackError) and not isinstance(exc.__context__, _TooLong):
                log.error("the gateway's request parsing failed", exc_info=exc.__context__ or exc)
            self._reject(_rejection(exc), type(exc.__context__ or exc).__name__)

    def eof_received(self) -> bool:
        # the client half-closed: answer what it sent, then close
        self.closing = True
        if not self.queue:
            self.close()
        return True

    # -- parser callbacks -----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url.clear()
        self._headers = []
        self._head_size = 0
        if self.head_since is None:
            self.head_since = self.loop.time()

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        self._head_size += len(url)
        if self._head_size > MAX_LINE:
            raise _TooLong

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        n = len(name) + len(value)
        self._head_size += n
        if n > MAX_LINE or self._head_size > MAX_HEAD or len(self._headers) > MAX_HEADERS:
            raise _TooLong

    def on_headers_complete(self) -> None:
        self.head_since = None
        parser = self.parser
        method = parser.get_method().decode("ascii")
        url = b"".join(self._url)
        version_11 = parser.get_http_version() == "1.1"
        keep_alive = parser.should_keep_alive()
        req: Call | _Proxied | None = None
        if url.startswith(b"/v1/invoke/"):
            req = self._call(method, url, version_11, keep_alive)
        elif url.startswith(b"/v1/coord/") and COORD in self.routes:
            req = Call(self, method, url.partition(b"?")[0].decode("utf-8", "surrogateescape"), None,
                       self.routes[COORD], self._decoded_headers(), version_11, keep_alive,
                       URL(url.decode("utf-8", "surrogateescape"), encoded=True))
        if req is None:
            chunked = any(n.lower() == b"transfer-encoding" for n, _ in self._headers)
            head = b"".join([b"%s %s HTTP/%s\r\n" % (method.encode(), url, b"1.1" if version_11 else b"1.0"),
                             *(b"%s: %s\r\n" % h for h in self._headers), b"\r\n"])
            req = _Proxied(self, head, chunked, method == "HEAD", keep_alive)
        self.receiving = req
        self.queue.append(req)
        if len(self.queue) == 1:
            req.start()
        elif len(self.queue) > MAX_QUEUED:
            self.pause_reading("queue")

    def _call(self, method: str, url: bytes, version_11: bool, keep_alive: bool) -> Call | None:
        """A Call when this request is one the front serves; None sends it to the backend."""
        path = url.partition(b"?")[0]
        if b"%" in path:
            return None            # aiohttp decodes escapes in a name; so does the backend
        name, _, rest = path[len(INVOKE_PREFIX):].decode("utf-8", "surrogateescape").partition("/")
        route = self.routes.get((method, "/" + rest if rest else ""))
        if route is None or not name:
            return None
        headers = self._decoded_headers()
        if "Idempotency-Key" in headers:   # runs as an async invocation (gateway.async_api): the backend's
            return None
        return Call(self, method, path.decode("utf-8", "surrogateescape"), {"name": name}, route, headers,
                    version_11, keep_alive)

    def _decoded_headers(self) -> CIMultiDict:
        return CIMultiDict((n.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for n, v in self._headers)

    def on_body(self, body: bytes) -> None:
        if self.receiving is not None:
            self.receiving.feed(body)

    def on_message_complete(self) -> None:
        req, self.receiving = self.receiving, None
        if req is not None:
            req.end()

    # -- answering in order ------------------------------------------------------------------------
    def finished(self, req: Call | _Proxied) -> None:
        """REQ (the first in the queue) is answered: start the next one, or wait for one."""
        if not self.queue or self.queue[0] is not req:
            return
        self.queue.popleft()
        if not req.keep_alive or (self.closing and not self.queue):
            self.close()
            return
        self.resume_reading("queue")
        if self.queue:
            self.queue[0].start()
        elif self._rejected is not None:
            self._answer_rejection()
        else:
            self.idle_since = self.loop.time()

    def linger(self, call: Call) -> None:
        """CALL was answered before its body was all read: the rest is read and dropped, for
        up to LINGER seconds (as aiohttp does), before the next request is taken."""
        call._chunks.clear()
        self.resume_reading("body")
        self._linger_timer = self.loop.call_later(LINGER, self.close)

        def done() -> None:
            if self._linger_timer is not None:
                self._linger_timer.cancel()
                self._linger_timer = None
            self.finished(call)
        self.loop.create_task(self._until_read(call, done))

    async def _until_read(self, call: Call, then) -> None:
        while not call._done and not self.gone:
            call._waiter = self.loop.create_future()
            await call._waiter
        if not self.gone:
            then()

    def open_backend(self) -> _Backend:
        if self.backend is None or self.backend.closed:
            self.backend = _Backend(self)
        return self.backend

    # -- flow control, timers, closing -------------------------------------------------------------
    def pause_reading(self, why: str) -> None:
        if not self._read_pauses and not self.gone:
            self.transport.pause_reading()
        self._read_pauses.add(why)

    def resume_reading(self, why: str) -> None:
        if why in self._read_pauses:
            self._read_pauses.discard(why)
            if not self._read_pauses and not self.gone:
                self.transport.resume_reading()

    def overdue(self, now: float, header_timeout: float, keepalive_timeout: float) -> None:
        """Close the connection if its request head is late or it has idled too long."""
        if header_timeout > 0 and self.head_since is not None and now - self.head_since > header_timeout:
            log.debug("closed a connection without a request head in time", extra={"timeout": header_timeout})
            self.close()
        elif keepalive_timeout and self.idle_since is not None and now - self.idle_since > keepalive_timeout:
            self.close()

    def _reject(self, reason: str, error: str) -> None:
        self.head_since = None
        self._rejected = reason
        log.info("rejected a malformed request", extra={"remote": self.peer, "reason": reason, "error": error})
        self.pause_reading("rejected")
        bad, self.receiving = self.receiving, None     # None: a new request's head was bad
        if bad is not None and self.queue and bad is self.queue[0]:
            if isinstance(bad, Call):   # its body was bad while it is served: it answers the 400 itself
                self._rejected, self.closing = None, True
                bad.fail(reason)
            else:                       # the backend has part of its body: nothing sensible is left to say
                self.close()
            return
        if bad is not None and bad in self.queue:
            self.queue.remove(bad)      # answered 400 after the requests before it
        if not self.queue:
            self._answer_rejection()

    def _answer_rejection(self) -> None:
        if not self.gone:
            body = error_body(ErrorCode.BAD_REQUEST, self._rejected or "malformed request head")
            self.transport.writelines((_head(400, {"Content-Type": ERROR_CONTENT_TYPE},
                                             b"Content-Length: %d\r\n" % len(body), True), body))
        self.close()

    def close(self) -> None:
        """Close the connection (what was written still goes out first)."""
        if not self.gone:
            self.gone = True
            self.transport.close()

    # what aiohttp's web.Server asks of its connections at shutdown
    def begin_shutdown(self) -> None:
        self.closing = True
        if not self.queue:
            self.close()

    async def shutdown(self, timeout: float | None) -> None:
        tasks = [req.task for req in self.queue if isinstance(req, Call) and req.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        for task in tasks:
            task.cancel()
        self.close()


class FrontServer(GatewayServer):
    """aiohttp's low-level server whose connections are FrontProtocols; the GatewayProtocols
    it would have made serve their backends (_Backend)."""

    def __init__(self, *args: Any, app: web.Application, routes: dict, serve, keepalive_timeout: float,
                 **kwargs: Any) -> None:
        super().__init__(*args, keepalive_timeout=keepalive_timeout, **kwargs)
        self.app, self.routes, self.serve, self.keepalive_timeout = app, routes, serve, keepalive_timeout
        self.fronts: set[FrontProtocol] = set()
        # one sweep for every connection's deadlines, a few times per shortest deadline
        limits = [t for t in (self.header_timeout, keepalive_timeout) if t and t > 0]
        self._sweep_every = max(0.05, min([1.0, *(t / 4 for t in limits)]))
        self._sweeper: asyncio.TimerHandle | None = self._loop.call_later(self._sweep_every, self._sweep)

    def _sweep(self) -> None:
        now = self._loop.time()
        for front in list(self.fronts):
            front.overdue(now, self.header_timeout, self.keepalive_timeout)
        self._sweeper = self._loop.call_later(self._sweep_every, self._sweep)

    def __call__(self) -> FrontProtocol:
        return FrontProtocol(self)

    def pre_shutdown(self) -> None:
        super().pre_shutdown()
        for front in list(self.fronts):
            front.begin_shutdown()

    async def shutdown(self, timeout: float | None = None) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        await asyncio.gather(*(front.shutdown(timeout) for front in list(self.fronts)),
                             super().shutdown(timeout))


class GatewayRunner(web.AppRunner):
    """``web.AppRunner`` whose server is a FrontServer (the app starts up as usual): what
    ``serve`` and the tests run.  ROUTES: (method, path after /v1/invoke/NAME) -> the route
    the front serves itself, by ``await SERVE(call, route)`` (gateway.invoke.FRONT_ROUTES and
    serve_call)."""

    def __init__(self, app: web.Application, *, header_timeout: float, keepalive_timeout: float = 75.0,
                 routes: dict, serve, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=keepalive_timeout, **kwargs)
        self._header_timeout, self._keepalive_timeout = header_timeout, keepalive_timeout
        self._routes, self._serve = routes, serve

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        kwargs = dict(plain._kwargs)
        kwargs.pop("keepalive_timeout", None)
        return FrontServer(plain.request_handler, request_factory=plain.request_factory,
                           handler_cancellation=plain.handler_cancellation, loop=plain._loop,
                           header_timeout=self._header_timeout, app=self._app, routes=self._routes, serve=self._serve,
                           keepalive_timeout=self._keepalive_timeout, **kwargs)

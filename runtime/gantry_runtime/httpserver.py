"""The runtime's HTTP/1.1 server: an asyncio Protocol per connection, requests parsed by
httptools (llhttp), on uvloop when it is installed.

Why not aiohttp's server: importing it was about half of the runtime's start (docs/runtime.md,
"Start-up"), and the runtime serves two routes to one client, the gateway.  This module gives
the handlers the few things of a request and a response they use (``Request``, ``Response``,
``StreamResponse``) and keeps the contracts aiohttp's server kept for them: keep-alive (an
idle connection is closed after ``KEEPALIVE`` seconds), requests on one connection answered in
order, a body read only when the handler asks (so a 503 goes before it), a body over the limit
refused (``TooLarge``), each stream chunk handed to the socket at once (TCP_NODELAY), and the
handler's task cancelled when the client goes away.

Standard library and httptools only.
"""
from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import deque
from typing import Any, Awaitable, Callable, Iterable

import httptools

from .wire import ERROR_CONTENT_TYPE, ErrorCode, error_body

KEEPALIVE = 75.0          # seconds an idle kept-alive connection stays open (aiohttp's default)
SHUTDOWN_GRACE = 0.5      # seconds requests still running may take once the server closes
MAX_QUEUED = 16           # pipelined requests waiting their turn before reading stops
# An answer given before its request's body was all in (a 503 or 413 sent before reading it)
# is followed by reading and dropping the rest, for up to LINGER seconds, even when the
# connection closes after it: closing on a client still sending makes its kernel reset the
# connection, and a reset may throw away the answer it has not read yet (aiohttp does the same).
LINGER = 10.0
NO_BODY = frozenset((204, 304))


class TooLarge(Exception):
    """The request body is over the server's limit."""


class Headers:
    """Header (name, value) pairs, names compared without case; names may repeat."""

    __slots__ = ("_items",)

    def __init__(self, items: Any = ()) -> None:
        if isinstance(items, Headers):
            self._items = list(items._items)
        elif hasattr(items, "items"):
            self._items = list(items.items())
        else:
            self._items = [(k, v) for k, v in items]

    def get(self, name: str, default: Any = None) -> Any:
        low = name.lower()
        for k, v in self._items:
            if k.lower() == low:
                return v
        return default

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __setitem__(self, name: str, value: str) -> None:
        self.popall(name, None)
        self._items.append((name, value))

    def popall(self, name: str, default: Any = None) -> Any:
        low = name.lower()
        gone = [v for k, v in self._items if k.lower() == low]
        if not gone:
            return default
        self._items = [(k, v) for k, v in self._items if k.lower() != low]
        return gone

    def update(self, other: Any) -> None:
        for k, v in (other.items() if hasattr(other, "items") else other):
            self[k] = v

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __iter__(self):
        return iter(k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class RequestHeaders(dict):
    """A request's headers: lower-case names, one value each (the last), looked up without case."""

    __slots__ = ()

    def get(self, name: str, default: Any = None) -> Any:
        return dict.get(self, name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return dict.__getitem__(self, name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())


class Request:
    """One request: its head at once, its body when ``read()`` is awaited."""

    __slots__ = ("method", "path", "query", "headers", "version", "keep_alive", "content_length",
                 "_proto", "_chunks", "_size", "_complete", "_waiter", "_too_large", "_continue",
                 )

    def __init__(self, proto: "HttpProtocol", method: str, target: bytes, headers: RequestHeaders,
                 version: str, keep_alive: bool) -> None:
        self._proto = proto
        self.method = method
        path, _, query = target.decode("latin-1").partition("?")
        self.path, self.query = path, query
        self.headers = headers          # lower-case names: one value each (the last)
        self.version = version
        self.keep_alive = keep_alive
        length = headers.get("content-length")
        self.content_length = int(length) if length and length.isdigit() else None
        self._chunks: list[bytes] = []
        self._size = 0
        self._complete = False
        self._waiter: asyncio.Future | None = None
        self._too_large = False
        self._continue = headers.get("expect", "").lower() == "100-continue"

    @property
    def content_type(self) -> str:
        raw = self.headers.get("content-type")
        if not raw:
            return "application/octet-stream"
        return raw.split(";", 1)[0].strip().lower()

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._proto.transport

    def _body(self, data: bytes) -> None:
        if self._too_large:
            return
        self._size += len(data)
        if self._size > self._proto.server.max_body:
            self._too_large, self._chunks = True, []
        else:
            self._chunks.append(data)
        self._wake()

    def _done(self) -> None:
        self._complete = True
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def read(self) -> bytes:
        """The whole body; ``TooLarge`` once it passes the server's limit."""
        if self._continue and not self._complete:
            self._continue = False
            t = self._proto.transport
            if t is not None and not t.is_closing():
                t.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        while not self._complete and not self._too_large:
            if self._proto.gone:
                raise ConnectionResetError("the client went away while sending the body")
            self._waiter = asyncio.get_running_loop().create_future()
            self._proto.resume_reading_for_body()
            await self._waiter
            self._waiter = None
        if self._too_large:
            raise TooLarge()
        return b"".join(self._chunks)


class Response:
    """A whole response, written in one piece."""

    prepared = False

    def __init__(self, *, status: int = 200, body: bytes | None = None, headers: Any = None,
                 content_type: str | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = Headers(headers or ())
        self._close = False
        if content_type is not None:
            self.headers["Content-Type"] = content_type
        elif body and "Content-Type" not in self.headers:
            self.headers["Content-Type"] = "application/octet-stream"

    def force_close(self) -> None:
        self._close = True


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status=status, body=json.dumps(data).encode(), content_type="application/json")


def error_response(status: int, code: str, message: str, headers: Any = None) -> Response:
    resp = Response(status=status, body=error_body(code, message), headers=headers)
    resp.headers["Content-Type"] = ERROR_CONTENT_TYPE
    return resp


class StreamResponse:
    """A response whose body is written piece by piece as chunks (``Transfer-Encoding:
    chunked``); ``write`` hands each one to the socket at once."""

    def __init__(self, *, status: int = 200, headers: Any = None) -> None:
        self.status = status
        self.headers = Headers(headers or ())
        self.prepared = False
        self.eof = False
        self._proto: HttpProtocol | None = None
        self._close = False

    def enable_chunked_encoding(self) -> None:
        pass   # always chunked

    def force_close(self) -> None:
        self._close = True

    async def prepare(self, request: Request) -> None:
        proto = request._proto
        self._proto = proto
        self.prepared = True
        self.headers.popall("Content-Length", None)
        self.headers["Transfer-Encoding"] = "chunked"
        proto.write_head(self.status, self.headers, self._close or not proto.keeps(request))
        await proto.drain()

    async def write(self, data: bytes) -> None:
        if not data:
            return
        proto = self._proto
        proto.write(b"%x\r\n%b\r\n" % (len(data), data))
        await proto.drain()

    async def write_eof(self) -> None:
        if self.eof:
            return
        self.eof = True
        self._proto.write(b"0\r\n\r\n")
        await self._proto.drain()


Handler = Callable[[Request], Awaitable[Any]]

# The statuses the runtime itself sends; any other (a handler's Response) is made on first use
# (http.HTTPStatus is not imported at start).
_STATUS_LINES: dict[int, bytes] = {status: b"HTTP/1.1 %d %b\r\n" % (status, phrase) for status, phrase in (
    (100, b"Continue"), (200, b"OK"), (400, b"Bad Request"), (403, b"Forbidden"), (404, b"Not Found"),
    (413, b"Request Entity Too Large"), (500, b"Internal Server Error"), (502, b"Bad Gateway"),
    (503, b"Service Unavailable"), (504, b"Gateway Timeout"))}


def status_line(status: int) -> bytes:
    """The status line of STATUS, with its CRLF (cached; the gateway's front uses it too)."""
    line = _STATUS_LINES.get(status)
    if line is None:
        from http import HTTPStatus
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n".encode()
    return line


class HttpDate:
    """The Date header's value, formatted once a second (the gateway's front uses it too)."""
    second = -1
    value = ""

    @classmethod
    def now(cls) -> str:
        t = int(time.time())
        if t != cls.second:
            cls.second, cls.value = t, time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(t))
        return cls.value


class HttpProtocol(asyncio.Protocol):
    """One client connection: parses requests, answers them in order with the server's
    ``route`` function, one at a time."""

    def __init__(self, server: "HttpServer") -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.gone = False
        self.queue: deque[Request] = deque()
        self.current: Request | None = None      # the request being parsed (head or body)
        self.serving: Request | None = None      # the request being answered
        self.task: asyncio.Task | None = None
        self.closing = False                     # close once the answer being written is out
        self._url = bytearray()
        self._hname = b""
        self._headers = RequestHeaders()
        self._paused_reading = False
        self._paused_writing = False
        self._drain: asyncio.Future | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None   # reading off an answered request's body
        self._linger_close = False                        # ... then closing the connection

    # -- connection --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):
                pass
        self.server.connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.server.connections.discard(self)
        self._disarm_idle()
        if self._linger is not None:
            self._linger.cancel()
        if self.task is not None and not self.task.done():
            self.task.cancel()      # the client went away: its invocation is cancelled
        for req in (self.current, self.serving, *self.queue):
            if req is not None:
                req._wake()
        self.queue.clear()
        d = self._drain
        if d is not None and not d.done():
            d.set_exception(ConnectionResetError("connection lost"))

    def data_received(self, data: bytes) -> None:
        self._disarm_idle()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject("upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._reject(f"malformed request: {type(exc).__name__}")

    def eof_received(self) -> bool | None:
        return None   # close our side too

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        d = self._drain
        if d is not None and not d.done():
            d.set_result(None)

    def resume_reading_for_body(self) -> None:
        if self._paused_reading and self.transport is not None:
            self._paused_reading = False
            self.transport.resume_reading()

    # -- parser callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = bytearray()
        self._headers = RequestHeaders()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        dict.__setitem__(self._headers, name.decode("latin-1").lower(), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return   # bytes after a request the connection closes on: nobody to answer
        p = self.parser
        req = Request(self, p.get_method().decode("latin-1"), bytes(self._url), self._headers,
                      p.get_http_version(), p.should_keep_alive())
        self.current = req
        if self.serving is None and self.task is None:
            self._start(req)
        else:
            self.queue.append(req)
            if len(self.queue) >= MAX_QUEUED and self.transport is not None:
                self._paused_reading = True
                self.transport.pause_reading()

    def on_body(self, body: bytes) -> None:
        req = self.current
        if req is None:
            return
        if req is self.serving or req in self.queue:
            req._body(body)
        # else: answered already without reading it: dropped (see LINGER)

    def on_message_complete(self) -> None:
        req = self.current
        self.current = None
        if req is not None:
            req._done()
            if self._linger is not None:   # the body of an answered request has been read off
                self._linger.cancel()
                self._linger = None
                if self._linger_close:
                    self.transport.close()
                else:
                    self._arm_idle()

    # -- answering ---------------------------------------------------------------------------

    def _start(self, req: Request) -> None:
        self.serving = req
        self.task = self.loop.create_task(self._serve(req))

    async def _serve(self, req: Request) -> None:
        close = False
        try:
            try:
                resp = await self.server.route(req)
            except asyncio.CancelledError:
                return
            except Exception:
                self.server.log.exception("request failed", extra={"path": req.path})
                # a bug of the runtime's own, never the handler's (invoke catches those)
                resp = error_response(500, "internal", "the runtime failed to answer; see its log")
            if self.gone:
                return
            close = self.closing or not self.keeps(req) or getattr(resp, "_close", False)
            if isinstance(resp, StreamResponse):
                if resp.prepared:
                    if not resp.eof and self.transport is not None and not self.transport.is_closing():
                        await resp.write_eof()
                else:
                    resp._close = resp._close or close
                    await resp.prepare(req)
                    await resp.write_eof()
            else:
                self._write_whole(req, resp, close)
        except (ConnectionError, asyncio.CancelledError):
            close = True
        finally:
            self.serving = None
            self.task = None
            if self.gone or self.transport is None or self.transport.is_closing():
                return
            if not req._complete:
                if self.current is not req:
                    self.transport.close()   # body neither read nor still arriving: cannot resync
                    return
                self._linger_close = close or self.server.closed
                self._linger = self.loop.call_later(LINGER, self.transport.close)
                return
            if close or self.server.closed:
                self.transport.close()
                return
            if self.queue:
                self._start(self.queue.popleft())
                if self._paused_reading and len(self.queue) < MAX_QUEUED:
                    self._paused_reading = False
                    self.transport.resume_reading()
            elif self.current is None:
                self._arm_idle()

    def keeps(self, req: Request) -> bool:
        return req.keep_alive and not self.server.closed

    def _write_whole(self, req: Request, resp: Response, close: bool) -> None:
        body = resp.body or b""
        if resp.status in NO_BODY:
            body = b""
            resp.headers.popall("Content-Length", None)
            resp.headers.popall("Content-Type", None)
        else:
            resp.headers["Content-Length"] = str(len(body))
        head = self._head(resp.status, resp.headers, close)
        if req.method == "HEAD":
            body = b""
        self.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.transport.write(body)

    def _head(self, status: int, headers: Headers, close: bool) -> bytes:
        lines = [f"{k}: {v}\r\n" for k, v in headers.items()]
        lines.append(f"Date: {HttpDate.now()}\r\nServer: gantry-runtime\r\n")
        if close:
            lines.append("Connection: close\r\n")
            self.closing = True
        lines.append("\r\n")
        return status_line(status) + "".join(lines).encode("latin-1")

    def write_head(self, status: int, headers: Headers, close: bool) -> None:
        self.write(self._head(status, headers, close))

    def write(self, data: bytes) -> None:
        t = self.transport
        if self.gone or t is None or t.is_closing():
            raise ConnectionResetError("the client went away")
        t.write(data)

    async def drain(self) -> None:
        if self.gone:
            raise ConnectionResetError("the client went away")
        if self._paused_writing:
            if self._drain is None or self._drain.done():
                self._drain = self.loop.create_future()
            await self._drain

    def _reject(self, message: str) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        if self.serving is None:
            resp = error_response(400, ErrorCode.BAD_REQUEST, message)
            body = resp.body or b""
            resp.headers["Content-Length"] = str(len(body))
            t.write(self._head(400, resp.headers, True) + body)
        t.close()

    # -- idle --------------------------------------------------------------------------------

    def _arm_idle(self) -> None:
        self._disarm_idle()
        self._idle = self.loop.call_later(KEEPALIVE, self._idle_out)

    def _disarm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _idle_out(self) -> None:
        self._idle = None
        if self.serving is None and self.current is None and self.transport is not None:
            self.transport.close()


def _literal_socket(host: str, port: int, backlog: int) -> socket.socket | None:
    """A listening socket on an IP address literal (the usual 0.0.0.0), made here: the loop's
    resolver would import the IDNA codec at start to encode it; None for a host name."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            sock.listen(backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock
    return None


class HttpServer:
    """Listens and answers every request with ``route(request)``."""

    def __init__(self, route: Handler, *, max_body: int, log: Any) -> None:
        self.route = route
        self.max_body = max_body
        self.log = log
        self.loop = asyncio.get_running_loop()
        self.connections: set[HttpProtocol] = set()
        self.closed = False
        self._server: asyncio.AbstractServer | None = None

    async def listen(self, host: str, port: int, backlog: int = 1024) -> None:
        sock = _literal_socket(host, port, backlog)
        if sock is not None:
            self._server = await self.loop.create_server(lambda: HttpProtocol(self), sock=sock)
        else:   # a host name: resolved by the loop
            self._server = await self.loop.create_server(lambda: HttpProtocol(self), host, port,
                                                         backlog=backlog, reuse_address=True)

    @property
    def sockets(self) -> Iterable[socket.socket]:
        return self._server.sockets if self._server is not None else ()

    async def close(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop listening, close idle connections, give running answers ``grace`` seconds,
        then cancel them and close everything."""
        self.closed = True
        if self._server is not None:
            self._server.close()
        for proto in list(self.connections):
            if proto.serving is None and proto.transport is not None:
                proto.transport.close()
        end = time.monotonic() + grace
        while any(p.task is not None for p in self.connections) and time.monotonic() < end:
            await asyncio.sleep(0.02)
        for proto in list(self.connections):
            if proto.task is not None:
                proto.task.cancel()
            if proto.transport is not None:
                proto.transport.close()
        await asyncio.sleep(0)

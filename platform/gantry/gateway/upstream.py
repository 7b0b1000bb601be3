"""A small HTTP/1.1 client for the gateway's forward path: one request (a POST, or a GET
without a body) per forward over a pool of persistent connections per instance, on asyncio
Protocols.

The forward path needs very little of a general client (no cookies, redirects, proxies,
tracing, URL building, compression), and profiling showed aiohttp's ClientSession spending
more CPU per request than the rest of the gateway's request path.  This client sends the
request head and body in one write, parses the response with llhttp (httptools, the parser
uvicorn uses: one per connection, fed as bytes arrive), and hands the body on as it arrives:
Content-Length, chunked, or (without either) up to the connection's end.  The reads of a
body of known length or up to the end that follow the head's read are passed on as they
came, counted but not parsed (llhttp would copy each one).

What llhttp refuses is a BadResponse (its reason in the message), and so is, on top of it: a
version other than HTTP/1.0 or 1.1, a status below 100, a 101, a 1xx answer with a body, a
transfer coding that does not end in chunked, a head over MAX_HEAD bytes, and any byte after
the end of the response but stray CRLFs (llhttp skips those).  Interim 1xx answers are
skipped, trailers read and dropped, and Transfer-Encoding beside Content-Length is read as
chunked (RFC 9112 6.3: the Transfer-Encoding wins), the one leniency asked of llhttp.

A connection goes back to its instance's pool only after its response was read completely
and the server did not ask to close it; anything else (a cancelled or timed-out request, a
broken or malformed response) closes it, which is how the runtime learns to cancel work.
Idle connections are closed after ``keepalive`` seconds (shorter than the runtime's own
keep-alive, so the gateway is the side that closes an idle connection).
"""
from __future__ import annotations

import asyncio
import time
from collections import deque

import httptools

MAX_HEAD = 64 * 1024          # bytes of status line + headers
HIGH_WATER = 256 * 1024       # buffered body bytes before the socket stops being read
_HEAD, _LENGTH, _CHUNKED, _UNTIL_CLOSE, _DONE = range(5)


class UpstreamError(Exception):
    """Base class.  ``request_sent``: bytes of the request went to the instance, so it may have
    started the work (only an error with ``request_sent`` false is safe to retry elsewhere).
    ``before_response``: no byte of a response arrived, which says nothing about whether the
    work ran: an instance that crashes after its side effects answers nothing either."""
    before_response = False
    request_sent = True


class ConnectFailed(UpstreamError):
    """No connection: nothing was sent."""
    before_response = True
    request_sent = False


class Disconnected(UpstreamError):
    """The connection closed (or reset) before the response was complete; ``request_sent`` is
    false only for a pooled connection found closed before any byte of the request was written."""

    def __init__(self, msg: str, before_response: bool, request_sent: bool = True) -> None:
        super().__init__(msg)
        self.before_response, self.request_sent = before_response, request_sent


class BadResponse(UpstreamError):
    """The instance's answer is not valid HTTP/1.1 as this client reads it."""


class Response:
    __slots__ = ("status", "headers", "content_length", "_conn")

    def __init__(self, conn: "_Conn", status: int, headers: list[tuple[str, str]], length: int | None) -> None:
        self._conn = conn
        self.status, self.headers, self.content_length = status, headers, length

    @property
    def complete(self) -> bool:
        """The whole body has been read already (by ``read_chunk``, or it came with the head)."""
        return self._conn.state == _DONE and not self._conn.chunks

    def buffered(self) -> bool:
        """The whole body has arrived (it may not have been taken yet)."""
        return self._conn.state == _DONE

    async def read_chunk(self) -> bytes:
        """The body bytes that have arrived since the last call, waiting for some if none
        have; b"" at the end.  Raises Disconnected or BadResponse."""
        return await self._conn.read_chunk()

    async def read(self, limit: int | None = None) -> bytes:
        parts = []
        size = 0
        while True:
            chunk = await self._conn.read_chunk()
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)
            size += len(chunk)
            if limit is not None and size > limit:
                raise BadResponse(f"response body over {limit} bytes")

    def release(self) -> None:
        """Done with the response: a completely read one returns its connection to the pool,
        anything else closes it."""
        self._conn.finish()


class _Malformed(Exception):
    """Raised inside a parser callback to stop llhttp; the reason is already in ``_Conn.error``."""


class _Conn(asyncio.Protocol):
    def __init__(self, pool: "UpstreamPool", key: tuple[str, int]) -> None:
        self.pool, self.key = pool, key
        self.transport: asyncio.Transport | None = None
        self.parser = self._new_parser()
        self.state = _DONE
        self.active = False           # a request is using this connection
        self.got_bytes = False        # some of the response arrived
        self.head_waiter: asyncio.Future | None = None
        self.response: Response | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.waiter: asyncio.Future | None = None
        self.error: UpstreamError | None = None
        self.keep_alive = True
        self.paused = False
        self.closed = False
        self.idle_since = 0.0
        # the message being parsed
        self.head_bytes = 0           # bytes fed while its head was incomplete (bounded by MAX_HEAD)
        self.headers: list[tuple[str, str]] = []
        self.length: int | None = None
        self.remaining = 0            # _LENGTH: body bytes still to come
        self.te: bytes | None = None  # the Transfer-Encoding values, joined
        self.trailer_bytes = 0
        self.stall = 0                # _CHUNKED: bytes fed since body or a trailer last arrived
        self.parts: list[bytes] = []  # body bytes of the current feed
        self.parts_seen = False       # the current feed brought body bytes or a trailer

    # -- protocol callbacks -------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.pool._forget(self)
        if self.active and self.state != _DONE:
            if self.state == _UNTIL_CLOSE:
                self.state = _DONE
                self._wake()
            else:
                self._fail(Disconnected(f"connection closed by the instance ({exc!r})" if exc else
                                        "connection closed by the instance",
                                        before_response=not self.got_bytes))

    def pause_writing(self) -> None:      # bodies are bounded and written at once
        pass

    def resume_writing(self) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        if not self.active or self.error is not None:
            self.close()                  # nothing may arrive on an idle connection
            return
        state = self.state
        if state == _LENGTH:              # the rest of a body of known length: counted, not parsed
            self._body_length(data)
            return
        if state == _UNTIL_CLOSE:
            self._push(bytes(data))
            return
        if state == _DONE:
            self._fail(BadResponse("bytes after the end of the response"))
            return
        self.got_bytes = True
        if state == _HEAD:
            room = MAX_HEAD - self.head_bytes
            if len(data) > room:          # the head must end within the room left
                if not self._feed(data[:room]):
                    return
                if self.state == _HEAD:
                    self._fail(BadResponse(f"response head over {MAX_HEAD} bytes"))
                else:
                    self.data_received(data[room:])
                return
            self.head_bytes += len(data)
        if not self._feed(data) or state != _CHUNKED:
            return
        # llhttp keeps no limit of its own on chunk framing or on one unfinished trailer
        # (httptools buffers a header until it ends): bound what arrives without progress.
        if self.parts_seen:
            self.stall = 0
        else:
            self.stall += len(data)
            if self.stall > MAX_HEAD:
                self._fail(BadResponse(f"bad chunked body: over {MAX_HEAD} bytes of chunk "
                                       f"framing or trailers without data"))

    def eof_received(self):
        return None   # close the transport: connection_lost follows

    # -- parsing (llhttp through httptools; its callbacks below) ------------------------------
    def _new_parser(self) -> httptools.HttpResponseParser:
        parser = httptools.HttpResponseParser(self)
        # The one leniency: Transfer-Encoding beside Content-Length is read as chunked (the
        # Transfer-Encoding wins, RFC 9112 6.3) instead of refused, as this client always did.
        parser.set_dangerous_leniencies(lenient_chunked_length=True)
        return parser

    def _body_length(self, data: bytes) -> None:
        """Body bytes of known length after the read that ended the head, passed on as they
        came: llhttp would hand each read on as a copy (httptools' on_body), which doubled
        the cost of a large body.  The parser did not see them, so the next response gets a
        new one (one per connection otherwise: it runs on from response to response)."""
        n = len(data)
        if n > self.remaining:
            self._fail(BadResponse(f"bytes after the end of the response (over its Content-Length "
                                   f"{self.response.content_length})"))
            return
        self.remaining -= n
        self._push(bytes(data))
        if not self.remaining:
            self.parser = self._new_parser()
            self.state = _DONE
            self._wake()

    def _feed(self, data: bytes) -> bool:
        """Parse DATA; False when the response failed (``self.error`` set, connection closed)."""
        self.parts_seen = False
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if self.error is None:        # llhttp's own error, not one of ours from a callback
                where = {_HEAD: "bad response head", _CHUNKED: "bad chunked body"}.get(
                    self.state, "bad response")
                self._fail(BadResponse(f"{where}: {exc}"))
        parts = self.parts
        if parts:
            self.parts = []
            if self.error is not None:
                return False
            self._push(parts[0] if len(parts) == 1 else b"".join(parts))
        if self.error is not None:
            return False
        if self.state == _DONE:
            self._wake()
        return True

    def _malformed(self, msg: str) -> None:
        self._fail(BadResponse(msg))
        raise _Malformed(msg)

    def on_message_begin(self) -> None:
        if self.state == _DONE:           # a second response in the same read
            self._malformed("bytes after the end of the response")
        self.headers, self.length, self.te = [], None, None

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.state != _HEAD:           # a trailer: read past, within MAX_HEAD in all
            self.parts_seen = True
            self.trailer_bytes += len(name) + len(value) + 4
            if self.trailer_bytes > MAX_HEAD:
                self._malformed(f"bad chunked body: trailers over {MAX_HEAD} bytes")
            return
        value = value.strip()             # llhttp drops the leading whitespace only
        n = len(name)
        if n == 14 and name.lower() == b"content-length":
            self.length = int(value)      # digits only, and only one: llhttp checked
        elif n == 17 and name.lower() == b"transfer-encoding":
            self.te = value if self.te is None else self.te + b"," + value
        self.headers.append((name.decode("latin-1"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        parser = self.parser
        status = parser.get_status_code()
        version = parser.get_http_version()
        if (version != "1.1" and version != "1.0") or status < 100:
            self._malformed(f"bad status line: HTTP/{version} {status}, where HTTP/1.x and a "
                            f"status 100-999 were expected")
        if status < 200:
            if status == 101:             # llhttp stops there: what follows is another protocol
                self._malformed("101 Switching Protocols, but the gateway asked for no protocol switch")
            if self.te is not None or self.length:   # llhttp would read a body for it
                self._malformed(f"a {status} interim answer with a body (Content-Length or "
                                f"Transfer-Encoding), where 1xx answers have none")
            return                        # an interim answer: skipped (on_message_complete)
        chunked = False
        if self.te is not None:           # chunked only as the last coding, as llhttp reads it
            chunked = self.te.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
            if not chunked:
                self._malformed(f"unsupported Transfer-Encoding {self.te[:40]!r}")
        length = None if chunked else self.length
        self.keep_alive = parser.should_keep_alive()
        self.response = Response(self, status, self.headers, length)
        if status == 204 or status == 304 or length == 0:
            self.state = _DONE            # llhttp reads no body here either (on_message_complete)
        elif chunked:
            self.state, self.stall, self.trailer_bytes = _CHUNKED, 0, 0
        elif length is not None:
            self.state, self.remaining = _LENGTH, length
        else:
            self.state, self.keep_alive = _UNTIL_CLOSE, False
        waiter, self.head_waiter = self.head_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(self.response)

    def on_body(self, body: bytes) -> None:
        self.parts.append(body)
        self.parts_seen = True
        self.remaining -= len(body)       # _LENGTH: the rest comes to _body_length

    def on_message_complete(self) -> None:
        if self.state == _HEAD:           # the end of an interim (1xx) answer: the next head follows
            self.head_bytes = 0
        else:
            self.state = _DONE

    # -- the response body --------------------------------------------------------------------
    def _push(self, data: bytes) -> None:
        if not data:
            return
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: UpstreamError) -> None:
        if self.error is None:
            self.error = exc
        self.keep_alive = False
        waiter, self.head_waiter = self.head_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self._wake()
        self.close()

    # -- the request side ---------------------------------------------------------------------
    async def request(self, head: bytes, body: bytes) -> Response:
        self.active, self.got_bytes, self.error, self.response = True, False, None, None
        self.state, self.keep_alive, self.head_bytes = _HEAD, True, 0
        self.chunks.clear()
        self.buffered = 0
        if self.closed:
            raise Disconnected("connection closed by the instance before the request was sent",
                               before_response=True, request_sent=False)
        self.head_waiter = asyncio.get_running_loop().create_future()
        if body:
            self.transport.writelines((head, body))
        else:
            self.transport.write(head)
        return await self.head_waiter

    async def read_chunk(self) -> bytes:
        while True:
            if self.chunks:
                if len(self.chunks) == 1:
                    data = self.chunks.popleft()
                else:
                    data = b"".join(self.chunks)
                    self.chunks.clear()
                self.buffered = 0
                if self.paused and not self.closed:
                    self.paused = False
                    self.transport.resume_reading()
                return data
            if self.error is not None:
                raise self.error
            if self.state == _DONE:
                return b""
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter

    def finish(self) -> None:
        if not self.active:
            return
        self.active = False
        if (self.state == _DONE and not self.chunks and self.keep_alive and self.error is None
                and not self.closed):
            self.response = None
            self.pool._put(self)
        else:
            self.close()

    def close(self) -> None:
        self.keep_alive = False
        if not self.closed:
            self.closed = True
            self.pool._forget(self)
            if self.transport is not None:
                self.transport.close()


class UpstreamPool:
    """Persistent connections per (host, port); any number of them (one per concurrent request)."""

    def __init__(self, connect_timeout: float = 3.0, keepalive: float = 15.0) -> None:
        self.connect_timeout, self.keepalive = connect_timeout, keepalive
        self._idle: dict[tuple[str, int], list[_Conn]] = {}
        self._all: set[_Conn] = set()
        self._last_sweep = time.monotonic()
        self._closed = False

    async def post(self, host: str, port: int, path: str, headers: dict[str, str], body: bytes) -> Response:
        """Send one POST and return once the response head has arrived (``request``)."""
        return await self.request("POST", host, port, path, headers, body)

    async def request(self, method: str, host: str, port: int, path: str, headers: dict[str, str],
                      body: bytes = b"") -> Response:
        """Send one request and return once the response head has arrived.  A GET goes
        without a body or Content-Length (HEAD is not supported: its answer has no body
        whatever its Content-Length says, which this parser does not know); METHOD and PATH come from the gateway's own
        routes, never from a caller.  Raises ConnectFailed, Disconnected or BadResponse; only
        one whose ``request_sent`` is false proves that the instance never saw the request.
        If the caller is cancelled meanwhile, the connection is closed."""
        if method == "GET":
            if body:
                raise ValueError(f"a {method} request has no body")
            framing = ""
        else:
            framing = f"Content-Length: {len(body)}\r\n"
        key = (host, port)
        conn = self._get_idle(key)
        if conn is None:
            conn = await self._connect(key)
        lines = [f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{framing}"]
        for name, value in headers.items():
            if "\r" in value or "\n" in value:
                value = value.replace("\r", " ").replace("\n", " ")
            lines.append(f"{name}: {value}\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("utf-8", "surrogateescape")
        try:
            return await conn.request(head, body)
        except BaseException:
            conn.active = False
            conn.close()
            raise

    def _get_idle(self, key) -> _Conn | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive and not conn.transport.is_closing():
                return conn
            conn.close()
        return None

    async def _connect(self, key) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(lambda: _Conn(self, key), key[0], key[1])
        except TimeoutError:
            raise ConnectFailed(f"ConnectTimeout: no connection to {key[0]}:{key[1]} within "
                                f"{self.connect_timeout:g}s") from None
        except OSError as exc:
            raise ConnectFailed(f"{type(exc).__name__}: cannot connect to {key[0]}:{key[1]} "
                                f"[{exc.strerror or exc}]") from None
        if self._closed:
            conn.close()
            raise ConnectFailed("the gateway is shutting down")
        self._all.add(conn)
        return conn

    def _put(self, conn: _Conn) -> None:
        now = time.monotonic()
        conn.idle_since = now
        self._idle.setdefault(conn.key, []).append(conn)
        if now - self._last_sweep > 1.0:
            self._last_sweep = now
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        for key in list(self._idle):
            idle = self._idle[key]
            stale = [c for c in idle if now - c.idle_since >= self.keepalive]
            for c in stale:
                c.close()
            if not self._idle.get(key):
                self._idle.pop(key, None)

    def _forget(self, conn: _Conn) -> None:
        self._all.discard(conn)
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    def sweep(self) -> None:
        """Close connections idle past ``keepalive`` (also done on the way, at most once a second)."""
        self._sweep(time.monotonic())

    async def close(self) -> None:
        self._closed = True
        for conn in list(self._all):
            conn.close()
        self._idle.clear()
        await asyncio.sleep(0)

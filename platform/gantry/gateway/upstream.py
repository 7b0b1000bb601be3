"""A small HTTP/1.1 client for the gateway's forward path: one request (a POST, or a GET
without a body) per forward over a pool of persistent connections per instance, on asyncio
Protocols.

The forward path needs very little of a general client (no cookies, redirects, proxies,
tracing, URL building, compression), and profiling showed aiohttp's ClientSession spending
more CPU per request than the rest of the gateway's request path.  This client sends the
request head and body in one write, parses the response head with plain bytes operations,
and hands the body on as it arrives: Content-Length, chunked, or (without either) up to the
connection's end.

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


class _Conn(asyncio.Protocol):
    def __init__(self, pool: "UpstreamPool", key: tuple[str, int]) -> None:
        self.pool, self.key = pool, key
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.state = _DONE
        self.active = False           # a request is using this connection
        self.got_bytes = False        # some of the response arrived
        self.head_waiter: asyncio.Future | None = None
        self.response: Response | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.waiter: asyncio.Future | None = None
        self.error: UpstreamError | None = None
        self.remaining = 0            # _LENGTH: body bytes still to come; _CHUNKED: of this chunk (-1: size line next)
        self.keep_alive = True
        self.paused = False
        self.closed = False
        self.idle_since = 0.0

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
        self.got_bytes = True
        if self.state == _HEAD:
            self.buf += data
            self._parse_head()
        elif self.state == _LENGTH:
            self._body_length(data)
        elif self.state == _CHUNKED:
            self.buf += data
            self._parse_chunks()
        elif self.state == _UNTIL_CLOSE:
            self._push(bytes(data))
        else:
            self._fail(BadResponse("bytes after the end of the response"))

    def eof_received(self):
        return None   # close the transport: connection_lost follows

    # -- parsing ------------------------------------------------------------------------------
    def _parse_head(self) -> None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > MAX_HEAD:
                self._fail(BadResponse("response head too large"))
            return
        head = bytes(self.buf[:end])
        rest = bytes(self.buf[end + 4:])
        self.buf.clear()
        lines = head.split(b"\r\n")
        status_line = lines[0]
        try:
            version, code = status_line.split(b" ", 2)[:2]
            status = int(code)
            if not version.startswith(b"HTTP/1.") or not 100 <= status <= 999 or len(code) != 3:
                raise ValueError(status_line)
        except ValueError:
            self._fail(BadResponse(f"bad status line {status_line[:80]!r}"))
            return
        if status < 200:                       # 1xx interim answers: skip them
            self.buf += rest
            if self.buf:
                self._parse_head()
            return
        headers = []
        length = None
        chunked = False
        keep_alive = version == b"HTTP/1.1"
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                self._fail(BadResponse("bad header line"))
                return
            value = value.strip()
            lname = name.lower()
            if lname == b"content-length":
                try:
                    n = int(value)
                    if n < 0 or (length is not None and n != length):
                        raise ValueError
                except ValueError:
                    self._fail(BadResponse("bad Content-Length"))
                    return
                length = n
            elif lname == b"transfer-encoding":
                chunked = value.lower().endswith(b"chunked")
                if not chunked:
                    self._fail(BadResponse(f"unsupported Transfer-Encoding {value[:40]!r}"))
                    return
            elif lname == b"connection":
                tokens = value.lower()
                if b"close" in tokens:
                    keep_alive = False
                elif b"keep-alive" in tokens:
                    keep_alive = True
            headers.append((name.decode("latin-1"), value.decode("utf-8", "surrogateescape")))
        if chunked:
            length = None
        self.keep_alive = keep_alive
        self.response = Response(self, status, headers, length)
        if status in (204, 304) or (length == 0 and not chunked):
            self.state = _DONE
        elif chunked:
            self.state, self.remaining = _CHUNKED, -1
        elif length is not None:
            self.state, self.remaining = _LENGTH, length
        else:
            self.state, self.keep_alive = _UNTIL_CLOSE, False
        waiter, self.head_waiter = self.head_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(self.response)
        if rest:
            self.data_received(rest)

    def _body_length(self, data: bytes) -> None:
        n = len(data)
        if n <= self.remaining:
            self.remaining -= n
            self._push(bytes(data))
            if not self.remaining:
                self.state = _DONE
                self._wake()
        else:
            self._fail(BadResponse("more bytes than Content-Length"))

    def _parse_chunks(self) -> None:
        buf = self.buf
        pos = 0
        out = []
        try:
            while True:
                if self.remaining == -1:            # a chunk-size line
                    eol = buf.find(b"\r\n", pos)
                    if eol < 0:
                        if len(buf) - pos > 4096:
                            raise ValueError("chunk size line too long")
                        break
                    size = int(bytes(buf[pos:eol]).split(b";", 1)[0].strip(), 16)
                    if size < 0:
                        raise ValueError("negative chunk size")
                    pos = eol + 2
                    if size == 0:
                        self.remaining = -3
                    else:
                        self.remaining = size
                elif self.remaining == -2:          # the CRLF after a chunk's data
                    if len(buf) - pos < 2:
                        break
                    if buf[pos:pos + 2] != b"\r\n":
                        raise ValueError("missing CRLF after chunk data")
                    pos += 2
                    self.remaining = -1
                elif self.remaining == -3:          # trailers, up to an empty line
                    eol = buf.find(b"\r\n", pos)
                    if eol < 0:
                        if len(buf) - pos > MAX_HEAD:
                            raise ValueError("trailers too large")
                        break
                    if eol == pos:
                        pos += 2
                        if pos != len(buf):
                            raise ValueError("bytes after the last chunk")
                        self.state = _DONE
                        break
                    pos = eol + 2
                else:                               # chunk data
                    avail = len(buf) - pos
                    if not avail:
                        break
                    take = min(avail, self.remaining)
                    out.append(bytes(buf[pos:pos + take]))
                    pos += take
                    self.remaining -= take
                    if not self.remaining:
                        self.remaining = -2
        except ValueError as exc:
            del buf[:pos]
            self._fail(BadResponse(f"bad chunked body: {exc}"))
            return
        del buf[:pos]
        if out:
            self._push(b"".join(out) if len(out) > 1 else out[0])
        if self.state == _DONE:
            self._wake()

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
        self.state, self.keep_alive = _HEAD, True
        self.chunks.clear()
        self.buffered = 0
        self.buf.clear()
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
                and not self.closed and not self.buf):
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

"""The gateway's parsing of its instances' responses (gantry.gateway.upstream), llhttp through
httptools against the hand-written parser it replaced (kept below as the baseline, as it was
at 0854bbc), side by side in one run (pytest-benchmark, grouped by response):

- ``small_json``: a small JSON answer with the runtime's headers, in one read;
- ``chunked_50``: a stream of 50 chunks, one read each (the runtime flushes every item);
- ``length_1mib``: a 1 MiB Content-Length body arriving in 64 KiB reads.

The bytes are what the runtime's aiohttp writes (taken from a real ``python -m gantry_runtime``
answer: its header order, Date and Server included).  Each round runs the protocol's
``data_received`` for every read and takes the body as ``read_chunk`` would, on a stand-in
transport (no socket, so only parsing and the body queue are measured); the connection's
parser is reused from round to round, as on a keep-alive connection.  Both parsers share
everything else of ``_Conn``.  No thresholds: the figures are read from the table
(``--benchmark-json`` for medians and ranges)."""
from __future__ import annotations

import pytest

from gantry.gateway import upstream
from gantry.gateway.upstream import BadResponse, MAX_HEAD, UpstreamPool

_HEAD, _LENGTH, _CHUNKED, _UNTIL_CLOSE, _DONE = range(5)

INV = b"3f2b9c1e8a7d4e6f9b0c1d2e3f4a5b6c"
SERVER = b"Date: Mon, 30 Nov 2026 00:21:41 GMT\r\nServer: Python/3.11 aiohttp/3.14.5\r\n"


def small_json() -> list[bytes]:
    body = b'{"event":{"name":"ada","n":3},"invocation_id":"' + INV + b'","uid":0}'
    return [b"HTTP/1.1 200 OK\r\nX-Gantry-Invocation-Id: " + INV + b"\r\nX-Gantry-Duration-Ms: 0.412\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body) + SERVER + b"\r\n" + body]


def chunked_50() -> list[bytes]:
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nX-Gantry-Invocation-Id: " + INV
            + b"\r\nX-Gantry-Stream: 1\r\nTransfer-Encoding: chunked\r\n" + SERVER + b"\r\n")
    lines = [b"token %d of the answer\n" % i for i in range(50)]
    reads = [head + b"%x\r\n%s\r\n" % (len(lines[0]), lines[0])]
    reads += [b"%x\r\n%s\r\n" % (len(line), line) for line in lines[1:]]
    reads[-1] += b"0\r\n\r\n"
    return reads


def length_1mib() -> list[bytes]:
    body = bytes(range(256)) * 4096
    raw = (b"HTTP/1.1 200 OK\r\nX-Gantry-Invocation-Id: " + INV + b"\r\nX-Gantry-Duration-Ms: 3.101\r\n"
           b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n" % len(body) + SERVER + b"\r\n" + body)
    return [raw[i:i + 65536] for i in range(0, len(raw), 65536)]


CASES = {"small_json": (small_json, 89), "chunked_50": (chunked_50, None), "length_1mib": (length_1mib, 1 << 20)}


class OldConn(upstream._Conn):
    """The hand-written parser of gateway/upstream.py before llhttp (0854bbc), unchanged but
    for this class: its data_received and its three parsing methods; the rest is _Conn's."""

    def __init__(self, pool, key) -> None:
        super().__init__(pool, key)
        self.buf = bytearray()
        self.remaining = 0

    def data_received(self, data: bytes) -> None:
        if not self.active or self.error is not None:
            self.close()
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
        if status < 200:
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
        self.response = upstream.Response(self, status, headers, length)
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
                if self.remaining == -1:
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
                elif self.remaining == -2:
                    if len(buf) - pos < 2:
                        break
                    if buf[pos:pos + 2] != b"\r\n":
                        raise ValueError("missing CRLF after chunk data")
                    pos += 2
                    self.remaining = -1
                elif self.remaining == -3:
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
                else:
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


class Transport:
    """Stands in for the socket's transport: counts pauses, writes nothing."""

    def __init__(self) -> None:
        self.pauses = 0

    def pause_reading(self) -> None:
        self.pauses += 1

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        raise AssertionError("the connection was closed: the response did not parse")


def connection(cls) -> upstream._Conn:
    conn = cls(UpstreamPool(), ("127.0.0.1", 9))
    conn.connection_made(Transport())
    return conn


def exchange(conn: upstream._Conn, reads: list[bytes]) -> int:
    """One response on CONN: the state request() sets, every read, the body taken as
    read_chunk takes it; the body's size."""
    conn.active, conn.got_bytes, conn.error, conn.response = True, False, None, None
    conn.state, conn.keep_alive, conn.head_bytes = _HEAD, True, 0
    if isinstance(conn, OldConn):
        conn.buf.clear()
    size = 0
    chunks = conn.chunks
    for data in reads:
        conn.data_received(data)
        if chunks:
            size += len(chunks.popleft() if len(chunks) == 1 else b"".join(chunks))
            chunks.clear()
            conn.buffered = 0
            if conn.paused:
                conn.paused = False
                conn.transport.resume_reading()
    conn.active = False
    return size


PARSERS = {"old": OldConn, "llhttp": upstream._Conn}


@pytest.mark.parametrize("case", list(CASES))
def test_both_parsers_read_the_same_responses(case):
    make, length = CASES[case]
    reads = make()
    seen = []
    for cls in PARSERS.values():
        conn = connection(cls)
        for _ in range(3):                       # the same connection, response after response
            size = exchange(conn, reads)
            resp = conn.response
            assert conn.state == _DONE and conn.keep_alive and conn.error is None
            assert resp.status == 200 and resp.content_length == length
            seen.append((size, resp.headers))
    assert len(set(repr(s) for s in seen)) == 1  # the same body size and headers from both
    assert seen[0][0] == (length or sum(len(b"token %d of the answer\n" % i) for i in range(50)))


@pytest.mark.parametrize("parser", list(PARSERS))
@pytest.mark.parametrize("case", list(CASES))
def test_parse(benchmark, case, parser):
    benchmark.group = case
    make, length = CASES[case]
    reads = make()
    conn = connection(PARSERS[parser])
    size = benchmark(exchange, conn, reads)
    assert conn.state == _DONE and conn.error is None and size > 0
    if case == "length_1mib":                    # 1 MiB queued 64 KiB at a time: never over HIGH_WATER
        assert conn.transport.pauses == 0

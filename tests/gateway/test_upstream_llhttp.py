"""The gateway's HTTP/1.1 client to instances (gantry.gateway.upstream) reads responses with
llhttp (httptools): the cases where llhttp could read differently from the hand-written
parser it replaced, each against a raw asyncio server writing exactly those bytes."""
from __future__ import annotations

import asyncio

import pytest

from gantry.gateway import upstream
from gantry.gateway.upstream import MAX_HEAD, HIGH_WATER, UpstreamPool

from .test_upstream import RawServer

pytestmark = pytest.mark.timeout(30)

HOST = "127.0.0.1"


@pytest.fixture
async def serve():
    """serve(answer) -> a started RawServer and an UpstreamPool; all closed after the test."""
    servers: list[RawServer] = []
    pools: list[UpstreamPool] = []

    async def start(answer) -> tuple[RawServer, UpstreamPool]:
        servers.append(await RawServer(answer).start())
        pools.append(UpstreamPool(connect_timeout=1.0, keepalive=15.0))
        return servers[-1], pools[-1]

    yield start
    for pool in pools:
        await pool.close()
    for server in servers:
        await server.close()


async def read_all(pool: UpstreamPool, port: int, method: str = "POST") -> tuple[upstream.Response, bytes]:
    resp = await pool.request(method, HOST, port, "/invoke", {}, b"")
    data = await resp.read()
    resp.release()
    return resp, data


async def bad(pool: UpstreamPool, port: int) -> upstream.BadResponse:
    """The BadResponse of one request, from the head or from reading the body."""
    with pytest.raises(upstream.BadResponse) as info:
        async with asyncio.timeout(5):              # a parser that waits for more fails, not hangs
            resp = await pool.post(HOST, port, "/invoke", {}, b"")
            try:
                await resp.read()
            finally:
                resp.release()
    assert info.value.request_sent and not pool._all     # the connection is closed
    return info.value


def pooled(pool: UpstreamPool, server: RawServer) -> int:
    return len(pool._idle.get((HOST, server.port), []))


async def test_interim_answers_are_skipped_split_anywhere(serve):
    raw = (b"HTTP/1.1 100 Continue\r\n\r\n"
           b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
           b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
    server, pool = await serve(lambda h, b: [bytes([c]) for c in raw])
    for _ in range(2):
        resp, data = await read_all(pool, server.port)
        assert (resp.status, data) == (200, b"ok")
        assert resp.headers == [("Content-Type", "text/plain"), ("Content-Length", "2")]
    assert server.connections == 1 and pooled(pool, server) == 1


async def test_204_and_304_have_no_body_whatever_their_content_length(serve):
    def answer(head, body):
        if b"X-Case: 204" in head:
            return [b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"]
        return [b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"]

    server, pool = await serve(answer)
    for case, length in (("204", 5), ("304", None)):
        resp = await pool.post(HOST, server.port, "/invoke", {"X-Case": case}, b"")
        assert resp.complete and resp.content_length == length
        assert await resp.read() == b""
        resp.release()
    assert server.connections == 1


async def test_get_has_no_body_or_content_length_and_its_answer_reads_as_any(serve):
    body = b'{"models":[]}'
    server, pool = await serve(lambda h, b: [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body])
    resp, data = await read_all(pool, server.port, "GET")
    assert data == body and resp.content_length == len(body)
    head, sent = server.requests[0]
    assert head.startswith(b"GET /invoke HTTP/1.1\r\n") and b"content-length" not in head.lower()
    assert sent == b"" and pooled(pool, server) == 1


async def test_transfer_encoding_beside_content_length_reads_as_chunked(serve):
    raw = (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    server, pool = await serve(lambda h, b: [raw])
    for _ in range(2):
        resp, data = await read_all(pool, server.port)
        assert data == b"hello world" and resp.content_length is None
    assert server.connections == 1


async def test_trailers_are_read_and_dropped(serve):
    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Head: 1\r\n\r\n"
           b"3;name=value\r\nabc\r\n0\r\nX-Checksum: 42\r\nX-More: yes\r\n\r\n")
    server, pool = await serve(lambda h, b: [raw[:60], 0.05, raw[60:]])
    for _ in range(2):
        resp, data = await read_all(pool, server.port)
        assert data == b"abc"
        assert [name for name, _ in resp.headers] == ["Transfer-Encoding", "X-Head"]
    assert server.connections == 1


async def test_headers_keep_repeats_and_order_and_lose_surrounding_whitespace(serve):
    raw = ("HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Note:   spaced out \t\r\nSet-Cookie: b=2\r\n"
           "X-Name: Zoë\r\nX-Empty:\r\nContent-Length: 0\r\n\r\n").encode()
    server, pool = await serve(lambda h, b: [raw])
    resp, data = await read_all(pool, server.port)
    assert data == b"" and resp.content_length == 0
    assert resp.headers == [("Set-Cookie", "a=1"), ("X-Note", "spaced out"), ("Set-Cookie", "b=2"),
                            ("X-Name", "Zoë"), ("X-Empty", ""), ("Content-Length", "0")]


async def test_keep_alive_follows_version_and_connection(serve):
    def answer(head, body):
        if b"X-Case: 10ka" in head:
            return [b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\na"]
        if b"X-Case: 10" in head:
            return [b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nb", None]
        return [b"HTTP/1.1 200 OK\r\n\r\nuntil the end", 0.05, None]   # no length: to the close

    server, pool = await serve(answer)
    for case, want, conns in (("10ka", b"a", 1), ("10ka", b"a", 1), ("10", b"b", 1), ("11", b"until the end", 2)):
        resp = await pool.post(HOST, server.port, "/invoke", {"X-Case": case}, b"")
        assert await resp.read() == want
        resp.release()
        assert server.connections == conns
    assert pooled(pool, server) == 0


async def test_a_stray_crlf_after_the_response_is_skipped(serve):
    # llhttp skips empty lines before a message; the old parser refused them
    server, pool = await serve(lambda h, b: [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\r\n"])
    for _ in range(2):
        assert (await read_all(pool, server.port))[1] == b"ok"
    assert server.connections == 1


async def test_bytes_after_the_end_of_a_response_are_a_bad_response(serve):
    def answer(head, body):
        case = head.split(b"X-Case: ")[1].split(b"\r\n")[0]
        return {b"length": [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokX"],
                b"length_later": [b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nok", 0.05, b"okX"],
                b"empty": [b"HTTP/1.1 204 No Content\r\n\r\nX"],
                b"chunked": [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nX"],
                b"later": [b"HTTP/1.1 204 No Content\r\n\r\n", 0.05, b"X", "eof"],
                b"close": [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nokX"],
                }[case]

    server, pool = await serve(answer)
    for case in ("length", "length_later", "empty", "chunked", "close"):
        with pytest.raises(upstream.BadResponse) as info:
            resp = await pool.post(HOST, server.port, "/invoke", {"X-Case": case}, b"")
            await resp.read()
        resp.release()
        assert "after" in str(info.value), (case, info.value)
        assert not pool._all
    # the same bytes after the response was taken and released close the idle connection
    await asyncio.sleep(0.05)
    server.closed_by_peer.clear()
    resp = await pool.post(HOST, server.port, "/invoke", {"X-Case": "later"}, b"")
    assert resp.complete
    resp.release()
    assert pooled(pool, server) == 1
    await asyncio.wait_for(server.closed_by_peer.wait(), 2)
    assert pooled(pool, server) == 0 and not pool._all


@pytest.mark.parametrize("raw, says", [
    (b"garbage\r\n\r\n", "bad response head"),
    (b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", "HTTP/2.0 200"),
    (b"HTTP/0.9 200 OK\r\nContent-Length: 0\r\n\r\n", "HTTP/0.9 200"),
    (b"HTTP/1.5 200 OK\r\nContent-Length: 0\r\n\r\n", "version"),
    (b"HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n", "status 100-999"),
    (b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", "status"),
    (b"HTTP/1.1 101 Switching Protocols\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "101"),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n", "101"),
    (b"HTTP/1.1 199 Odd\r\nContent-Length: 2\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "interim"),
    (b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", "CR"),
    (b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n  b\r\nContent-Length: 0\r\n\r\n", "whitespace"),
    (b"HTTP/1.1 200 OK\r\nX-Bad : a\r\nContent-Length: 0\r\n\r\n", "header"),
    (b"HTTP/1.1 200 OK\r\nX-Bad: a\x01b\r\nContent-Length: 0\r\n\r\n", "header value"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", "Content-Length"),
    # the old parser took two equal ones as one; llhttp refuses any second Content-Length
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", "Duplicate Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n", "overflow"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc", "unsupported Transfer-Encoding"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked;q=1\r\n\r\n1\r\na\r\n0\r\n\r\n", "unsupported"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n1\r\na\r\n", "unsupported"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nab\r\n0\r\n\r\n", "bad chunked body"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n", "bad chunked body"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n", "bad chunked body"),
])
async def test_malformed_answers_are_a_bad_response_naming_what_was_wrong(serve, raw, says):
    server, pool = await serve(lambda h, b: [raw, "eof"])
    exc = await bad(pool, server.port)
    assert says in str(exc), exc
    await asyncio.wait_for(server.closed_by_peer.wait(), 2)


async def test_the_head_is_bounded_by_max_head(serve):
    def answer(head, body):
        size = int(head.split(b"X-Size: ")[1].split(b"\r\n")[0])
        return [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Big: " + b"a" * size + b"\r\n\r\nok"]

    server, pool = await serve(answer)
    resp = await pool.post(HOST, server.port, "/invoke", {"X-Size": str(MAX_HEAD - 100)}, b"")
    assert len(dict(resp.headers)["X-Big"]) == MAX_HEAD - 100 and await resp.read() == b"ok"
    resp.release()
    with pytest.raises(upstream.BadResponse) as info:
        await pool.post(HOST, server.port, "/invoke", {"X-Size": str(MAX_HEAD)}, b"")
    assert f"over {MAX_HEAD} bytes" in str(info.value) and not pool._all


async def test_a_head_that_never_ends_fails_at_max_head(serve):
    server, pool = await serve(lambda h, b: [b"HTTP/1.1 200 OK\r\n"] + [b"X-Line: " + b"a" * 1000 + b"\r\n"] * 200 + ["eof"])
    with pytest.raises(upstream.BadResponse) as info:
        await pool.post(HOST, server.port, "/invoke", {}, b"")
    assert "response head over" in str(info.value)
    await asyncio.wait_for(server.closed_by_peer.wait(), 2)


@pytest.mark.parametrize("tail, says", [
    (b"1;ext=" + b"e" * (2 * MAX_HEAD), "without data"),                        # an endless chunk extension
    (b"0\r\nX-Trailer: " + b"t" * (2 * MAX_HEAD), "without data"),              # one endless trailer
    (b"0\r\n" + b"X-T: " + b"t" * 1000 + b"\r\n" * 1 + b"".join(
        b"X-T%d: %s\r\n" % (i, b"t" * 1000) for i in range(100)), "trailers over"),  # many trailers
])
async def test_chunk_framing_and_trailers_are_bounded(serve, tail, says):
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
    server, pool = await serve(lambda h, b: [head, 0.05] + [tail[i:i + 8192] for i in range(0, len(tail), 8192)] + ["eof"])
    resp = await pool.post(HOST, server.port, "/invoke", {}, b"")
    assert await resp.read_chunk() == b"abc"
    with pytest.raises(upstream.BadResponse) as info:
        await resp.read()
    resp.release()
    assert says in str(info.value) and "bad chunked body" in str(info.value)
    await asyncio.wait_for(server.closed_by_peer.wait(), 2)


async def test_a_large_body_pauses_reading_at_high_water_and_resumes(serve):
    big = bytes(range(256)) * (4 * 1024 * 4)        # 4 MiB
    server, pool = await serve(lambda h, b: [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big) + big])
    resp = await pool.post(HOST, server.port, "/invoke", {}, b"")
    conn = resp._conn
    await asyncio.sleep(0.2)                        # not reading: the client stops reading the socket
    assert conn.paused and HIGH_WATER < conn.buffered < len(big)
    got = bytearray()
    while chunk := await resp.read_chunk():
        got += chunk
        assert conn.buffered <= HIGH_WATER * 2
    assert bytes(got) == big and not conn.paused and resp.complete
    resp.release()
    assert pooled(pool, server) == 1
    assert (await read_all(pool, server.port))[1] == big and server.connections == 1


async def test_a_response_cut_off_is_disconnected_with_before_response_right(serve):
    def answer(head, body):
        if b"X-Case: head" in head:
            return [b"HTTP/1.1 200 OK\r\nContent-Le", 0.05, None]
        return [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n", 0.05, None]

    server, pool = await serve(answer)
    with pytest.raises(upstream.Disconnected) as info:
        await pool.post(HOST, server.port, "/invoke", {"X-Case": "head"}, b"")
    assert not info.value.before_response and info.value.request_sent
    resp = await pool.post(HOST, server.port, "/invoke", {"X-Case": "chunked"}, b"")
    assert await resp.read_chunk() == b"ok"
    with pytest.raises(upstream.Disconnected):
        await resp.read_chunk()
    resp.release()
    assert not pool._all


async def test_responses_follow_a_body_of_known_length_read_over_several_reads(serve):
    # such a body's later reads bypass llhttp (no copy); the next response gets a fresh parser
    def answer(head, body):
        if b"X-Case: split" in head:
            return [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 0.03, b"defg", 0.03, b"hij"]
        return [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"]

    server, pool = await serve(answer)
    for case, want in (("split", b"abcdefghij"), ("chunked", b"ok"), ("split", b"abcdefghij"), ("split", b"abcdefghij"),
                       ("chunked", b"ok")):
        resp = await pool.post(HOST, server.port, "/invoke", {"X-Case": case}, b"")
        assert await resp.read() == want
        resp.release()
    assert server.connections == 1

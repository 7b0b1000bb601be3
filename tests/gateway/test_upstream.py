"""The gateway's HTTP/1.1 client to instances (gantry.gateway.upstream), against raw asyncio
servers that write exactly the bytes each case needs, and through the gateway with
in-process fake upstreams."""
from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from gantry.gateway import upstream
from gantry.gateway.upstream import UpstreamPool
from gantry.up import free_port

from .support import AUTH, add_instance, gateway, register_function

pytestmark = pytest.mark.timeout(30)


class RawServer:
    """Answers each request head it reads with ``answer(head, body) -> list of parts``: bytes
    are written, a float sleeps, None closes, "eof" waits for the client to close.
    Records the requests and counts connections."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0
        self.closed_by_peer = asyncio.Event()
        self.server = None
        self.port = 0

    async def start(self) -> "RawServer":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    self.closed_by_peer.set()
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                for part in self.answer(head, body):
                    if part is None:
                        writer.close()
                        return
                    if part == "eof":          # hold the answer until the client closes
                        await writer.drain()
                        while await reader.read(1024):
                            pass
                        self.closed_by_peer.set()
                        return
                    if isinstance(part, float):
                        await writer.drain()
                        await asyncio.sleep(part)
                    else:
                        writer.write(part)
                await writer.drain()
                if reader.at_eof():
                    self.closed_by_peer.set()
                    return
        except ConnectionError:
            self.closed_by_peer.set()
        finally:
            writer.close()

    async def close(self) -> None:
        self.server.close()


def _ok(body: bytes = b'{"ok":true}') -> list:
    return [b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Gantry-Foo: bar\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body]


@pytest.fixture
async def raw_server():
    """raw_server(answer) -> a started RawServer; each is closed after the test."""
    servers: list[RawServer] = []

    async def start(answer) -> RawServer:
        servers.append(await RawServer(answer).start())
        return servers[-1]

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def pool(raw_server):
    """The client under test, closed after the test (before the servers)."""
    pool = UpstreamPool(connect_timeout=1.0, keepalive=15.0)
    yield pool
    await pool.close()


async def test_content_length_response_and_connection_reuse(raw_server, pool):
    server = await raw_server(lambda h, b: _ok())
    for i in range(3):
        resp = await pool.post("127.0.0.1", server.port, "/invoke", {"X-Gantry-Tenant": "t"}, b"x" * i)
        assert resp.status == 200
        assert ("X-Gantry-Foo", "bar") in resp.headers and resp.content_length == 11
        assert await resp.read() == b'{"ok":true}'
        resp.release()
    assert server.connections == 1
    head, body = server.requests[2]
    assert head.startswith(b"POST /invoke HTTP/1.1\r\n") and b"\r\nX-Gantry-Tenant: t\r\n" in head
    assert b"\r\nContent-Length: 2\r\n" in head and body == b"xx"


async def test_chunked_body_streams_as_it_arrives_split_anywhere(raw_server, pool):
    def answer(head, body):
        raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"6\r\nfirst\n\r\n")
        rest = b"7;ext=1\r\nsecond\n\r\n0\r\nX-Trailer: 1\r\n\r\n"
        # the head and first chunk byte by byte, a pause, then the rest in one piece
        return [bytes([c]) for c in raw] + [0.3] + [rest]

    server = await raw_server(answer)
    for _ in range(2):
        resp = await pool.post("127.0.0.1", server.port, "/invoke", {}, b"{}")
        assert resp.status == 200 and resp.content_length is None
        t0 = asyncio.get_running_loop().time()
        got = b""
        while got != b"first\n":
            got += await resp.read_chunk()
        assert asyncio.get_running_loop().time() - t0 < 0.25     # before the pause ended
        assert await resp.read() == b"second\n"
        resp.release()
    assert server.connections == 1                             # reused after a chunked body


async def test_connection_close_and_body_until_close_are_not_reused(raw_server, pool):
    def answer(head, body):
        if b"X-Case: close" in head:
            return [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi", None]
        return [b"HTTP/1.0 200 OK\r\n\r\nuntil the end", None]

    server = await raw_server(answer)
    resp = await pool.post("127.0.0.1", server.port, "/invoke", {"X-Case": "close"}, b"")
    assert await resp.read() == b"hi"
    resp.release()
    resp = await pool.post("127.0.0.1", server.port, "/invoke", {"X-Case": "eof"}, b"")
    assert await resp.read() == b"until the end"
    resp.release()
    assert server.connections == 2


async def test_refused_reset_and_malformed():
    pool = UpstreamPool(connect_timeout=1.0)
    with pytest.raises(upstream.ConnectFailed):
        await pool.post("127.0.0.1", free_port(), "/invoke", {}, b"")

    server = await RawServer(lambda h, b: [None]).start()     # closes without an answer
    with pytest.raises(upstream.Disconnected) as info:
        await pool.post("127.0.0.1", server.port, "/invoke", {}, b"")
    assert info.value.before_response
    await server.close()

    server = await RawServer(lambda h, b: [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 0.05, None]).start()
    resp = await pool.post("127.0.0.1", server.port, "/invoke", {}, b"")
    with pytest.raises(upstream.Disconnected) as info:
        await resp.read()
    assert not info.value.before_response
    resp.release()
    await server.close()

    server = await RawServer(lambda h, b: [b"garbage\r\n\r\n"]).start()
    with pytest.raises(upstream.BadResponse):
        await pool.post("127.0.0.1", server.port, "/invoke", {}, b"")
    await server.close()

    server = await RawServer(lambda h, b: [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]).start()
    resp = await pool.post("127.0.0.1", server.port, "/invoke", {}, b"")
    with pytest.raises(upstream.BadResponse):
        await resp.read()
    resp.release()
    await server.close()
    assert not pool._all
    await pool.close()


async def test_cancel_and_unfinished_reads_close_the_connection(raw_server, pool):
    def answer(head, body):
        if b"X-Case: hang" in head:
            return ["eof"]
        return [b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab", "eof"]

    server = await raw_server(answer)
    call = asyncio.create_task(pool.post("127.0.0.1", server.port, "/invoke", {"X-Case": "hang"}, b""))
    await asyncio.sleep(0.1)
    call.cancel()
    await asyncio.wait_for(server.closed_by_peer.wait(), 2)
    server.closed_by_peer.clear()
    resp = await pool.post("127.0.0.1", server.port, "/invoke", {}, b"")
    assert await resp.read_chunk() == b"ab"
    resp.release()                                      # half read: closed, not pooled
    await asyncio.wait_for(server.closed_by_peer.wait(), 2)
    assert not pool._idle.get(("127.0.0.1", server.port))


async def test_idle_connections_expire(raw_server, pool):
    server = await raw_server(lambda h, b: _ok())
    pool.keepalive = 0.1
    resp = await pool.post("127.0.0.1", server.port, "/invoke", {}, b"")
    await resp.read()
    resp.release()
    assert len(pool._idle[("127.0.0.1", server.port)]) == 1
    await asyncio.sleep(0.15)
    pool.sweep()
    await asyncio.wait_for(server.closed_by_peer.wait(), 2)
    assert not pool._all


async def test_gateway_relays_small_large_and_chunked_bodies_and_a_plain_503(redis_url, redis_client, fake_upstream):
    big = bytes(range(256)) * 1024   # 256 KiB: over the one-piece limit, streamed

    async def handler(request):
        kind = (await request.json())["kind"]
        if kind == "small":
            return web.Response(body=b"tiny", content_type="text/plain", headers={"X-Gantry-Note": "n"})
        if kind == "big":
            return web.Response(body=big, content_type="application/octet-stream")
        if kind == "unavailable":
            return web.json_response({"error": {"code": "mine", "message": "m"}}, status=503,
                                     headers={"Retry-After": "7"})
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(5):
            await resp.write(b"part %d\n" % i)
        await resp.write_eof()
        return resp

    up = await fake_upstream(handler)
    register_function(redis_client, "kinds")
    add_instance(redis_client, "kinds", up.port)
    async with gateway(redis_url) as client:
        for _ in range(2):
            resp = await client.post("/v1/invoke/kinds", json={"kind": "small"}, headers=AUTH)
            assert resp.status == 200 and await resp.read() == b"tiny"
            assert resp.headers["Content-Type"].startswith("text/plain")
            assert resp.headers["X-Gantry-Note"] == "n"
            resp = await client.post("/v1/invoke/kinds", json={"kind": "big"}, headers=AUTH)
            assert resp.status == 200 and resp.headers["Content-Length"] == str(len(big))
            assert await resp.read() == big
            resp = await client.post("/v1/invoke/kinds", json={"kind": "chunked"}, headers=AUTH)
            assert resp.status == 200
            assert await resp.read() == b"".join(b"part %d\n" % i for i in range(5))
            resp = await client.post("/v1/invoke/kinds", json={"kind": "unavailable"}, headers=AUTH)
            assert resp.status == 503 and resp.headers["Retry-After"] == "7"
            assert (await resp.json())["error"]["code"] == "mine"


async def test_gateway_retries_a_draining_answer_and_a_closed_connection(redis_url, redis_client, fake_upstream):
    hits = {"draining": 0, "closer": 0, "good": 0}

    def make(kind):
        async def handler(request):
            hits[kind] += 1
            await request.read()
            if kind == "draining":
                return web.json_response({"error": {"code": "draining", "message": "bye"}}, status=503)
            if kind == "closer":
                request.transport.close()
                await asyncio.sleep(1)
            return web.json_response({"from": kind})
        return handler

    ups = {k: await fake_upstream(make(k)) for k in hits}
    register_function(redis_client, "retry")
    for k, server in ups.items():
        add_instance(redis_client, "retry", server.port, inst_id=k)
    async with gateway(redis_url) as client:
        for _ in range(4):
            closed = hits["closer"]
            resp = await client.post("/v1/invoke/retry", json={}, headers=AUTH)
            if hits["closer"] > closed:   # it had read the request: not retried (test_delivery)
                assert resp.status == 502
                assert (await resp.json())["error"]["code"] == "function_outcome_unknown"
            else:
                assert resp.status == 200 and await resp.json() == {"from": "good"}
    assert hits["draining"] >= 1 and hits["closer"] >= 1

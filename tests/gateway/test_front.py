"""gateway.front: what the httptools front door does beyond the invoke contract the rest of
tests/gateway checks through it (every test there runs on this runner): answers in request
order when invocations and backend requests are pipelined on one connection, the client's
address reaching the aiohttp side, 100-continue, HTTP/1.0, the idle keep-alive limit, a
malformed body.  Raw sockets against a real gateway on loopback and the real Redis; a real
runtime process as the function's instance."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from gantry.gateway.appkeys import AUTH as AUTH_KEY

from .support import ADMIN_KEY, AUTH, add_instance, gateway, register_function

pytestmark = pytest.mark.timeout(120)

BEARER = f"Authorization: Bearer {ADMIN_KEY}\r\n".encode()


def _invoke(name: str, body: bytes, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return (b"POST /v1/invoke/%s HTTP/%s\r\nHost: t\r\n%sContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n%s\r\n%s" % (name.encode(), version, BEARER, len(body), extra, body))


async def _responses(reader: asyncio.StreamReader, n: int, timeout: float = 10) -> list[tuple[int, dict, bytes]]:
    """N responses read off one connection (Content-Length or chunked bodies), skipping 100s."""
    out = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            if status == 100:
                continue
            if "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
            elif headers.get("transfer-encoding") == "chunked":
                body = b""
                while True:
                    size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                    chunk = await reader.readexactly(size + 2)
                    if size == 0:
                        break
                    body += chunk[:-2]
            else:
                body = await reader.read()
            out.append((status, headers, body))
    return out


async def _echo(redis_client, runtimes, name: str = "front-echo") -> None:
    rt = runtimes.get("main:echo")
    register_function(redis_client, name)
    add_instance(redis_client, name, rt.port)


@pytest.mark.asyncio
async def test_pipelined_invocations_and_backend_requests_are_answered_in_order(redis_url, redis_client, runtimes):
    await _echo(redis_client, runtimes)
    async with gateway(redis_url) as client:
        reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
        try:
            # one write: invoke (front), healthz (backend), an unknown function (front),
            # the function's record (backend), invoke again (front)
            writer.write(_invoke("front-echo", b'{"n": 1}')
                         + b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
                         + _invoke("nope", b"{}")
                         + b"GET /v1/functions/front-echo HTTP/1.1\r\nHost: t\r\n" + BEARER + b"\r\n"
                         + _invoke("front-echo", b'{"n": 2}'))
            await writer.drain()
            got = await _responses(reader, 5)
        finally:
            writer.close()
    assert [s for s, _, _ in got] == [200, 200, 404, 200, 200], got
    assert json.loads(got[0][2])["event"] == {"n": 1} and json.loads(got[4][2])["event"] == {"n": 2}
    assert json.loads(got[1][2])["status"] == "ok"
    assert json.loads(got[2][2])["error"]["code"] == "not_found"
    assert json.loads(got[3][2])["name"] == "front-echo"
    assert "server" not in got[0][1] and "server" in got[1][1]     # served by the front / by aiohttp


@pytest.mark.asyncio
async def test_the_backend_sees_the_clients_address(redis_url):
    apps = []
    async with gateway(redis_url, app_hook=apps.append) as client:
        resp = await client.get("/v1/functions", headers={"Authorization": "Bearer gk_wrong_key"})
        assert resp.status == 401
        # the wrong key was counted against the client's address, not the socket pair's
        assert "127.0.0.1" in apps[0][AUTH_KEY].failures._handles


@pytest.mark.asyncio
async def test_expect_100_continue_and_http_10_on_an_invocation(redis_url, redis_client, runtimes):
    await _echo(redis_client, runtimes)
    async with gateway(redis_url) as client:
        reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
        try:
            body = b'{"big": "' + b"x" * 5000 + b'"}'
            head = _invoke("front-echo", b"", b"Expect: 100-continue\r\n").replace(b"Content-Length: 0",
                                                                                   b"Content-Length: %d" % len(body))
            writer.write(head)
            await writer.drain()
            async with asyncio.timeout(5):
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100 Continue")
            writer.write(body)
            [(status, _, answer)] = await _responses(reader, 1)
            assert status == 200 and json.loads(answer)["event"] == json.loads(body)
        finally:
            writer.close()
        # HTTP/1.0 without keep-alive: the answer says close, and the connection ends
        reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
        try:
            writer.write(_invoke("front-echo", b'{"v": 10}', version=b"1.0"))
            [(status, headers, answer)] = await _responses(reader, 1)
            assert status == 200 and json.loads(answer)["event"] == {"v": 10}
            assert headers.get("connection") == "close"
            async with asyncio.timeout(5):
                assert await reader.read() == b""
        finally:
            writer.close()


@pytest.mark.asyncio
async def test_an_idle_connection_is_closed_after_the_keepalive_timeout(redis_url):
    async with gateway(redis_url, keepalive_timeout=1.0) as client:
        reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
        try:
            writer.write(_invoke("nope", b"{}"))
            [(status, _, _)] = await _responses(reader, 1)
            assert status == 404
            t0 = time.monotonic()
            async with asyncio.timeout(10):
                assert await reader.read() == b""
            assert 0.8 < time.monotonic() - t0 < 5
        finally:
            writer.close()


@pytest.mark.asyncio
async def test_a_malformed_chunked_body_is_a_json_400(redis_url, redis_client, runtimes):
    await _echo(redis_client, runtimes)
    async with gateway(redis_url) as client:
        reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
        try:
            writer.write(b"POST /v1/invoke/front-echo HTTP/1.1\r\nHost: t\r\n" + BEARER +
                         b"Transfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\nzz\r\n")
            [(status, headers, body)] = await _responses(reader, 1)
        finally:
            writer.close()
    assert status == 400 and headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"] == {"code": "bad_request", "message": "malformed body framing"}


@pytest.mark.asyncio
async def test_an_invocation_with_a_query_string_and_a_chunked_body_reaches_the_function(redis_url, redis_client,
                                                                                         runtimes):
    await _echo(redis_client, runtimes)
    async with gateway(redis_url) as client:
        async def chunks():
            yield b'{"parts": '
            yield b'[1, 2, 3]}'
        resp = await client.post("/v1/invoke/front-echo?x=1", data=chunks(), headers={**AUTH, "Content-Type": "application/json"})
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["event"] == {"parts": [1, 2, 3]}


@pytest.mark.asyncio
async def test_a_client_still_sending_a_refused_body_reads_the_answer_not_a_reset(redis_url, redis_client, runtimes):
    """urllib sends Connection: close and the whole body before it reads: the front keeps
    reading (and dropping) the body after its 413, then closes."""
    import urllib.error
    import urllib.request

    await _echo(redis_client, runtimes)
    async with gateway(redis_url, max_body=2**20) as client:
        def call() -> tuple[int, bytes]:
            req = urllib.request.Request(f"http://127.0.0.1:{client.server.port}/v1/invoke/front-echo",
                                         data=b"x" * (7 * 2**20), headers=dict(AUTH))
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    return resp.status, resp.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()
        status, body = await asyncio.to_thread(call)
    assert status == 413
    assert json.loads(body)["error"]["code"] == "too_large"

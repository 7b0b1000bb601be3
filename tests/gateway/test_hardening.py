"""Hostile input at the gateway's front door: slow request heads, malformed requests,
key guessing, the admin API's rate and /metrics without a key.  The gateway runs through
``serve`` (the server ``gantry up`` and ``gantry gateway`` run) on a loopback port against
the real Redis; every loop is bounded in count and time."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager

import aiohttp
import pytest

from gantry.gateway.app import serve
from gantry.gateway.settings import GatewaySettings

from .support import ADMIN_HASH, AUTH, gateway


@asynccontextmanager
async def running_gateway(redis_url: str, **overrides):
    """``serve`` on a free loopback port; yields the base URL's port."""
    values = dict(redis_url=redis_url, admin_key_hash=ADMIN_HASH, host="127.0.0.1", port=0)
    values.update(overrides)
    stop = asyncio.Event()
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(GatewaySettings(**values), stop, started.set_result))
    try:
        port = await asyncio.wait_for(asyncio.shield(started), 10)
        yield port
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` on a new connection; everything the server answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


# -- slow request heads ----------------------------------------------------------------------

SLOW_CONNECTIONS = 50
HEADER_TIMEOUT = 1.5


async def _slowloris(port: int, until: float, closed: dict[int, float], i: int, t0: float) -> None:
    """Open a connection, send a request line and part of a header, then one more header byte
    every 0.3 s, never finishing the head; note when the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        while time.monotonic() < until:
            try:
                writer.write(b"a")
                await writer.drain()
                if await asyncio.wait_for(reader.read(4096), 0.3) == b"":
                    closed[i] = time.monotonic() - t0
                    return
            except asyncio.TimeoutError:
                continue
            except OSError:
                closed[i] = time.monotonic() - t0
                return
    finally:
        writer.close()


@pytest.mark.asyncio
async def test_slow_request_heads_are_closed_and_others_still_served(redis_url):
    async with running_gateway(redis_url, header_timeout=HEADER_TIMEOUT) as port:
        t0 = time.monotonic()
        closed: dict[int, float] = {}
        slow = [asyncio.create_task(_slowloris(port, t0 + HEADER_TIMEOUT + 4, closed, i, t0))
                for i in range(SLOW_CONNECTIONS)]
        await asyncio.sleep(0.5)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
            await asyncio.gather(*slow)
            assert len(closed) == SLOW_CONNECTIONS, f"{SLOW_CONNECTIONS - len(closed)} slow heads still held"
            assert max(closed.values()) < HEADER_TIMEOUT + 2.5, closed

            # a kept-alive connection may idle longer than the head timeout between requests
            async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
            await asyncio.sleep(HEADER_TIMEOUT + 0.5)
            async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200


def test_header_timeout_and_keepalive_settings():
    s = GatewaySettings.from_env({"GANTRY_HEADER_TIMEOUT": "3s", "GANTRY_KEEPALIVE_TIMEOUT": "1m"})
    assert (s.header_timeout, s.keepalive_timeout) == (3.0, 60.0)
    assert GatewaySettings.from_env({}).header_timeout == 10.0


# -- malformed requests ----------------------------------------------------------------------

MALFORMED = {
    "request line": b"GE<T /x<script> HTTP/1.1\r\nHost: x\r\n\r\n",
    "header": b"GET /healthz HTTP/1.1\r\nHo\x01st: <script>\r\n\r\n",
    "huge header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"<script>" * 4000 + b"\r\n\r\n",
}


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", sorted(MALFORMED))
async def test_malformed_requests_get_a_json_400_and_one_log_line(redis_url, caplog, kind):
    caplog.set_level(logging.DEBUG)
    async with running_gateway(redis_url) as port:
        caplog.clear()
        status, headers, body = split_response(await raw_exchange(port, MALFORMED[kind]))
        await asyncio.sleep(0.1)
        records = [r for r in caplog.records if "request" in r.getMessage() and r.levelno >= logging.INFO]
        text = caplog.text
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert error["code"] == "bad_request" and error["message"].startswith(("malformed", "request line"))
    assert b"script" not in body and b"GE<T" not in body
    assert "Traceback" not in text
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].exc_info is None


# -- key guessing and the admin API's rate ----------------------------------------------------

def _bound(burst: float, rate: float, elapsed: float) -> int:
    """The most a GCRA limit admits in ``elapsed`` seconds from a full bucket (+1 for the edge)."""
    return int(burst + rate * elapsed) + 1


@pytest.mark.asyncio
async def test_wrong_keys_are_rate_limited_per_address(redis_url):
    async with gateway(redis_url, auth_failure_rate=2.0, auth_failure_burst=5.0) as client:
        statuses: dict[int, int] = {}
        t0 = time.monotonic()
        for i in range(300):
            resp = await client.get("/v1/functions", headers={"Authorization": f"Bearer gk_guess_{i}"})
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
            if resp.status == 429:
                assert int(resp.headers["Retry-After"]) >= 1
                assert (await resp.json())["error"]["code"] == "rate_limited"
            if time.monotonic() - t0 > 3:
                break
        elapsed = time.monotonic() - t0
        assert set(statuses) == {401, 429}, statuses
        assert statuses[401] <= _bound(5, 2, elapsed), (statuses, elapsed)
        # while the address is held even the right key is refused: no oracle for guesses
        assert (await client.get("/v1/functions", headers=AUTH)).status == 429
        assert (await client.get("/healthz")).status == 200
        await asyncio.sleep(0.6)     # one failure's worth refills at 2/s
        assert (await client.get("/v1/functions", headers=AUTH)).status == 200


@pytest.mark.asyncio
async def test_admin_api_calls_are_rate_limited_per_key(redis_url):
    async with gateway(redis_url, admin_rate_limit=5.0, admin_rate_burst=10.0) as client:
        statuses: dict[int, int] = {}
        t0 = time.monotonic()
        for _ in range(200):
            resp = await client.get("/v1/nodes", headers=AUTH)
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
            if resp.status == 429:
                assert int(resp.headers["Retry-After"]) >= 1
            if time.monotonic() - t0 > 3:
                break
        elapsed = time.monotonic() - t0
        assert set(statuses) == {200, 429}, statuses
        assert 10 <= statuses[200] <= _bound(10, 5, elapsed), (statuses, elapsed)


@pytest.mark.asyncio
async def test_metrics_needs_the_admin_key_unless_public(redis_url):
    async with gateway(redis_url, metrics_public=False) as client:
        assert (await client.get("/metrics")).status == 401
        assert (await client.get("/metrics", headers={"Authorization": "Bearer gk_wrong"})).status == 401
        resp = await client.get("/metrics", headers=AUTH)
        assert resp.status == 200 and "gantry_gateway_requests_total" in await resp.text()
    async with gateway(redis_url, metrics_public=True) as client:
        assert (await client.get("/metrics")).status == 200


def test_security_settings_from_the_environment():
    s = GatewaySettings.from_env({"GANTRY_METRICS_PUBLIC": "1", "GANTRY_AUTH_FAILURE_RATE": "0.5",
                                  "GANTRY_AUTH_FAILURE_BURST": "3", "GANTRY_ADMIN_RATE_LIMIT": "7",
                                  "GANTRY_ADMIN_RATE_BURST": "9"})
    assert (s.metrics_public, s.auth_failure_rate, s.auth_failure_burst) == (True, 0.5, 3.0)
    assert (s.admin_rate_limit, s.admin_rate_burst) == (7.0, 9.0)
    d = GatewaySettings.from_env({})
    assert (d.metrics_public, d.auth_failure_rate, d.admin_rate_limit) == (False, 1.0, 100.0)
    assert GatewaySettings.from_env({"GANTRY_METRICS_PUBLIC": "no"}).metrics_public is False

"""Invocations through the gateway to real runtime processes (and small fake upstreams)."""
from __future__ import annotations

import asyncio
import json
import re
import time

import aiohttp
import pytest
from aiohttp import web

from gantry import keys, state
from gantry.store import Store

from gantry_runtime import wire

from .support import AUTH, INSTANCE_KEY, add_instance, free_port, gateway, instance_record, register_function

pytestmark = pytest.mark.timeout(60)


async def test_invoke_json_through_the_gateway(redis_url, redis_client, runtimes):
    rt = runtimes.get("main:echo")
    register_function(redis_client, "echo")
    add_instance(redis_client, "echo", rt.port)

    async with gateway(redis_url, gateway_id="gw-load") as client:
        resp = await client.post("/v1/invoke/echo", json={"hello": "world"}, headers=AUTH)
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "application/json"
        body = await resp.json()
        assert body["event"] == {"hello": "world"}
        inv = resp.headers["X-Gantry-Invocation-Id"]
        assert body["invocation_id"] == inv and len(inv) == 32
        assert "X-Gantry-Duration-Ms" in resp.headers
        resp = await client.post("/v1/invoke/echo", json=[1, 2], headers=AUTH)
        assert resp.status == 200 and (await resp.json())["event"] == [1, 2]
        metrics = await (await client.get("/metrics")).text()
        assert 'gantry_gateway_requests_total{function="echo",status="200"} 2' in metrics
        # the periodic load report: nothing in flight or waiting now, and when the last request came
        async with asyncio.timeout(3):
            while True:
                raw = redis_client.hget(keys.function_load("echo"), "gw-load")
                if raw:
                    inflight, waiting, last_request, reported = state.unpack(raw)
                    if last_request > 0:
                        break
                await asyncio.sleep(0.05)
        assert (inflight, waiting) == (0, 0) and last_request <= reported <= time.time()


async def test_stream_first_chunk_arrives_before_the_handler_finishes(redis_url, redis_client, runtimes):
    rt = runtimes.get("main:agen")
    register_function(redis_client, "agen")
    add_instance(redis_client, "agen", rt.port)

    async with gateway(redis_url) as client:
        t0 = time.monotonic()
        resp = await client.post("/v1/invoke/agen", json={"n": 3, "every": 0.4}, headers=AUTH)
        assert resp.status == 200
        assert resp.headers["X-Gantry-Stream"] == "1"
        assert resp.content_type == "application/x-ndjson"
        first = await resp.content.readline()
        t_first = time.monotonic() - t0
        rest = await resp.content.read()
        t_all = time.monotonic() - t0
        lines = [json.loads(x) for x in (first + rest).splitlines()]
        assert lines == [{"i": 0}, {"i": 1}, {"i": 2}]
        assert t_first < 0.75 < t_all, (t_first, t_all)   # the first item came ~0.4 s, the last ~1.2 s


async def test_handler_exception_is_500_function_error(redis_url, redis_client, runtimes):
    rt = runtimes.get("main:crash")
    register_function(redis_client, "crash")
    add_instance(redis_client, "crash", rt.port)

    async with gateway(redis_url) as client:
        resp = await client.post("/v1/invoke/crash", json={"fail": True}, headers=AUTH)
        assert resp.status == 500
        body = await resp.json()
        assert body["error"]["code"] == "function_error"
        assert body["error"]["message"] == "ValueError: boom"
        assert "Traceback" not in await resp.text()
        ok = await client.post("/v1/invoke/crash", json={}, headers=AUTH)
        assert ok.status == 200 and await ok.json() == {"ok": True}


async def test_cold_wait_signals_demand_and_succeeds_when_an_instance_turns_ready(redis_url, redis_client, aredis,
                                                                                  runtimes):
    rt = runtimes.get("main:echo")
    register_function(redis_client, "cold")

    r = aredis
    ps = r.pubsub(ignore_subscribe_messages=True)
    await ps.subscribe(keys.EVENTS)
    try:
        async with gateway(redis_url, gateway_id="gw-test", load_report_interval=5.0) as client:
            call = asyncio.create_task(client.post("/v1/invoke/cold", json={"x": 1}, headers=AUTH))
            # the demand hint comes at once
            demand = None
            async with asyncio.timeout(3):
                while demand is None:
                    msg = await ps.get_message(timeout=1.0)
                    if msg and msg["data"] == b"demand:cold":
                        demand = msg
            inflight, waiting, last_request, reported = state.unpack(
                await r.hget(keys.function_load("cold"), "gw-test"))
            assert (inflight, waiting) == (0, 1)
            assert abs(reported - time.time()) < 5 and last_request <= reported
            await asyncio.sleep(0.3)
            assert not call.done()
            # the worker's path: a record in "starting", then "ready" (announced as inst:cold)
            inst = instance_record("cold", rt.port, st=state.STARTING)
            await r.hset(keys.instance(inst.id), mapping=inst.to_hash())
            await r.sadd(keys.function_instances("cold"), inst.id)
            t_ready = time.monotonic()
            assert await Store(r).move_instance(inst.id, state.READY)
            resp = await call
            assert resp.status == 200 and (await resp.json())["event"] == {"x": 1}
            assert time.monotonic() - t_ready < 1.0
            metrics = await (await client.get("/metrics")).text()
            assert 'gantry_gateway_cold_waits_total{function="cold"} 1' in metrics
    finally:
        await ps.aclose()


async def test_instance_found_by_polling_without_an_event(redis_url, redis_client, runtimes):
    rt = runtimes.get("main:echo")
    register_function(redis_client, "quiet")

    async with gateway(redis_url) as client:
        call = asyncio.create_task(client.post("/v1/invoke/quiet", json={}, headers=AUTH))
        await asyncio.sleep(0.3)
        add_instance(redis_client, "quiet", rt.port)   # no pub/sub hint at all
        resp = await call
        assert resp.status == 200


async def test_no_instance_within_cold_start_timeout_is_503(redis_url, redis_client):
    register_function(redis_client, "never")

    async with gateway(redis_url, cold_start_timeout=0.5) as client:
        t0 = time.monotonic()
        resp = await client.post("/v1/invoke/never", json={}, headers=AUTH)
        assert 0.45 < time.monotonic() - t0 < 2.0
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "1"
        assert (await resp.json())["error"]["code"] == "no_capacity"


async def test_retry_on_draining_and_refused_instances_fails_no_request(redis_url, redis_client, runtimes):
    register_function(redis_client, "slow")
    draining = runtimes.start("main:slow", GANTRY_DRAIN_GRACE="10")
    healthy = runtimes.start("main:slow")
    draining.wait_ready()
    healthy.wait_ready()

    async with aiohttp.ClientSession() as direct:
        # a slow request in flight on one runtime (sent directly, so the gateway thinks it idle) ...
        slow = asyncio.create_task(direct.post(f"http://127.0.0.1:{draining.port}/invoke",
                                               json={"seconds": 1.5}, headers={wire.INSTANCE_KEY: INSTANCE_KEY}))
        await asyncio.sleep(0.2)
        draining.terminate()      # ... then SIGTERM: it drains, answering new requests 503 draining
        await asyncio.sleep(0.2)
        add_instance(redis_client, "slow", draining.port, inst_id="a-draining")
        add_instance(redis_client, "slow", healthy.port, inst_id="b-healthy")
        add_instance(redis_client, "slow", free_port(), inst_id="c-refused")   # nobody listens
        async with gateway(redis_url) as client:
            results = []
            for _ in range(4):
                resp = await client.post("/v1/invoke/slow", json={"seconds": 0}, headers=AUTH)
                results.append(resp.status)
            burst = await asyncio.gather(*[client.post("/v1/invoke/slow", json={"seconds": 0.1},
                                                       headers=AUTH) for _ in range(4)])
            results += [r.status for r in burst]
            assert results == [200] * 8
            metrics = await (await client.get("/metrics")).text()
            retries = re.search(r'gantry_gateway_retries_total\{function="slow"\} (\d+)', metrics)
            assert retries and int(retries.group(1)) >= 2   # the draining and the refused one
        done = await slow
        assert done.status == 200 and await done.json() == {"slept": 1.5}


async def test_upstream_breaking_mid_stream_aborts_the_client(redis_url, redis_client, fake_upstream):
    async def breaks(request):
        resp = web.StreamResponse(headers={"X-Gantry-Stream": "1"})
        resp.content_type = "text/plain"
        await resp.prepare(request)
        await resp.write(b"first\n")
        await asyncio.sleep(0.2)
        request.transport.close()     # dies mid-stream: no final chunk
        return resp

    upstream = await fake_upstream(breaks)
    register_function(redis_client, "broken")
    add_instance(redis_client, "broken", upstream.port)
    async with gateway(redis_url) as client:
        resp = await client.post("/v1/invoke/broken", json={}, headers=AUTH)
        assert resp.status == 200
        assert await resp.content.readline() == b"first\n"
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()


async def test_upstream_timeout_is_504_and_client_disconnect_cancels_upstream(redis_url, redis_client, fake_upstream):
    seen: list[str] = []

    async def hangs(request):
        assert request.headers["X-Gantry-Tenant"] == "default"
        assert len(request.headers["X-Gantry-Invocation-Id"]) == 32
        seen.append(request.headers["X-Gantry-Timeout"])
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        return web.json_response({})

    upstream = await fake_upstream(hangs)
    register_function(redis_client, "hang", limits={"timeout": "0.3s"})
    add_instance(redis_client, "hang", upstream.port)
    async with gateway(redis_url, upstream_timeout_margin=0.2) as client:
        t0 = time.monotonic()
        resp = await client.post("/v1/invoke/hang", json={}, headers=AUTH)
        assert resp.status == 504 and (await resp.json())["error"]["code"] == "timeout"
        assert 0.45 < time.monotonic() - t0 < 2
        assert seen[0] == "0.3"
        # the caller may lower the timeout, never raise it
        call = asyncio.create_task(client.post("/v1/invoke/hang", json={}, headers={
            **AUTH, "X-Gantry-Timeout": "99"}))
        await asyncio.sleep(0.15)
        call.cancel()            # the client goes away
        async with asyncio.timeout(2):
            while seen.count("cancelled") < 2:
                await asyncio.sleep(0.02)
        assert seen[2] == "0.3"

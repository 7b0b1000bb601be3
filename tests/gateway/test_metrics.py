"""Function and tenant metrics on a real gateway (loopback test server, real Redis, real
runtime processes): percentiles checked against the durations the test measured itself,
cold starts, async attempts and errors by code; the request path makes no Redis call for
them; the API's scopes and errors; the CLI; /metrics through prometheus_client; GANTRY_METRICS=0."""
from __future__ import annotations

import asyncio
import hashlib
import re
import time

import pytest

from gantry import keys, state
from gantry.cli import main as cli_main
from gantry.cli_metrics import format_metrics
from gantry.gateway.appkeys import METRICS
from gantry.gateway.metrics import FLUSHER
from gantry.metrics import histogram

from .support import AUTH, add_instance, gateway, instance_record, register_function
from .test_usage import ACME, ACME_INVOKE, ACME_KEY, _register_tenant_function, _tenant_keys

pytestmark = pytest.mark.timeout(120)

METRICS_ADD_SHA = hashlib.sha1(keys.METRICS_ADD.encode()).hexdigest()


async def _metrics(client, path: str, headers=AUTH, until=None, timeout: float = 10.0) -> dict:
    """GET PATH (200); with UNTIL, again until UNTIL(report) holds (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        resp = await client.get(path, headers=headers)
        assert resp.status == 200, await resp.text()
        report = await resp.json()
        if until is None or until(report) or time.monotonic() > deadline:
            return report
        await asyncio.sleep(0.1)


async def test_percentiles_match_the_durations_the_client_measured(redis_url, redis_client, runtimes):
    slow = runtimes.get("main:slow")
    register_function(redis_client, "slow")
    add_instance(redis_client, "slow", slow.port)
    register_function(redis_client, "warmup")     # on the same runtime (main:slow), counted apart
    add_instance(redis_client, "warmup", slow.port)
    sleeps = [0.05] * 10 + [0.12] * 6 + [0.25] * 3 + [0.5]
    measured = []
    async with gateway(redis_url, metrics_flush_interval=0.2) as client:
        # open the client's and the gateway's connections first: a first call's connects are
        # in the client's time only
        assert (await client.post("/v1/invoke/warmup", json={"seconds": 0}, headers=AUTH)).status == 200
        for seconds in sleeps:
            t0 = time.monotonic()
            resp = await client.post("/v1/invoke/slow", json={"seconds": seconds}, headers=AUTH)
            await resp.read()
            measured.append(time.monotonic() - t0)
            assert resp.status == 200
        report = await _metrics(client, "/v1/functions/slow/metrics?range=1h",
                                until=lambda r: r["totals"]["invocations"] == len(sleeps))
        totals = report["totals"]
        assert totals["invocations"] == len(sleeps) and totals["errors"] == 0 and totals["throttles"] == 0
        for q in ("p50", "p95", "p99"):
            exact = histogram.nearest_rank(measured, int(q[1:]) / 100)
            got = totals["duration"][q]
            # the gateway's clock starts after the client's and stops before it: within one bucket
            assert abs(histogram.index(got) - histogram.index(exact)) <= 1, (q, got, exact, measured)
        # no duration is below its sleep (upper bounds would depend on this machine's load)
        d = totals["duration"]
        assert 0.05 / 1.05 < d["p50"] and 0.12 / 1.05 < d["p95"] and 0.5 / 1.05 < d["p99"]
        # each gateway duration lies between the handler's sleep and what the client measured
        assert sum(sleeps) / len(sleeps) <= totals["duration"]["avg"] <= sum(measured) / len(measured)
        assert totals["instances_peak"] == 1 and totals["inflight_peak"] <= 1
        # every point is a minute; the one (or two) with traffic hold all of it
        assert report["step"] == 60 and len(report["series"]) == 60
        assert sum(p["invocations"] for p in report["series"]) == len(sleeps)
        # the tenant's view sums its functions (slow and the warm-up call)
        tenant = await _metrics(client, "/v1/tenants/default/metrics?range=15m")
        assert tenant["totals"]["invocations"] == len(sleeps) + 1 and tenant["tenant"] == "default"
        assert tenant["totals"]["duration"]["p99"] == totals["duration"]["p99"]

        prom = await (await client.get("/metrics")).text()
        count = re.search(r'gantry_gateway_request_duration_seconds_count\{function="slow"\} (\S+)', prom)
        assert count and float(count.group(1)) == len(sleeps), prom
        fwd = re.search(r'gantry_gateway_forward_duration_seconds_bucket\{function="slow",le="0.05"\} (\S+)', prom)
        assert fwd and float(fwd.group(1)) == 0           # no forward is shorter than its sleep
        assert f'gantry_gateway_forward_duration_seconds_count{{function="slow"}} {len(sleeps)}.0' in prom
        assert 'gantry_gateway_requests_total{function="slow",status="200"} 20.0' in prom

        text = format_metrics(report)
        assert "function slow (tenant default), last 1h, per 1m" in text and "invocations 20" in text
        url = str(client.make_url("")).rstrip("/")
        code = await asyncio.to_thread(cli_main, ["metrics", "slow", "--url", url, "--api-key",
                                                  "gk_test_" + "5" * 32, "--range", "2h"])
        assert code == 0


async def test_cold_starts_async_attempts_and_errors_by_code(redis_url, redis_client, aredis, runtimes):
    echo, crash = runtimes.get("main:echo"), runtimes.get("main:crash")
    register_function(redis_client, "cold")
    register_function(redis_client, "crash")
    add_instance(redis_client, "crash", crash.port)
    register_function(redis_client, "never")           # no instance ever: 503 no_capacity
    async with gateway(redis_url, metrics_flush_interval=0.2, cold_start_timeout=1.0) as client:
        t0 = time.monotonic()
        call = asyncio.create_task(client.post("/v1/invoke/cold", json={"x": 1}, headers=AUTH))
        await asyncio.sleep(0.3)
        inst = instance_record("cold", echo.port)
        await aredis.hset(keys.instance(inst.id), mapping=inst.to_hash())
        await aredis.sadd(keys.function_instances("cold"), inst.id)
        await aredis.publish(keys.EVENTS, "inst:cold")
        resp = await call
        waited = time.monotonic() - t0
        assert resp.status == 200
        # an async invocation: one attempt, by the dispatcher
        resp = await client.post("/v1/invoke/cold/async", json={"x": 2}, headers=AUTH)
        assert resp.status == 202, await resp.text()
        inv_id = (await resp.json())["id"]
        for _ in range(100):
            if (await (await client.get(f"/v1/invocations/{inv_id}", headers=AUTH)).json())["state"] == "succeeded":
                break
            await asyncio.sleep(0.1)
        cold = await _metrics(client, "/v1/functions/cold/metrics",
                              until=lambda r: r["totals"]["invocations"] == 2)
        t = cold["totals"]
        assert (t["invocations"], t["async_attempts"], t["cold_starts"]) == (2, 1, 1)
        assert 0.25 < t["cold_wait_avg"] <= waited

        assert (await client.post("/v1/invoke/crash", json={"fail": True}, headers=AUTH)).status == 500
        assert (await client.post("/v1/invoke/crash", json={}, headers=AUTH)).status == 200
        assert (await client.post("/v1/invoke/never", json={}, headers=AUTH)).status == 503
        crashed = await _metrics(client, "/v1/functions/crash/metrics", until=lambda r: r["totals"]["invocations"] == 2)
        assert crashed["totals"]["errors_by_code"] == {"500": 1} and crashed["totals"]["errors"] == 1
        never = await _metrics(client, "/v1/functions/never/metrics", until=lambda r: r["totals"]["invocations"] == 1)
        assert never["totals"]["errors_by_code"] == {"no_capacity": 1} and never["totals"]["cold_starts"] == 1
        everyone = await _metrics(client, "/v1/tenants/default/metrics",
                                  until=lambda r: r["totals"]["invocations"] == 5)
        assert everyone["totals"]["errors_by_code"] == {"500": 1, "no_capacity": 1}
        assert everyone["totals"]["cold_starts"] == 2
        prom = await (await client.get("/metrics")).text()
        assert 'gantry_gateway_cold_start_wait_seconds_count{function="cold"} 1.0' in prom


async def test_the_request_path_makes_no_redis_call_for_metrics(redis_url, redis_client, aredis, new_aredis, runtimes):
    echo = runtimes.get("main:echo")
    register_function(redis_client, "echo")
    add_instance(redis_client, "echo", echo.port)
    seen: list[str] = []
    async with gateway(redis_url, metrics_flush_interval=3600) as client:
        app = client.server.app
        monitor = new_aredis().monitor()
        await monitor.connect()
        await monitor.connection.send_command("MONITOR")
        assert (await monitor.connection.read_response()) in (b"OK", "OK")

        async def watch() -> None:
            while True:
                seen.append((await monitor.next_command())["command"])
        watcher = asyncio.create_task(watch())
        try:
            for _ in range(30):
                resp = await client.post("/v1/invoke/echo", json={"x": 1}, headers=AUTH)
                assert resp.status == 200
            await asyncio.sleep(0.3)           # let MONITOR deliver what the invokes sent
            during = list(seen)
            await app[FLUSHER]._iteration()    # the background flush: one script call
            deadline = time.monotonic() + 5
            while not any(METRICS_ADD_SHA in c for c in seen) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await monitor.connection.disconnect()
    assert during and not any("metrics" in c for c in during), [c for c in during if "metrics" in c]
    after = seen[len(during):]
    assert sum(METRICS_ADD_SHA in c for c in after) == 1
    hour = int(time.time() // 3600)
    stored = {**redis_client.hgetall(keys.metrics_function("echo", hour)),
              **redis_client.hgetall(keys.metrics_function("echo", hour - 1))}
    assert sum(int(v) for k, v in stored.items() if k.decode().endswith("|n")) == 30


async def test_scopes_errors_and_a_tenants_own_view(redis_url, redis_client, runtimes):
    echo = runtimes.get("main:echo")
    acme_echo = _register_tenant_function(redis_client, "acme", "echo")
    add_instance(redis_client, acme_echo, echo.port)
    register_function(redis_client, "echo")
    add_instance(redis_client, "echo", echo.port)
    async with gateway(redis_url, app_hook=_tenant_keys, metrics_flush_interval=0.2,
                       metrics_retention=86400.0) as client:
        for _ in range(3):
            assert (await client.post("/v1/invoke/echo", json={}, headers=ACME)).status == 200
        assert (await client.post("/v1/invoke/echo", json={}, headers=AUTH)).status == 200
        mine = await _metrics(client, "/v1/functions/echo/metrics", headers=ACME,
                              until=lambda r: r["totals"]["invocations"] == 3)
        assert mine["name"] == "echo" and mine["tenant"] == "acme" and mine["totals"]["invocations"] == 3
        admin_view = await _metrics(client, "/v1/functions/acme.echo/metrics")
        assert admin_view["totals"]["invocations"] == 3
        tenant = await _metrics(client, "/v1/tenants/acme/metrics", headers=ACME)
        assert tenant["totals"]["invocations"] == 3
        assert (await _metrics(client, "/v1/functions/echo/metrics", until=lambda r: r["totals"]["invocations"] == 1)
                )["totals"]["invocations"] == 1
        for path, headers, status in (
                ("/v1/tenants/default/metrics", ACME, 404),          # another tenant: not found
                ("/v1/functions/default.echo/metrics", ACME, 404),
                ("/v1/functions/nope/metrics", ACME, 404),            # not deployed
                ("/v1/functions/echo/metrics", ACME_INVOKE, 403),     # an invoke-only key
                ("/v1/tenants/acme/metrics", ACME_INVOKE, 403),
                ("/v1/functions/echo/metrics?range=30s", ACME, 400),
                ("/v1/functions/echo/metrics?range=2d", ACME, 400),   # beyond the retention
                ("/v1/functions/echo/metrics?range=1h&step=7m", ACME, 400)):
            resp = await client.get(path, headers=headers)
            assert resp.status == status, (path, await resp.text())
            assert "error" in await resp.json()
        bad = await (await client.get("/v1/functions/echo/metrics?range=2d", headers=ACME)).json()
        assert "GANTRY_METRICS_RETENTION" in bad["error"]["message"]
        url = str(client.make_url("")).rstrip("/")
        assert await asyncio.to_thread(cli_main, ["metrics", "--tenant", "acme", "--url", url,
                                                  "--api-key", ACME_KEY, "--json"]) == 0
        assert await asyncio.to_thread(cli_main, ["metrics", "--url", url, "--api-key", ACME_KEY]) == 1


async def test_recording_off_keeps_the_counters_only(redis_url, redis_client, runtimes):
    echo = runtimes.get("main:echo")
    register_function(redis_client, "echo")
    add_instance(redis_client, "echo", echo.port)
    async with gateway(redis_url, metrics=False, metrics_flush_interval=0.1) as client:
        for _ in range(3):
            assert (await client.post("/v1/invoke/echo", json={}, headers=AUTH)).status == 200
        assert client.server.app[METRICS].rows.rows == {}
        report = await _metrics(client, "/v1/functions/echo/metrics")
        assert report["recording"] is False and report["totals"]["invocations"] == 0
        prom = await (await client.get("/metrics")).text()
        assert 'gantry_gateway_requests_total{function="echo",status="200"} 3.0' in prom
        assert "gantry_gateway_request_duration_seconds_count" not in prom
    assert redis_client.keys("gantry:metrics:*") == []

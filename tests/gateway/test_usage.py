"""Usage metering and the usage and audit APIs on a real gateway (loopback test server, real
Redis, real runtime processes): exact counts for a known sequence of calls, two tenants with
a function of the same name kept apart, nothing written on the request path, the flush at
shutdown, a failed flush losing nothing, tenant keys confined to their own tenant."""
from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gantry import keys, state
from gantry.cli import main as cli_main
from gantry.cli_usage import format_audit, format_usage
from gantry.gateway import audit
from gantry.gateway.appkeys import PRINCIPAL, REDIS, SETTINGS
from gantry.gateway.auth import ADMIN
from gantry.settings import hash_key
from gantry.tenants.apikeys import ApiKey, key_id_of
from gantry.gateway.usage import METER, Meter, UsageFlusher
from gantry.manifest import FunctionSpec
from gantry.tenants.model import Scope, Tenant, tenant_to_hash
from gantry.usage.model import Prices, day_of
from gantry.usage.store import AuditStore, UsageStore

from .support import AUTH, add_instance, gateway, register_function, spec_dict

pytestmark = pytest.mark.timeout(90)

ACME_KEY, ACME_INVOKE_KEY = "gk_" + "a" * 12 + "_" + "1" * 43, "gk_" + "b" * 12 + "_" + "2" * 43
ACME = {"Authorization": f"Bearer {ACME_KEY}"}
ACME_INVOKE = {"Authorization": f"Bearer {ACME_INVOKE_KEY}"}


def _tenant_keys(app: web.Application) -> None:
    """Tenant acme and two real API keys of it (a tenant-admin and an invoke key), written to
    Redis as `gantry tenants create` and `gantry keys create` would."""
    import redis
    r = redis.Redis.from_url(app[SETTINGS].redis_url)
    r.hset(keys.tenant("acme"), mapping=tenant_to_hash(Tenant(id="acme", created=time.time())))
    r.sadd(keys.TENANTS, "acme")
    for key, scope in ((ACME_KEY, Scope.TENANT_ADMIN), (ACME_INVOKE_KEY, Scope.INVOKE)):
        record = ApiKey(id=key_id_of(key), tenant="acme", scope=scope, hash=hash_key(key), created=time.time())
        r.hset(keys.api_key(record.id), mapping=record.to_hash())
        r.sadd(keys.tenant_keys("acme"), record.id)
    r.close()


def _register_tenant_function(r, tenant: str, name: str) -> str:
    """A function of TENANT under its qualified name, as a namespaced deploy writes it."""
    spec = dataclasses.replace(FunctionSpec.from_dict(spec_dict(name)), tenant=tenant)
    q = spec.qualified
    r.hset(keys.function_version(q, 1), mapping={"image": "img:1", "spec": state.pack(spec.to_dict()),
                                                 "created": str(time.time())})
    r.hset(keys.function(q), mapping={"name": q, "latest": 1, "active": 1})
    r.sadd(keys.FUNCTIONS, q)
    return q


def _usage(r, tenant: str) -> dict[str, float]:
    raw = r.hgetall(keys.usage_day(tenant, day_of(time.time())))
    return {k.decode(): float(v) for k, v in raw.items()}


async def _calls(client, headers, name: str, n: int, body=None) -> list[int]:
    out = []
    for _ in range(n):
        resp = await client.post(f"/v1/invoke/{name}", json=body if body is not None else {"x": 1}, headers=headers)
        await resp.read()
        out.append(resp.status)
    return out


async def test_counts_are_exact_per_tenant_and_written_only_by_the_flush(redis_url, redis_client, runtimes):
    echo, crash = runtimes.get("main:echo"), runtimes.get("main:crash")
    register_function(redis_client, "echo")
    add_instance(redis_client, "echo", echo.port)
    register_function(redis_client, "crash")
    add_instance(redis_client, "crash", crash.port)
    acme_echo = _register_tenant_function(redis_client, "acme", "echo")
    add_instance(redis_client, acme_echo, echo.port)

    # each key may make 5 calls, then 429 (the limit refills one call in 1000 s); the flush
    # interval is far beyond the test: only the shutdown flush writes
    async with gateway(redis_url, app_hook=_tenant_keys, rate_limit=0.001, rate_burst=5,
                       usage_flush_interval=3600) as client:
        assert await _calls(client, AUTH, "echo", 2) == [200, 200]
        assert await _calls(client, AUTH, "crash", 1, {"fail": True}) == [500]
        assert await _calls(client, AUTH, "crash", 1) == [200]
        assert await _calls(client, AUTH, "nope", 1) == [404]          # not deployed: counts nowhere
        assert await _calls(client, AUTH, "echo", 2) == [429, 429]     # throttled
        assert await _calls(client, AUTH, "Bad_Name", 1) == [429]      # no function could have it
        assert await _calls(client, ACME, "echo", 6) == [200] * 5 + [429]
        # the request path wrote nothing: every count is still in the gateway's memory
        assert redis_client.keys(keys.usage_day("*", "*")) == []
        meter = client.server.app[METER]
        assert meter.counts[("default", "echo")][:3] == [2, 0, 2]
    default, acme = _usage(redis_client, "default"), _usage(redis_client, "acme")   # the shutdown flush
    assert {k: v for k, v in default.items() if not k.endswith("duration_seconds")} == {
        "echo|invocations": 2, "echo|throttles": 2, "crash|invocations": 2, "crash|errors": 1}
    assert {k: v for k, v in acme.items() if not k.endswith("duration_seconds")} == {
        "echo|invocations": 5, "echo|throttles": 1}
    assert 0 < default["echo|duration_seconds"] < 10 and 0 < acme["echo|duration_seconds"] < 10


async def test_the_periodic_flush_and_the_usage_api(redis_url, redis_client, runtimes):
    echo = runtimes.get("main:echo")
    register_function(redis_client, "echo")
    add_instance(redis_client, "echo", echo.port)
    acme_echo = _register_tenant_function(redis_client, "acme", "echo")
    add_instance(redis_client, acme_echo, echo.port)
    now = time.time()
    # the scheduler's share: 0.5 cores and 1 GiB for 100 s of acme's echo, today
    redis_client.hset(keys.usage_day("acme", day_of(now)),
                      mapping={"echo|cpu_seconds": "50", "echo|memory_gib_seconds": "100"})
    prices = Prices(cpu_second=0.01, memory_gib_second=0.001, million_invocations=1e6, currency="USD")
    async with gateway(redis_url, app_hook=_tenant_keys, usage_flush_interval=0.2, prices=prices) as client:
        assert await _calls(client, ACME, "echo", 3) == [200] * 3
        assert await _calls(client, AUTH, "echo", 1) == [200]
        deadline = time.monotonic() + 5
        while _usage(redis_client, "acme").get("echo|invocations") != 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert _usage(redis_client, "acme")["echo|invocations"] == 3      # flushed while running

        resp = await client.get("/v1/usage", headers=ACME)
        assert resp.status == 200, await resp.text()
        report = await resp.json()
        assert report["tenant"] == "acme" and report["until"] == day_of(now)
        row = report["functions"]["echo"]
        assert (row["invocations"], row["errors"], row["throttles"], row["cpu_seconds"],
                row["memory_gib_seconds"], row["gpu_seconds"]) == (3, 0, 0, 50.0, 100.0, 0)
        assert report["totals"]["invocations"] == 3 and list(report["functions"]) == ["echo"]
        # 50 cpu-s x 0.01 + 100 GiB-s x 0.001 + 3 invocations x 1 (a million cost a million)
        cost = report["cost"]
        assert cost["period"] == pytest.approx(3.6) and cost["month_to_date"] == pytest.approx(3.6)
        assert cost["monthly_estimate"] >= cost["month_to_date"] and cost["currency"] == "USD"
        assert "cost of this period:   3.6000 USD" in format_usage(report)

        same = await (await client.get("/v1/tenants/acme/usage?since=1d", headers=ACME)).json()
        assert same["functions"] == report["functions"] and same["since"] == same["until"] == day_of(now)
        assert (await (await client.get("/v1/tenants/acme/usage", headers=AUTH)).json())["totals"]["invocations"] == 3
        mine = await (await client.get("/v1/usage", headers=AUTH)).json()
        assert mine["tenant"] == "default" and mine["functions"]["echo"]["invocations"] == 1
        admin_view = await (await client.get("/v1/usage?tenant=acme", headers=AUTH)).json()
        assert admin_view["functions"] == report["functions"]

        # another tenant's usage is not found, not forbidden; a key without the usage scope is 403
        for path in ("/v1/tenants/default/usage", "/v1/usage?tenant=default", "/v1/tenants/Nope!/usage"):
            resp = await client.get(path, headers=ACME)
            assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found", path
        assert (await client.get("/v1/usage", headers=ACME_INVOKE)).status == 403
        for query in ("since=yesterday", "since=2025-03-05&until=2025-03-01", "until=5d5"):
            resp = await client.get(f"/v1/usage?{query}", headers=ACME)
            assert resp.status == 400, query
            assert (await resp.json())["error"]["message"].split(":")[0] in ("since", "until")

        # the CLI prints the same report (its HTTP client is synchronous: run in a thread)
        url = str(client.make_url("")).rstrip("/")
        code = await asyncio.to_thread(cli_main, ["usage", "--url", url, "--api-key", ACME_KEY, "--since", "1d"])
        assert code == 0


def test_throttles_of_made_up_names_take_bounded_rows(monkeypatch):
    from gantry.gateway import usage
    monkeypatch.setattr(usage, "MAX_ROWS", 3)
    meter = Meter()
    meter.observe("t", "real", True, 200, 0.1)
    for i in range(10):
        meter.observe("t", f"made-up-{i}", False, 429, 0.0)
    meter.observe("t", "real", True, 429, 0.0)                  # a row it has: counted there
    assert meter.counts == {("t", "real"): [1, 0, 1, 0.1], ("t", "made-up-0"): [0, 0, 1, 0.0],
                            ("t", "made-up-1"): [0, 0, 1, 0.0], ("t", "_other"): [0, 0, 8, 0.0]}


async def test_a_failed_flush_keeps_its_counts(redis_url, aredis):
    meter = Meter()
    meter.observe("acme", "fn", True, 200, 0.5)
    meter.observe("acme", "fn", True, 502, 0.25)
    meter.observe("acme", "fn", False, 429, 0.0)
    gone = aioredis.from_url("redis://127.0.0.1:1/0")     # nothing listens there
    try:
        with pytest.raises(Exception):
            await UsageFlusher(meter, UsageStore(gone))._iteration()
    finally:
        await gone.aclose()
    meter.observe("acme", "fn", True, 200, 0.25)
    await UsageFlusher(meter, UsageStore(aredis))._iteration()
    raw = await aredis.hgetall(keys.usage_day("acme", day_of(time.time())))
    assert {k.decode(): float(v) for k, v in raw.items()} == {
        "fn|invocations": 3, "fn|errors": 1, "fn|throttles": 1, "fn|duration_seconds": 1.0}
    assert meter.counts == {}


async def test_deploy_scale_delete_are_audited_and_tenants_see_only_their_own(redis_url, redis_client):
    async with gateway(redis_url, app_hook=_tenant_keys) as client:
        t0 = time.time()
        resp = await client.post("/v1/functions", json={"spec": spec_dict("audited"), "image": "img:a"}, headers=AUTH)
        assert resp.status == 201
        assert (await client.post("/v1/functions/audited/scale", json={"min_instances": 2}, headers=AUTH)).status == 200
        assert (await client.delete("/v1/functions/audited", headers=AUTH)).status == 200
        assert (await client.delete("/v1/functions/audited", headers=AUTH)).status == 404   # failed: not audited
        t1 = time.time()
        await AuditStore(client.server.app[REDIS]).append(time_=t1, actor="a" * 12, tenant="acme",
                                                          action="key.create", target="k-9", detail={})

        page = await (await client.get("/v1/audit", headers=AUTH)).json()
        entries = page["entries"]
        assert [(e["action"], e["target"], e["actor"], e["tenant"]) for e in entries] == [
            ("function.deploy", "audited", "admin", "default"), ("function.scale", "audited", "admin", "default"),
            ("function.delete", "audited", "admin", "default"), ("key.create", "k-9", "a" * 12, "acme")]
        assert entries[0]["detail"] == {"version": 1, "image": "img:a"}
        assert entries[1]["detail"] == {"min_instances": 2}
        assert all(t0 <= e["time"] <= t1 for e in entries[:3])
        assert page["cursor"] == entries[-1]["id"]
        assert "function.scale" in format_audit(entries)

        only_acme = await (await client.get("/v1/audit", headers=ACME)).json()
        assert [e["action"] for e in only_acme["entries"]] == ["key.create"]
        assert [e["tenant"] for e in (await (await client.get("/v1/audit?tenant=acme", headers=AUTH)).json())[
            "entries"]] == ["acme"]
        resp = await client.get("/v1/audit?tenant=default", headers=ACME)
        assert resp.status == 404
        assert (await client.get("/v1/audit", headers=ACME_INVOKE)).status == 403
        after = await (await client.get(f"/v1/audit?after={entries[1]['id']}&limit=1", headers=AUTH)).json()
        assert [e["action"] for e in after["entries"]] == ["function.delete"]
        for query in ("limit=0", "limit=1001", "after=x"):
            assert (await client.get(f"/v1/audit?{query}", headers=AUTH)).status == 400, query


async def test_an_audit_write_that_fails_never_fails_the_action():
    app = web.Application()
    app[REDIS] = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)   # nothing listens
    request = make_mocked_request("POST", "/v1/functions", app=app)
    request[PRINCIPAL] = ADMIN
    try:
        assert await audit.record(request, "function.deploy", "x", version=1) is None
    finally:
        await app[REDIS].aclose()
